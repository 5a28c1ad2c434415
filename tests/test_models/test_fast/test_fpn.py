# Copyright (c) mmepsa contributors. All rights reserved.
"""ChannelsLastFPN computes what mmdet's FPN computes, with the same
parameters, runs channels-last where it says so, and hands the heads
contiguous NCHW features: mmcv's CPU RoIAlign, which reads NCHW memory,
gives the same RoI features as on mmdet's FPN."""
import pytest
import torch
from mmcv.ops import RoIAlign
from mmdet.models.necks import FPN
from mmdet.registry import MODELS

import mmepsa  # noqa: F401  (registers the models)
from mmepsa.models import ChannelsLastFPN, EPSANet
from mmepsa.models.fast import fast_path
from mmepsa.models.fast.switch import measured_win
from tests.utils import TINY_BACKBONE as TINY

CL = torch.channels_last
IN_CHANNELS = [64, 128, 256, 512]  # TINY's stage widths
SHAPES = [(2, c, 40 // 2**i, 28 // 2**i) for i, c in enumerate(IN_CHANNELS)]
# mmdet's Mask R-CNN / Faster R-CNN neck, and its RetinaNet one
NECKS = {
    'rcnn': dict(num_outs=5),
    'retinanet': dict(start_level=1, add_extra_convs='on_input', num_outs=5),
}


def fpn_pair(neck: str, dtype=torch.float32, **kwargs):
    """ChannelsLastFPN and mmdet's FPN holding the same random weights."""
    cfg = dict(in_channels=IN_CHANNELS, out_channels=32, **NECKS[neck])
    torch.manual_seed(0)
    ours = ChannelsLastFPN(**cfg, **kwargs)
    for p in ours.parameters():  # conv biases start at zero
        torch.nn.init.normal_(p, std=0.1)
    theirs = FPN(**cfg)
    theirs.load_state_dict(ours.state_dict())
    return ours.to(dtype), theirs.to(dtype)


def inputs(memory_format, dtype=torch.float32):
    torch.manual_seed(1)
    return [
        torch.randn(s, dtype=dtype).contiguous(
            memory_format=memory_format).requires_grad_() for s in SHAPES
    ]


@pytest.mark.parametrize('neck', NECKS)
@pytest.mark.parametrize('memory_format', [CL, torch.contiguous_format])
@pytest.mark.parametrize('channels_last', [None, True, False])
def test_same_outputs_and_gradients_as_mmdet_fpn(neck, memory_format,
                                                 channels_last):
    """float64, so that the comparison is tight (float32 sums of this many
    terms differ by rounding between the two memory formats' algorithms);
    the float32 path: test_roi_features_as_on_mmdet_fpn."""
    f64 = torch.float64
    ours, theirs = fpn_pair(neck, f64, channels_last=channels_last)
    x, ref_x = inputs(memory_format, f64), inputs(torch.contiguous_format, f64)
    outs, ref_outs = ours(x), theirs(ref_x)
    assert len(outs) == len(ref_outs) == 5
    for a, b in zip(outs, ref_outs):
        assert a.is_contiguous()  # whatever the inputs and the run
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    g = torch.Generator().manual_seed(2)
    weights = [torch.randn(o.shape, generator=g, dtype=f64) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    sum((o * w).sum() for o, w in zip(ref_outs, weights)).backward()
    for a, b in zip(x, ref_x):
        if b.grad is None:  # RetinaNet's FPN leaves the first level unused
            assert a.grad is None
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(
            p.grad, q.grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize('channels_last,expected',
                         [(None, measured_win(torch.device('cpu'))),
                          (True, True), (False, False)])
def test_runs_in_the_memory_format_it_says(channels_last, expected):
    ours, _ = fpn_pair('rcnn', channels_last=channels_last)
    seen = []
    ours.fpn_convs[0].register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=CL) and
                                    not args[0].is_contiguous()))
    with torch.no_grad():
        ours(inputs(torch.contiguous_format))
        ours(inputs(CL))
    assert seen == [expected, expected]
    # the fast path off: mmdet's FPN as it is
    seen.clear()
    with torch.no_grad(), fast_path(False):
        ours(inputs(torch.contiguous_format))
    assert seen == [False]


def test_roi_features_as_on_mmdet_fpn():
    """The detection configs' path (EPSANet with channels-last outputs into
    ChannelsLastFPN) gives mmcv's CPU RoIAlign the RoI features of the NCHW
    path (contiguous outputs into mmdet's FPN). RoIAlign reads raw NCHW
    memory: a channels-last map would give other values."""
    torch.manual_seed(0)
    backbone = EPSANet(
        50,
        channels_last=True,
        contiguous_outputs=False,
        init_cfg=None,
        **TINY).eval()
    ours, theirs = fpn_pair('rcnn')
    x = torch.randn(2, 3, 160, 112)
    rois = torch.tensor([[0, 8., 4., 100., 150.], [1, 30., 20., 60., 90.]])
    roi_align = RoIAlign(7, spatial_scale=1 / 4, sampling_ratio=0)
    with torch.no_grad():
        feats = backbone(x)
        assert all(
            f.is_contiguous(memory_format=CL) and not f.is_contiguous()
            for f in feats)
        backbone.contiguous_outputs = True
        ref_feats = backbone(x)
        out = roi_align(ours(feats)[0], rois)
        ref = roi_align(theirs(ref_feats)[0], rois)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        # what the conversion guards against
        wrong = roi_align(
            theirs(ref_feats)[0].contiguous(memory_format=CL), rois)
        assert not torch.allclose(wrong, ref, rtol=1e-3, atol=1e-3)


def test_built_from_mmdet_registry_loads_fpn_checkpoints():
    """``neck=dict(type='ChannelsLastFPN', ...)`` in an mmdet config; an
    mmdet FPN's state dict loads strictly (same parameter names)."""
    cfg = dict(
        type='ChannelsLastFPN',
        in_channels=IN_CHANNELS,
        out_channels=32,
        num_outs=5)
    neck = MODELS.build(cfg)
    assert type(neck) is ChannelsLastFPN
    fpn = MODELS.build(dict(cfg, type='FPN'))
    neck.load_state_dict(fpn.state_dict(), strict=True)


@pytest.mark.parametrize('value', ['yes', 1])
def test_bad_channels_last(value):
    with pytest.raises(
            ValueError,
            match=r'ChannelsLastFPN: channels_last '
            r'must be None \(auto: on where measured to win\), '
            f'True or False, got {value!r}'):
        ChannelsLastFPN(
            in_channels=IN_CHANNELS,
            out_channels=32,
            num_outs=5,
            channels_last=value)
