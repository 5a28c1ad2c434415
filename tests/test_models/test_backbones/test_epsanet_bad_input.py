# Copyright (c) mmepsa contributors. All rights reserved.
"""Bad input to the backbone gets a clear error, never a silent wrong
result: bad ``init_cfg``, every bad argument (the table), wrong input
shapes, inputs smaller than the stride, through a detector too.
docs/troubleshooting.md lists the cases."""
import math
import pathlib

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmepsa  # noqa: F401  (registers EPSANet)
from mmepsa.models import EPSANet
from tests.utils import TINY_BACKBONE as TINY

CONTEXT_BLOCK = dict(type='ContextBlock', ratio=1. / 4)


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
# 1b. Arguments: every bad value fails at construction, naming the field


def tiny(**kwargs) -> dict:
    """The narrow EPSANet's settings with ``kwargs``."""
    return dict(TINY, **kwargs)


def three_stages(**kwargs) -> dict:
    return tiny(**dict(
        dict(
            num_stages=3,
            strides=(1, 2, 2),
            dilations=(1, 1, 1),
            out_indices=(0, 1, 2)), **kwargs))


# Every argument of EPSANet has a bad value here; each row gives all the
# settings (besides depth=50): the narrow EPSANet's (tiny) or the full
# width's (full-* rows), and the message it must produce.
# docs/troubleshooting.md lists the same cases.
BAD_ARGUMENTS = [
    pytest.param(
        tiny(base_channel=32),
        TypeError, r"unknown argument\(s\) \['base_channel'\]; allowed: "
        r".*mmdet ResNet's \['depth', 'in_channels', "
        r"'stem_channels', 'base_channels'",
        id='unknown'),
    pytest.param(
        tiny(depth='50'),
        KeyError, r"invalid depth '50', allowed: \[50, 101\] \(a PSA module "
        r'replaces the 3x3 conv of a Bottleneck',
        id='depth'),
    pytest.param(
        tiny(variant='Small'),
        KeyError, r"invalid variant 'Small', allowed: \['small'\] \(or give "
        r'conv_kernels and conv_groups explicitly\)',
        id='variant'),
    pytest.param(
        tiny(conv_kernels=(3, 5, 7, 0)),
        ValueError,
        r'conv_kernels must be 4 positive ints, one per PSA branch, '
        r'got \(3, 5, 7, 0\)',
        id='conv_kernels-zero'),
    pytest.param(
        tiny(conv_groups=(1, 2, 4, 3)),
        ValueError, r'stage 1 has 16 channels \(base_channels=16\); they must '
        r'split into 4 branches of 16/4 channels, each divisible by '
        r'its conv_groups \(1, 2, 4, 3\)',
        id='conv_groups-divide'),
    pytest.param(
        tiny(base_channels=24),
        ValueError,
        r'stage 1 has 24 channels \(base_channels=24\)',
        id='base_channels-divide'),
    pytest.param(
        tiny(num_stages=0),
        ValueError,
        r'num_stages must be in \[1, 4\], got 0',
        id='num_stages'),
    pytest.param(
        tiny(strides=(1, 2)),
        ValueError, r'strides needs one entry per stage \(num_stages=4\), got '
        r'\(1, 2\)',
        id='strides-length'),
    pytest.param(
        tiny(dilations=(1, 1, 2)),
        ValueError,
        r'dilations needs one entry per stage \(num_stages=4\)',
        id='dilations-length'),
    pytest.param(
        tiny(out_indices=(-1, )),
        ValueError,
        r'out_indices must be a non-empty subset of \(0, 1, 2, 3\)',
        id='out_indices-negative'),
    pytest.param(
        three_stages(out_indices=(1, 3)),
        ValueError,
        r'out_indices must be a non-empty subset of \(0, 1, 2\)',
        id='out_indices-num_stages'),
    pytest.param(
        tiny(style='Pytorch'),
        ValueError,
        r"invalid style 'Pytorch', allowed: 'pytorch', 'caffe'",
        id='style'),
    pytest.param(
        three_stages(frozen_stages=4),
        ValueError,
        r'frozen_stages must be in \[-1, 3\], got 4',
        id='frozen_stages-num_stages'),
    pytest.param(
        tiny(se_ratio=5),
        ValueError,
        r'stage 1 has 4 channels per branch, fewer than se_ratio=5; '
        r'raise base_channels or lower se_ratio',
        id='se_ratio-big'),
    pytest.param(
        tiny(channels_last='yes'),
        ValueError, r'channels_last must be None \(auto: on where measured to '
        r'win\), '
        r"True or False, got 'yes'",
        id='channels_last'),
    pytest.param(
        tiny(contiguous_outputs=None),
        ValueError,
        r'contiguous_outputs must be True or False, got None',
        id='contiguous_outputs'),
    pytest.param(
        tiny(pretrained=pathlib.Path('a.pth')),
        TypeError,
        r'pretrained must be a str or None, got PosixPath',
        id='pretrained-type'),
    pytest.param(
        tiny(
            pretrained='a.pth',
            init_cfg=[dict(type='Kaiming', layer='Conv2d')]),
        ValueError, r'init_cfg and pretrained cannot be specified at the same '
        r'time',
        id='init_cfg-and-pretrained'),
    pytest.param(
        tiny(in_channels=0),
        ValueError,
        r'in_channels must be a positive int, got 0',
        id='in_channels-zero'),
    pytest.param(
        tiny(in_channels='3'),
        ValueError,
        r"in_channels must be a positive int, got '3'",
        id='in_channels-str'),
    pytest.param(
        tiny(stem_channels=0),
        ValueError,
        r'stem_channels must be a positive int, got 0',
        id='stem_channels'),
    pytest.param(
        tiny(base_channels=0),
        ValueError,
        r'base_channels must be a positive int, got 0',
        id='base_channels-zero'),
    pytest.param(
        tiny(base_channels=16.0),
        ValueError,
        r'base_channels must be a positive int, got 16\.0',
        id='base_channels-float'),
    pytest.param(
        tiny(se_ratio=0),
        ValueError,
        r'se_ratio must be a positive int, got 0',
        id='se_ratio-zero'),
    pytest.param(
        tiny(num_stages=2.0),
        ValueError,
        r'num_stages must be in \[1, 4\], got 2\.0',
        id='num_stages-float'),
    pytest.param(
        tiny(strides=(1, 2, 2, 0)),
        ValueError,
        r'strides must be positive ints, got \(1, 2, 2, 0\)',
        id='strides-zero'),
    pytest.param(
        tiny(strides=2),
        ValueError,
        r'strides needs one entry per stage \(num_stages=4\), got 2',
        id='strides-int'),
    pytest.param(
        tiny(dilations=(1, 1, 1, 0)),
        ValueError,
        r'dilations must be positive ints, got \(1, 1, 1, 0\)',
        id='dilations-zero'),
    pytest.param(
        tiny(out_indices=(0, 0)),
        ValueError,
        r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
        r'each index once, got \(0, 0\)',
        id='out_indices-repeated'),
    pytest.param(
        tiny(out_indices=3),
        ValueError,
        r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
        r'each index once, got 3',
        id='out_indices-int'),
    pytest.param(
        tiny(conv_kernels=(3, 5, 7, 8)),
        ValueError,
        r'conv_kernels must be odd .*got \(3, 5, 7, 8\)',
        id='conv_kernels-even'),
    pytest.param(
        tiny(conv_groups=4),
        ValueError,
        r'conv_groups must be 4 positive ints, one per PSA branch, '
        r'got 4',
        id='conv_groups-int'),
    pytest.param(
        tiny(frozen_stages=None),
        ValueError,
        r'frozen_stages must be in \[-1, 4\], got None',
        id='frozen_stages-none'),
    pytest.param(
        tiny(norm_cfg=dict(type='BatchNorm')),
        KeyError, r"invalid norm_cfg type 'BatchNorm', registered: "
        r"\[.*'BN'.*'GN'.*'SyncBN'\]",
        id='norm_cfg-type'),
    pytest.param(
        tiny(norm_cfg='BN'),
        TypeError,
        r"norm_cfg must be a dict with a 'type' key, got 'BN'",
        id='norm_cfg-str'),
    pytest.param(
        tiny(norm_cfg=dict(type='GN')),
        ValueError,
        r"norm_cfg of type 'GN' needs num_groups",
        id='norm_cfg-GN'),
    pytest.param(
        tiny(conv_cfg=dict(type='DCNv3')),
        KeyError, r"invalid conv_cfg type 'DCNv3', registered: "
        r"\[.*'Conv2d'.*\]",
        id='conv_cfg-type'),
    pytest.param(
        tiny(norm_eval='no'),
        ValueError,
        r"norm_eval must be True or False, got 'no'",
        id='norm_eval'),
    pytest.param(
        tiny(with_cp='no'),
        ValueError,
        r"with_cp must be True or False, got 'no'",
        id='with_cp'),
    pytest.param(
        tiny(zero_init_residual='no'),
        ValueError,
        r"zero_init_residual must be True or False, got 'no'",
        id='zero_init_residual'),
    pytest.param(
        tiny(init_cfg='checkpoints/epsanet50.pth'),
        TypeError,
        r'init_cfg must be None, a dict or a list of dicts',
        id='init_cfg-str'),
    pytest.param(
        dict(depth=34),
        KeyError,
        r'invalid depth 34.*\[50, 101\]',
        id='full-depth'),
    pytest.param(
        dict(variant='large'),
        KeyError,
        r"invalid variant 'large'.*\['small'\]",
        id='full-variant'),
    pytest.param(
        dict(variant='medium'),
        KeyError,
        r'invalid variant',
        id='full-variant-2'),
    pytest.param(
        dict(out_indices=(4, )),
        ValueError,
        r'out_indices must be a non-empty subset of \(0, 1, 2, 3\)',
        id='full-out_indices'),
    pytest.param(
        dict(out_indices=()),
        ValueError,
        r'out_indices',
        id='full-out_indices-2'),
    pytest.param(
        dict(
            num_stages=3,
            out_indices=(3, ),
            strides=(1, 2, 2),
            dilations=(1, 1, 1)),
        ValueError,
        r'out_indices.*\(0, 1, 2\)',
        id='full-out_indices-num_stages'),
    pytest.param(
        dict(frozen_stages=5),
        ValueError,
        r'frozen_stages must be in \[-1, 4\], got 5',
        id='full-frozen_stages'),
    pytest.param(
        dict(frozen_stages=-2),
        ValueError,
        r'frozen_stages',
        id='full-frozen_stages-2'),
    pytest.param(
        dict(num_stages=5),
        ValueError,
        r'num_stages must be in \[1, 4\]',
        id='full-num_stages'),
    pytest.param(
        dict(strides=(1, 2, 2)),
        ValueError,
        r'strides needs one entry',
        id='full-strides'),
    pytest.param(
        dict(dilations=(1, 1)),
        ValueError,
        r'dilations needs one entry',
        id='full-dilations'),
    pytest.param(
        dict(conv_kernels=(3, 5, 7)),
        ValueError,
        r'conv_kernels must be 4 positive ints',
        id='full-conv_kernels'),
    pytest.param(
        dict(conv_groups=(1, 4, 8, 16, 32)),
        ValueError,
        r'conv_groups must be 4 positive ints',
        id='full-conv_groups'),
    pytest.param(
        dict(conv_groups=(1, 4, 8, 0)),
        ValueError,
        r'conv_groups',
        id='full-conv_groups-2'),
    pytest.param(
        dict(conv_groups=(1, 4, 8, 32)),
        ValueError,
        r'stage 1 has 64 channels.*divisible by its conv_groups',
        id='full-conv_groups-3'),
    pytest.param(
        dict(base_channels=36),
        ValueError,
        r'stage 1 has 36 channels',
        id='full-base_channels'),
    pytest.param(
        dict(base_channels=16, conv_groups=(1, 1, 1, 1)),
        ValueError,
        r'4 channels per branch, fewer than se_ratio=16',
        id='full-conv_groups-4'),
    pytest.param(
        dict(style='tf'),
        ValueError,
        r"invalid style 'tf', allowed: 'pytorch', 'caffe'",
        id='full-style'),
    pytest.param(
        dict(pretrained=1),
        TypeError,
        r'pretrained must be a str or None',
        id='full-pretrained'),
    pytest.param(
        dict(pretrained='a.pth', init_cfg=dict(type='Pretrained')),
        ValueError,
        r'init_cfg and pretrained',
        id='full-pretrained-2'),
    # the ResNet-family arguments (deep_stem, avg_down, plugins, widen_factor,
    # dcn)
    pytest.param(
        tiny(
            dcn=dict(type='DCNv2', deform_groups=1),
            stage_with_dcn=(False, True, True, True)),
        ValueError,
        r'deformable convs are not supported .*allowed: dcn=None and '
        r'stage_with_dcn all False, got dcn=\{',
        id='dcn'),
    pytest.param(
        tiny(stage_with_dcn=(False, False, True, True)),
        ValueError,
        r'deformable convs are not supported',
        id='stage_with_dcn'),
    pytest.param(
        tiny(widen_factor=0),
        ValueError,
        r'widen_factor must be a positive int, got 0',
        id='widen_factor-zero'),
    pytest.param(
        tiny(widen_factor=1.5),
        ValueError,
        r'widen_factor must be a positive int, got 1\.5',
        id='widen_factor-float'),
    pytest.param(
        tiny(widen_factor=2, conv_groups=(1, 2, 4, 16)),
        ValueError,
        r'stage 1 has 32 channels \(base_channels=16, widen_factor=2\); they '
        r'must split into 4 branches of 32/4 channels, each divisible by its '
        r'conv_groups \(1, 2, 4, 16\)',
        id='widen_factor-groups'),
    pytest.param(
        tiny(deep_stem='yes'),
        ValueError,
        r"deep_stem must be True or False, got 'yes'",
        id='deep_stem-flag'),
    pytest.param(
        tiny(avg_down=1),
        ValueError,
        r'avg_down must be True or False, got 1',
        id='avg_down-flag'),
    pytest.param(
        tiny(deep_stem=True, stem_channels=15),
        ValueError,
        r'deep_stem needs an even stem_channels .*got 15',
        id='deep_stem-odd-stem'),
    pytest.param(
        tiny(plugins=dict(cfg=CONTEXT_BLOCK, position='after_conv3')),
        TypeError,
        r'plugins must be None or a list of dicts',
        id='plugins-not-list'),
    pytest.param(
        tiny(plugins=[dict(type='ContextBlock')]),
        TypeError,
        r"each plugin must be a dict with a 'cfg' dict",
        id='plugin-no-cfg'),
    pytest.param(
        tiny(plugins=[dict(cfg=CONTEXT_BLOCK, position='after_conv4')]),
        ValueError, r"invalid plugin position 'after_conv4', allowed: "
        r"\('after_conv1', 'after_conv2', 'after_conv3'\)",
        id='plugin-position'),
    pytest.param(
        tiny(plugins=[
            dict(
                cfg=CONTEXT_BLOCK, position='after_conv3', stages=(True, True))
        ]),
        ValueError,
        r'plugin stages needs one bool per stage \(num_stages=4\), got '
        r'\(True, True\)',
        id='plugin-stages'),
]


@pytest.mark.parametrize('settings,error,match', BAD_ARGUMENTS)
def test_bad_arguments(settings, error, match):
    with pytest.raises(error, match=match):
        EPSANet(**dict(dict(depth=50), **settings))


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
    pytest.param(
        3,
        (1, 3, 0, 32),
        r'expects input of shape \(N, 3, H, W\) '
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
    assert [tuple(o.shape[2:]) for o in outs] == [(math.ceil(size / s), ) * 2
                                                  for s in (4, 8, 16, 32)]


def test_batch_of_one_too_small_for_train_mode_batchnorm():
    """BN in train mode (norm_eval=False) needs more than one value per
    channel: with one image of at most 32 px the last stage is 1x1, and
    torch's BN refuses it. Two images, or norm_eval=True, are fine."""
    model = EPSANet(50, **TINY, norm_eval=False).train()
    with pytest.raises(
            ValueError,
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
    path.write_text(
        DETECTOR.replace('**TINY',
                         ', '.join(f'{k}={v!r}' for k, v in TINY.items())))
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
        assert [tuple(f.shape[2:]) for f in feats] == [(4, 4), (2, 2), (1, 1)]
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
