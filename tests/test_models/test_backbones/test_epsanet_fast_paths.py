# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast paths compute what the authors' formulation computes: channels-
last execution, training gradients, BN folding for deploy, torch.compile,
ONNX export; and the side-by-side benchmark reports what it measured.
No timing is asserted: speed is measured by
``tools/analysis_tools/compare_speed.py`` (README, Performance; its tests:
test_tools/test_compare_speed.py)."""
import copy
import inspect
import io
import warnings

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmepsa.models import EPSANet
from mmepsa.testing import RefEPSANet, randomize_
from mmepsa.utils import deploy_model
from tests.utils import TINY_BACKBONE as TINY
from tests.utils import assert_train_step_equal

def original_and_ours(depth_layers=(3, 4, 6, 3), **kwargs):
    """The authors' classifier with random weights, and mmepsa's EPSANet-50
    holding the same weights."""
    ref = randomize_(RefEPSANet(depth_layers))
    ours = EPSANet(50, norm_eval=False, init_cfg=None, **kwargs)
    ours.load_state_dict({
        k: v
        for k, v in ref.state_dict().items() if not k.startswith('fc.')
    })
    return ref, ours


@pytest.mark.parametrize('channels_last', [None, True, False])
def test_channels_last_same_outputs_contiguous(channels_last):
    ref, ours = original_and_ours(channels_last=channels_last)
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 75, 61)
    with torch.no_grad():
        outs, theirs = ours(x), ref.stages(x)
    for a, b in zip(outs, theirs):
        # callers get NCHW-contiguous features whatever runs inside
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_channels_last_auto_follows_the_device():
    """auto (None) runs channels-last on CPU: the stem conv sees NHWC."""
    model = EPSANet(50, **TINY).eval()
    seen = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
        model.channels_last = False
        model(torch.rand(1, 3, 32, 32))
    assert seen == [True, False]


@pytest.mark.parametrize('value', ['yes', 1, 0.0])
def test_channels_last_bad_value(value):
    with pytest.raises(ValueError, match='channels_last must be None'):
        EPSANet(50, channels_last=value, **TINY)


@pytest.mark.parametrize('channels_last', [None, False])
def test_contiguous_outputs_false_keeps_the_memory_format(channels_last):
    """contiguous_outputs=False hands over the features in the format the
    network ran in (channels-last on CPU by default), equal bit for bit to
    the contiguous ones; gradients flow back through them alike."""
    torch.manual_seed(0)
    model = EPSANet(50, channels_last=channels_last, norm_eval=False,
                    **TINY).train()
    x = torch.randn(2, 3, 75, 61)
    ref_outs = model(x)
    sum(o.square().mean() for o in ref_outs).backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.contiguous_outputs = False
    outs = model(x)
    sum(o.square().mean() for o in outs).backward()
    for a, b in zip(outs, ref_outs):
        assert a.is_contiguous(memory_format=torch.channels_last if
                               channels_last is None else
                               torch.contiguous_format)
        assert torch.equal(a, b)
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('value', [None, 'no', 0])
def test_contiguous_outputs_bad_value(value):
    with pytest.raises(ValueError, match='contiguous_outputs must be True or '
                       f'False, got {value!r}'):
        EPSANet(50, contiguous_outputs=value, **TINY)


def test_training_step_same_gradients():
    """A training step (train-mode BN) of mmepsa and of the original give
    the same outputs and gradients (float64: see assert_train_step_equal)."""
    ref, ours = original_and_ours()
    checked = assert_train_step_equal(ref, ours,
                                      torch.randn(2, 3, 64, 64))
    assert checked == len(dict(ref.named_parameters())) - 2  # all but fc


def test_deploy_folds_conv_bn():
    """deploy_model (mmcv's fuse_conv_bn) folds every conv+BN pair of
    EPSANet (stem, 1x1 convs, shortcuts); only the BN after the PSA module
    stays, since the attention sits between it and the branch convs.
    Outputs unchanged."""
    _, ours = original_and_ours()
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ours(x)
        fused = deploy_model(copy.deepcopy(ours).train())
        assert not fused.training
        outs = fused(x)
    bns = [n for n, m in fused.named_modules() if isinstance(m, _BatchNorm)]
    assert bns and all(n.endswith('.bn2') for n in bns)
    assert len(bns) == sum(ours.stage_blocks)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# One stage of 3 blocks, the first strided (a PSA conv with stride 2 and a
# downsample shortcut), covers every operation of the backbone.
ONE_STAGE = dict(num_stages=1, strides=(2, ), dilations=(1, ),
                 out_indices=(0, ))


def test_compiled_forms_match_eager():
    """``torch.compile(fullgraph=True)`` (no graph break anywhere) and
    ``deploy_model(compile=True)`` (BN folded, inductor's weight freezing)
    give the eager outputs. One test, so that one process pays inductor's
    set-up (~20 s on torch 2.1) once."""
    model = EPSANet(50, **ONE_STAGE, norm_eval=False, **TINY)
    randomize_(model)  # non-trivial BN statistics to fold
    model.eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True)(x)
        deployed = deploy_model(copy.deepcopy(model), compile=True)(x)
    assert len(compiled) == len(deployed) == len(expected) == 1
    for outs in (compiled, deployed):
        for a, b in zip(outs, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_eager():
    ort = pytest.importorskip('onnxruntime')
    model = EPSANet(50, **TINY).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript exporter deprecation
        torch.onnx.export(
            model, (torch.randn(1, 3, 64, 64), ),
            f,
            # the TorchScript exporter (torch 2.1 has only it, no `dynamo`)
            **({'dynamo': False} if 'dynamo' in inspect.signature(
                torch.onnx.export).parameters else {}),
            opset_version=17,
            input_names=['input'],
            output_names=[f'stage{i + 1}' for i in range(4)],
            dynamic_axes={'input': {
                0: 'batch',
                2: 'height',
                3: 'width'
            }})
    session = ort.InferenceSession(
        f.getvalue(), providers=['CPUExecutionProvider'])
    x = torch.randn(2, 3, 96, 80)  # not the export shape
    outs = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert len(outs) == 4
    for a, b in zip(outs, expected):
        torch.testing.assert_close(
            torch.from_numpy(a), b, rtol=1e-4, atol=1e-4)
