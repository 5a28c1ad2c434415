# Copyright (c) mmepsa contributors. All rights reserved.
"""Bad input to the backbone gets a clear error, never a silent wrong
result: bad ``init_cfg``, wrong input shapes, inputs smaller than the
stride, through a detector too. (Bad arguments: the table in
test_epsanet.py; the README's "Troubleshooting" section lists the cases.)
"""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmepsa  # noqa: F401  (registers EPSANet)
from mmepsa.models import EPSANet
from tests.utils import TINY_BACKBONE as TINY


@pytest.mark.parametrize('init_cfg,error,match', [
    (dict(type='Pretrained'), FileNotFoundError,
     r"pretrained checkpoint '' not found \(init_cfg\.checkpoint"),
    (dict(type='Pretrianed', checkpoint='a.pth'), KeyError,
     r'Pretrianed is not in the mmengine::weight initializer registry'),
])
def test_bad_init_cfg_fails_at_init_weights(init_cfg, error, match):
    model = EPSANet(50, **TINY, init_cfg=init_cfg)
    with pytest.raises(error, match=match):
        model.init_weights()


# --------------------------------------------------------------------------
# 2. Inputs: wrong channel count, empty, smaller than the output stride


@pytest.mark.parametrize('in_channels,shape,match', [
    (3, (1, 1, 32, 32), r'expects input of shape \(N, 3, H, W\) '
     r'\(in_channels=3.*got \(1, 1, 32, 32\)'),
    (3, (1, 4, 32, 32), r'expects input of shape \(N, 3, H, W\).*'
     r'got \(1, 4, 32, 32\)'),
    (3, (3, 32, 32), r'expects input of shape \(N, 3, H, W\).*'
     r'got \(3, 32, 32\)'),
    (1, (1, 3, 32, 32), r'expects input of shape \(N, 1, H, W\) '
     r'\(in_channels=1.*got \(1, 3, 32, 32\)'),
    pytest.param(3, (1, 3, 0, 32), r'expects input of shape \(N, 3, H, W\) '
                 r'\(in_channels=3, H and W >= 1\), got \(1, 3, 0, 32\)',
                 ),
])
def test_bad_input_shape(in_channels, shape, match):
    model = EPSANet(50, **TINY, in_channels=in_channels).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.rand(*shape))


@pytest.fixture(scope='module')
def tiny_backbone():
    model = EPSANet(50, **TINY)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('size', [1, 16, 31, 32, 33])
def test_input_smaller_than_the_stride(tiny_backbone, size):
    """No error: every stride-2 layer rounds up, so stage k (stride
    4, 8, 16, 32) is ceil(size / stride) wide, at least 1x1."""
    with torch.no_grad():
        outs = tiny_backbone(torch.rand(2, 3, size, size))
    assert [tuple(o.shape[2:]) for o in outs] == [
        (math.ceil(size / s), ) * 2 for s in (4, 8, 16, 32)
    ]


def test_batch_of_one_too_small_for_train_mode_batchnorm():
    """BN in train mode (norm_eval=False) needs more than one value per
    channel: with one image of at most 32 px the last stage is 1x1, and
    torch's BN refuses it. Two images, or norm_eval=True, are fine."""
    model = EPSANet(50, **TINY, norm_eval=False).train()
    with pytest.raises(ValueError,
                       match=r'Expected more than 1 value per channel when '
                       r'training, got input size torch\.Size\(\[1, \d+, 1, '
                       r'1\]\)'):
        model(torch.rand(1, 3, 32, 32))
    assert model(torch.rand(2, 3, 32, 32))[3].shape == (2, 512, 1, 1)
    model = EPSANet(50, **TINY, norm_eval=True).train()
    assert model(torch.rand(1, 3, 32, 32))[3].shape == (1, 512, 1, 1)


DETECTOR = """
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, type='EPSANet', depth=50, **TINY,
                  out_indices=(1, 2, 3), norm_eval=True),
    neck=dict(in_channels=[128, 256, 512], out_channels=16, num_outs=3,
              start_level=0, add_extra_convs='on_input'),
    bbox_head=dict(num_classes=2, in_channels=16, feat_channels=16,
                   stacked_convs=1,
                   anchor_generator=dict(strides=[8, 16, 32])),
    test_cfg=dict(score_thr=0.0, max_per_img=20))
"""


@pytest.fixture(scope='module')
def tiny_detector(tmp_path_factory):
    from mmdet.registry import MODELS
    path = tmp_path_factory.mktemp('detector') / 'retinanet_tiny.py'
    path.write_text(DETECTOR.replace('**TINY', ', '.join(
        f'{k}={v!r}' for k, v in TINY.items())))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(Config.fromfile(str(path)).model)
    model.init_weights()
    return model


@pytest.mark.parametrize('height,width', [(1, 1), (5, 7), (31, 31)])
def test_tiny_image_through_a_detector(tiny_detector, height, width):
    """The data preprocessor pads every image to a multiple of 32, so the
    backbone sees 32x32; boxes stay inside the real image and the losses are
    finite."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, height, width]] * 2, num_classes=2)
    model = tiny_detector
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        assert data['inputs'].shape[2:] == (32, 32)
        feats = model.extract_feat(data['inputs'])
        assert [tuple(f.shape[2:]) for f in feats] == [(4, 4), (2, 2),
                                                       (1, 1)]
        results = model(**data, mode='predict')
    for res in results:
        boxes = res.pred_instances.bboxes
        assert len(boxes) > 0
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= width
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= height
    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    for name, value in losses.items():
        total = sum(value) if isinstance(value, list) else value
        assert torch.isfinite(total), name
