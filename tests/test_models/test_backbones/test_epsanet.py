# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet backbone: shapes, ResNet-family options, bad arguments, parity
with the authors' formulation, checkpoint loading, params and FLOPs."""
import copy
import pathlib

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from torch.nn.modules import GroupNorm

from mmepsa.models import EPSABlock, EPSANet, PSAModule
from mmepsa.models.layers import psa_fusion
from mmepsa.testing import RefEPSANet, RefPSA, randomize_
# A narrow EPSANet keeps the tests fast where the full width is not the point.
from tests.utils import TINY_BACKBONE as TINY
from tests.utils import check_norm_state

CONTEXT_BLOCK = dict(type='ContextBlock', ratio=1. / 4)

@pytest.mark.parametrize('depth,blocks', [(50, (3, 4, 6, 3)),
                                          (101, (3, 4, 23, 3))])
def test_full_width_shapes_on_odd_input(depth, blocks):
    model = EPSANet(depth=depth)
    model.init_weights()
    model.eval()
    assert tuple(len(getattr(model, f'layer{i + 1}'))
                 for i in range(4)) == blocks
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 97, 131))
    # strides 4/8/16/32 with ceil rounding through the stride-2 convs
    assert [tuple(o.shape) for o in outs] == [(1, 256, 25, 33),
                                              (1, 512, 13, 17),
                                              (1, 1024, 7, 9),
                                              (1, 2048, 4, 5)]


@pytest.mark.parametrize('out_indices', [(0, ), (3, ), (1, 2), (0, 2, 3)])
def test_out_indices(out_indices):
    model = EPSANet(50, out_indices=out_indices, **TINY).eval()
    outs = model(torch.rand(2, 3, 64, 64))
    assert len(outs) == len(out_indices)
    for out, i in zip(outs, out_indices):
        assert out.shape == (2, 16 * 4 * 2**i, 16 // 2**i, 16 // 2**i)


def test_num_stages_strides_dilations():
    model = EPSANet(
        50,
        num_stages=3,
        strides=(1, 2, 1),
        dilations=(1, 1, 2),
        out_indices=(2, ),
        **TINY).eval()
    assert not hasattr(model, 'layer4')
    (out, ) = model(torch.rand(1, 3, 64, 64))
    # the last stage keeps stride 8 and dilates its PSA convs instead
    assert out.shape == (1, 256, 8, 8)
    conv = model.layer3[0].conv2.conv_4
    assert conv.dilation == (2, 2) and conv.padding == (8, 8)


def test_psa_structure_and_names():
    model = EPSANet(50)
    psa = model.layer2[0].conv2
    assert isinstance(psa, PSAModule)
    for i, (k, g) in enumerate(zip((3, 5, 7, 9), (1, 4, 8, 16))):
        conv = getattr(psa, f'conv_{i + 1}')
        assert conv.kernel_size == (k, k) and conv.groups == g
        assert conv.stride == (2, 2) and conv.bias is None
        assert conv.out_channels == 128 // 4
    # one SE module shared by the 4 branches, squeezing by 16, with biases
    assert psa.se.fc1.weight.shape == (2, 32, 1, 1)
    assert psa.se.fc1.bias is not None and psa.se.fc2.bias is not None
    names = set(model.state_dict())
    for key in ('conv1.weight', 'bn1.running_mean', 'layer1.0.conv1.weight',
                'layer1.0.bn2.weight', 'layer1.0.conv2.conv_4.weight',
                'layer3.5.conv2.se.fc2.bias', 'layer4.0.downsample.0.weight',
                'layer4.0.downsample.1.running_var', 'layer4.2.bn3.weight'):
        assert key in names


def test_explicit_kernels_and_groups_override_variant():
    model = EPSANet(
        50,
        conv_kernels=(3, 3, 5, 5),
        **dict(TINY, conv_groups=(1, 2, 2, 4)))
    psa = model.layer1[0].conv2
    assert [getattr(psa, f'conv_{i}').kernel_size[0]
            for i in range(1, 5)] == [3, 3, 5, 5]
    assert [getattr(psa, f'conv_{i}').groups
            for i in range(1, 5)] == [1, 2, 2, 4]


@pytest.mark.parametrize('style,conv1_stride,psa_stride', [('pytorch', 1, 2),
                                                           ('caffe', 2, 1)])
def test_style_puts_the_stride(style, conv1_stride, psa_stride):
    model = EPSANet(50, style=style, **TINY).eval()
    block = model.layer2[0]
    assert block.conv1.stride == (conv1_stride, conv1_stride)
    assert block.conv2.conv_1.stride == (psa_stride, psa_stride)
    assert model(torch.rand(1, 3, 64, 64))[1].shape == (1, 128, 8, 8)


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 3, 4])
def test_frozen_stages(frozen_stages):
    model = EPSANet(50, frozen_stages=frozen_stages, norm_eval=False, **TINY)
    model.train()
    stem_frozen = frozen_stages >= 0
    assert model.norm1.training is not stem_frozen
    for p in list(model.conv1.parameters()) + list(model.norm1.parameters()):
        assert p.requires_grad is not stem_frozen
    for i in range(1, 5):
        layer = getattr(model, f'layer{i}')
        frozen = i <= frozen_stages
        assert check_norm_state(layer.modules(), not frozen)
        assert all(p.requires_grad is not frozen for p in layer.parameters())
    if frozen_stages == 4:
        assert not any(p.requires_grad for p in model.parameters())
        return
    # a train step leaves frozen weights and statistics untouched
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(o.sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    opt.step()
    after = model.state_dict()
    for key in ('layer1.0.conv1.weight', 'layer1.0.bn1.running_mean',
                'layer4.0.conv1.weight'):
        frozen = int(key[5]) <= frozen_stages
        assert torch.equal(before[key], after[key]) is frozen, key


def test_norm_eval():
    model = EPSANet(50, norm_eval=True, **TINY)
    model.train()
    assert check_norm_state(model.modules(), False)
    model = EPSANet(50, norm_eval=False, **TINY)
    model.train()
    assert check_norm_state(model.modules(), True)
    model.eval()
    assert check_norm_state(model.modules(), False)


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = EPSANet(50, norm_eval=False, **TINY)
    plain.init_weights()
    randomize_(plain)
    ckpt = EPSANet(50, norm_eval=False, with_cp=True, **TINY)
    ckpt.load_state_dict(plain.state_dict())
    assert all(m.with_cp for m in ckpt.modules() if isinstance(m, EPSABlock))
    x = torch.rand(2, 3, 64, 64)
    results = []
    for model in (plain, ckpt):
        model.train()
        inp = x.clone().requires_grad_()
        outs = model(inp)
        sum((o * o).mean() for o in outs).backward()
        results.append((outs, inp.grad,
                        {n: p.grad
                         for n, p in model.named_parameters()}))
    (o1, g1, p1), (o2, g2, p2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(g1, g2)
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p1[name], p2[name], msg=name)


def test_group_norm():
    model = EPSANet(
        50, norm_cfg=dict(type='GN', num_groups=4, requires_grad=True), **TINY)
    model.init_weights()
    model.train()
    assert isinstance(model.layer1[0].norm2, GroupNorm)
    assert model.layer1[0].norm1_name == 'gn1'
    outs = model(torch.rand(1, 3, 64, 64))
    assert outs[3].shape == (1, 512, 2, 2)


@pytest.mark.parametrize('zero_init', [True, False])
def test_zero_init_residual(zero_init):
    model = EPSANet(50, zero_init_residual=zero_init, **TINY)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, EPSABlock):
            assert bool((m.norm3.weight == 0).all()) is zero_init
            assert bool((m.norm2.weight == 1).all())


def tiny(**kwargs) -> dict:
    """The narrow EPSANet's settings with ``kwargs``."""
    return dict(TINY, **kwargs)


def three_stages(**kwargs) -> dict:
    return tiny(**dict(dict(num_stages=3, strides=(1, 2, 2),
                            dilations=(1, 1, 1), out_indices=(0, 1, 2)),
                       **kwargs))


# Every argument of EPSANet has a bad value here; each row gives all the
# settings (besides depth=50): the narrow EPSANet's (tiny) or the full
# width's (full-* rows), and the message it must produce. The README's
# "Troubleshooting" section lists the same cases.
BAD_ARGUMENTS = [
    pytest.param(tiny(depth='50'),
                 KeyError,
                 r"invalid depth '50', allowed: \[50, 101\]",
                 id='depth'),
    pytest.param(tiny(variant='Small'),
                 KeyError,
                 r"invalid variant 'Small', allowed: \['small'\] \(or give "
                 r'conv_kernels and conv_groups explicitly\)',
                 id='variant'),
    pytest.param(tiny(conv_kernels=(3, 5, 7, 0)),
                 ValueError,
                 r'conv_kernels must be 4 positive ints, one per PSA branch, '
                 r'got \(3, 5, 7, 0\)',
                 id='conv_kernels-zero'),
    pytest.param(tiny(conv_groups=(1, 2, 4, 3)),
                 ValueError,
                 r'stage 1 has 16 channels \(base_channels=16\); they must '
                 r'split into 4 branches of 16/4 channels, each divisible by '
                 r'its conv_groups \(1, 2, 4, 3\)',
                 id='conv_groups-divide'),
    pytest.param(tiny(base_channels=24),
                 ValueError,
                 r'stage 1 has 24 channels \(base_channels=24\)',
                 id='base_channels-divide'),
    pytest.param(tiny(num_stages=0),
                 ValueError,
                 r'num_stages must be in \[1, 4\], got 0',
                 id='num_stages'),
    pytest.param(tiny(strides=(1, 2)),
                 ValueError,
                 r'strides needs one entry per stage \(num_stages=4\), got '
                 r'\(1, 2\)',
                 id='strides-length'),
    pytest.param(tiny(dilations=(1, 1, 2)),
                 ValueError,
                 r'dilations needs one entry per stage \(num_stages=4\)',
                 id='dilations-length'),
    pytest.param(tiny(out_indices=(-1, )),
                 ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\)',
                 id='out_indices-negative'),
    pytest.param(three_stages(out_indices=(1, 3)),
                 ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2\)',
                 id='out_indices-num_stages'),
    pytest.param(tiny(style='Pytorch'),
                 ValueError,
                 r"invalid style 'Pytorch', allowed: 'pytorch', 'caffe'",
                 id='style'),
    pytest.param(three_stages(frozen_stages=4),
                 ValueError,
                 r'frozen_stages must be in \[-1, 3\], got 4',
                 id='frozen_stages-num_stages'),
    pytest.param(tiny(se_ratio=5),
                 ValueError,
                 r'stage 1 has 4 channels per branch, fewer than se_ratio=5; '
                 r'raise base_channels or lower se_ratio',
                 id='se_ratio-big'),
    pytest.param(tiny(channels_last='yes'),
                 ValueError,
                 r"channels_last must be None \(auto: on for CPU inputs\), "
                 r"True or False, got 'yes'",
                 id='channels_last'),
    pytest.param(tiny(contiguous_outputs=None),
                 ValueError,
                 r'contiguous_outputs must be True or False, got None',
                 id='contiguous_outputs'),
    pytest.param(tiny(pretrained=pathlib.Path('a.pth')),
                 TypeError,
                 r'pretrained must be a str or None, got PosixPath',
                 id='pretrained-type'),
    pytest.param(tiny(pretrained='a.pth',
                      init_cfg=[dict(type='Kaiming', layer='Conv2d')]),
                 ValueError,
                 r'init_cfg and pretrained cannot be specified at the same '
                 r'time',
                 id='init_cfg-and-pretrained'),
    # Not checked yet: the proposed check's message is expected.
    pytest.param(tiny(in_channels=0),
                 ValueError,
                 r'in_channels must be a positive int, got 0',
                 id='in_channels-zero'),
    pytest.param(tiny(in_channels='3'),
                 ValueError,
                 r"in_channels must be a positive int, got '3'",
                 id='in_channels-str'),
    pytest.param(tiny(stem_channels=0),
                 ValueError,
                 r'stem_channels must be a positive int, got 0',
                 id='stem_channels'),
    pytest.param(tiny(base_channels=0),
                 ValueError,
                 r'base_channels must be a positive int, got 0',
                 id='base_channels-zero'),
    pytest.param(tiny(base_channels=16.0),
                 ValueError,
                 r'base_channels must be a positive int, got 16\.0',
                 id='base_channels-float'),
    pytest.param(tiny(se_ratio=0),
                 ValueError,
                 r'se_ratio must be a positive int, got 0',
                 id='se_ratio-zero'),
    pytest.param(tiny(num_stages=2.0),
                 ValueError,
                 r'num_stages must be in \[1, 4\], got 2\.0',
                 id='num_stages-float'),
    pytest.param(tiny(strides=(1, 2, 2, 0)),
                 ValueError,
                 r'strides must be positive ints, got \(1, 2, 2, 0\)',
                 id='strides-zero'),
    pytest.param(tiny(strides=2),
                 ValueError,
                 r'strides needs one entry per stage \(num_stages=4\), got 2',
                 id='strides-int'),
    pytest.param(tiny(dilations=(1, 1, 1, 0)),
                 ValueError,
                 r'dilations must be positive ints, got \(1, 1, 1, 0\)',
                 id='dilations-zero'),
    pytest.param(tiny(out_indices=(0, 0)),
                 ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
                 r'each index once, got \(0, 0\)',
                 id='out_indices-repeated'),
    pytest.param(tiny(out_indices=3),
                 ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
                 r'each index once, got 3',
                 id='out_indices-int'),
    pytest.param(tiny(conv_kernels=(3, 5, 7, 8)),
                 ValueError,
                 r'conv_kernels must be odd .*got \(3, 5, 7, 8\)',
                 id='conv_kernels-even'),
    pytest.param(tiny(conv_groups=4),
                 ValueError,
                 r'conv_groups must be 4 positive ints, one per PSA branch, '
                 r'got 4',
                 id='conv_groups-int'),
    pytest.param(tiny(frozen_stages=None),
                 ValueError,
                 r'frozen_stages must be in \[-1, 4\], got None',
                 id='frozen_stages-none'),
    pytest.param(tiny(norm_cfg=dict(type='BatchNorm')),
                 KeyError, r"invalid norm_cfg type 'BatchNorm', registered: "
                 r"\[.*'BN'.*'GN'.*'SyncBN'\]",
                 id='norm_cfg-type'),
    pytest.param(tiny(norm_cfg='BN'),
                 TypeError,
                 r"norm_cfg must be a dict with a 'type' key, got 'BN'",
                 id='norm_cfg-str'),
    pytest.param(tiny(norm_cfg=dict(type='GN')),
                 ValueError,
                 r"norm_cfg of type 'GN' needs num_groups",
                 id='norm_cfg-GN'),
    pytest.param(tiny(conv_cfg=dict(type='DCNv3')),
                 KeyError, r"invalid conv_cfg type 'DCNv3', registered: "
                 r"\[.*'Conv2d'.*\]",
                 id='conv_cfg-type'),
    pytest.param(tiny(norm_eval='no'),
                 ValueError,
                 r"norm_eval must be True or False, got 'no'",
                 id='norm_eval'),
    pytest.param(tiny(with_cp='no'),
                 ValueError,
                 r"with_cp must be True or False, got 'no'",
                 id='with_cp'),
    pytest.param(tiny(zero_init_residual='no'),
                 ValueError,
                 r"zero_init_residual must be True or False, got 'no'",
                 id='zero_init_residual'),
    pytest.param(tiny(init_cfg='checkpoints/epsanet50.pth'),
                 TypeError,
                 r'init_cfg must be None, a dict or a list of dicts',
                 id='init_cfg-str'),
    pytest.param(dict(depth=34),
                 KeyError,
                 r'invalid depth 34.*\[50, 101\]',
                 id='full-depth'),
    pytest.param(dict(variant='large'),
                 KeyError,
                 r"invalid variant 'large'.*\['small'\]",
                 id='full-variant'),
    pytest.param(dict(variant='medium'),
                 KeyError,
                 r'invalid variant',
                 id='full-variant-2'),
    pytest.param(dict(out_indices=(4, )),
                 ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\)',
                 id='full-out_indices'),
    pytest.param(dict(out_indices=()),
                 ValueError,
                 r'out_indices',
                 id='full-out_indices-2'),
    pytest.param(dict(num_stages=3,
                      out_indices=(3, ),
                      strides=(1, 2, 2),
                      dilations=(1, 1, 1)),
                 ValueError,
                 r'out_indices.*\(0, 1, 2\)',
                 id='full-out_indices-num_stages'),
    pytest.param(dict(frozen_stages=5),
                 ValueError,
                 r'frozen_stages must be in \[-1, 4\], got 5',
                 id='full-frozen_stages'),
    pytest.param(dict(frozen_stages=-2),
                 ValueError,
                 r'frozen_stages',
                 id='full-frozen_stages-2'),
    pytest.param(dict(num_stages=5),
                 ValueError,
                 r'num_stages must be in \[1, 4\]',
                 id='full-num_stages'),
    pytest.param(dict(strides=(1, 2, 2)),
                 ValueError,
                 r'strides needs one entry',
                 id='full-strides'),
    pytest.param(dict(dilations=(1, 1)),
                 ValueError,
                 r'dilations needs one entry',
                 id='full-dilations'),
    pytest.param(dict(conv_kernels=(3, 5, 7)),
                 ValueError,
                 r'conv_kernels must be 4 positive ints',
                 id='full-conv_kernels'),
    pytest.param(dict(conv_groups=(1, 4, 8, 16, 32)),
                 ValueError,
                 r'conv_groups must be 4 positive ints',
                 id='full-conv_groups'),
    pytest.param(dict(conv_groups=(1, 4, 8, 0)),
                 ValueError,
                 r'conv_groups',
                 id='full-conv_groups-2'),
    pytest.param(dict(conv_groups=(1, 4, 8, 32)),
                 ValueError,
                 r'stage 1 has 64 channels.*divisible by its conv_groups',
                 id='full-conv_groups-3'),
    pytest.param(dict(base_channels=36),
                 ValueError,
                 r'stage 1 has 36 channels',
                 id='full-base_channels'),
    pytest.param(dict(base_channels=16, conv_groups=(1, 1, 1, 1)),
                 ValueError,
                 r'4 channels per branch, fewer than se_ratio=16',
                 id='full-conv_groups-4'),
    pytest.param(dict(style='tf'),
                 ValueError,
                 r"invalid style 'tf', allowed: 'pytorch', 'caffe'",
                 id='full-style'),
    pytest.param(dict(pretrained=1),
                 TypeError,
                 r'pretrained must be a str or None',
                 id='full-pretrained'),
    pytest.param(dict(pretrained='a.pth', init_cfg=dict(type='Pretrained')),
                 ValueError,
                 r'init_cfg and pretrained',
                 id='full-pretrained-2'),
    # the ResNet-family arguments (deep_stem, avg_down, plugins, widen_factor,
    # dcn)
    pytest.param(tiny(dcn=dict(type='DCNv2', deform_groups=1),
                      stage_with_dcn=(False, True, True, True)),
                 ValueError,
                 r'deformable convs are not supported .*allowed: dcn=None and '
                 r'stage_with_dcn all False, got dcn=\{',
                 id='dcn'),
    pytest.param(tiny(stage_with_dcn=(False, False, True, True)),
                 ValueError,
                 r'deformable convs are not supported',
                 id='stage_with_dcn'),
    pytest.param(tiny(widen_factor=0),
                 ValueError,
                 r'widen_factor must be a positive int, got 0',
                 id='widen_factor-zero'),
    pytest.param(tiny(widen_factor=1.5),
                 ValueError,
                 r'widen_factor must be a positive int, got 1\.5',
                 id='widen_factor-float'),
    pytest.param(
        tiny(widen_factor=2, conv_groups=(1, 2, 4,
                                          16)),
        ValueError,
        r'stage 1 has 32 channels \(base_channels=16, widen_factor=2\); they '
        r'must split into 4 branches of 32/4 channels, each divisible by its '
        r'conv_groups \(1, 2, 4, 16\)',
        id='widen_factor-groups'),
    pytest.param(tiny(deep_stem='yes'),
                 ValueError,
                 r"deep_stem must be True or False, got 'yes'",
                 id='deep_stem-flag'),
    pytest.param(tiny(avg_down=1),
                 ValueError,
                 r'avg_down must be True or False, got 1',
                 id='avg_down-flag'),
    pytest.param(tiny(deep_stem=True, stem_channels=15),
                 ValueError,
                 r'deep_stem needs an even stem_channels .*got 15',
                 id='deep_stem-odd-stem'),
    pytest.param(tiny(plugins=dict(cfg=CONTEXT_BLOCK, position='after_conv3')),
                 TypeError,
                 r'plugins must be None or a list of dicts',
                 id='plugins-not-list'),
    pytest.param(tiny(plugins=[dict(type='ContextBlock')]),
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


@pytest.mark.parametrize('shape', [(1, 1, 64, 64), (1, 4, 64, 64),
                                   (3, 64, 64)])
def test_wrong_input_channels(shape):
    model = EPSANet(50, **TINY).eval()
    with pytest.raises(ValueError,
                       match=r'expects input of shape \(N, 3, H, W\)'):
        model(torch.rand(*shape))


def test_grayscale_in_channels():
    model = EPSANet(50, in_channels=1, **TINY).eval()
    assert model(torch.rand(1, 1, 64, 64))[0].shape == (1, 64, 16, 16)


def test_psa_module_matches_reference():
    torch.manual_seed(0)
    ref = randomize_(RefPSA(64, 64, stride=2)).eval()
    ours = PSAModule(64, 64, stride=2).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 64, 23, 17)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('memory_format',
                         [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('with_norm', [False, True])
def test_psa_fast_path_equals_the_concatenation(memory_format, with_norm):
    """The fused weighting (``_WeightedConcat``) and the SE module as
    matrix products give the outputs and the gradients (input, convs, SE,
    the folded eval-mode BN's weight and bias) of the concatenation of
    products, in float64."""
    torch.manual_seed(0)
    psa = PSAModule(16, 16, conv_groups=(1, 2, 4, 4), se_ratio=4).double()
    norm = nn.BatchNorm2d(16).double().eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    params = [x] + list(psa.parameters()) + (
        [norm.weight, norm.bias] if with_norm else [])

    def run():
        out = psa(x, norm) if with_norm else psa(x)
        return out, torch.autograd.grad(out, params, grad)

    torch.manual_seed(1)
    grad = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    out, grads = run()
    assert out.is_contiguous(memory_format=memory_format)
    with psa_fusion(False):  # the authors' products and torch.cat
        ref, ref_grads = run()
    assert type(out.grad_fn).__name__ == '_WeightedConcatBackward'
    assert type(ref.grad_fn).__name__.startswith('CatBackward')
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(params)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Branches that need no gradient (frozen convs, an input that needs
    # none) while the SE module trains: the SE gradients still agree.
    for i in range(1, 5):
        getattr(psa, f'conv_{i}').requires_grad_(False)
    x, params = x.detach(), list(psa.se.parameters())
    out, grads = run()
    with psa_fusion(False):
        ref, ref_grads = run()
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('value', [0, 'yes', None])
def test_psa_fusion_bad_value(value):
    with pytest.raises(TypeError, match='psa_fusion expects True or False'):
        with psa_fusion(value):
            pass


def test_psa_fast_path_double_backward():
    """The fused weighting's backward is differentiable: gradcheck and
    gradgradcheck pass through the PSA module (float64)."""
    torch.manual_seed(0)
    psa = PSAModule(8, 8, conv_groups=(1, 2, 2, 2), se_ratio=2).double()
    x = torch.randn(1, 8, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(psa, (x, ))
    assert torch.autograd.gradgradcheck(psa, (x, ))


def test_se_module_runs_its_convs_for_hooks():
    """With a hook on fc1/fc2 (e.g. a FLOPs counter's) the SE module calls
    its convs, so the hook sees them; both ways agree (float64)."""
    torch.manual_seed(0)
    se = PSAModule(64, 64).se.double()
    pooled = torch.randn(6, 16, 1, 1, dtype=torch.float64)
    fast = se(pooled)
    calls = []
    handle = se.fc1.register_forward_hook(lambda *args: calls.append(1))
    try:
        slow = se(pooled)
    finally:
        handle.remove()
    assert calls == [1]
    assert fast.shape == slow.shape == (6, 16, 1, 1)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_branch_order_is_reversed():
    """Branch 4 comes first in the output and branch 1 last (the authors'
    order, which their checkpoints depend on)."""
    psa = PSAModule(16, 16, conv_groups=(1, 1, 1, 1), se_ratio=4).eval()
    with torch.no_grad():
        for i in range(4):
            # branch i + 1 outputs the constant i + 1 on an all-ones input
            conv = getattr(psa, f'conv_{i + 1}')
            conv.weight.zero_()
            k = conv.kernel_size[0] // 2
            conv.weight[:, :, k, k] = (i + 1) / 16
        # zero SE logits: sigmoid 0.5 everywhere, so the softmax weights
        # every branch by 1/4
        psa.se.fc2.weight.zero_()
        psa.se.fc2.bias.zero_()
        out = psa(torch.ones(1, 16, 5, 5))
    blocks = [out[0, 4 * j:4 * (j + 1)] for j in range(4)]
    for j, block in enumerate(blocks):
        torch.testing.assert_close(block, torch.full_like(block,
                                                          (4 - j) / 4))


def _original_checkpoint(tmp_path, depth_layers, seed=0, width=64,
                         reduction=16):
    """An EPSANet checkpoint as the authors' training script saves it:
    ``{'state_dict': ...}`` with DataParallel's ``module.`` prefix and the
    classifier's ``fc.*``."""
    ref = randomize_(
        RefEPSANet(depth_layers, width=width, reduction=reduction), seed)
    ref.eval()
    path = tmp_path / 'epsanet_original.pth.tar'
    torch.save(
        {
            'epoch': 120,
            'arch': 'epsanet50',
            'state_dict': {f'module.{k}': v
                           for k, v in ref.state_dict().items()},
            'best_acc1': torch.tensor(77.49),
        }, path)
    return ref, path


@pytest.mark.parametrize('depth,layers', [(50, (3, 4, 6, 3)),
                                          (101, (3, 4, 23, 3))])
def test_parity_with_original_checkpoint(tmp_path, depth, layers):
    """The authors' checkpoint loads through init_cfg with no missing
    backbone key, and the stage outputs equal the original formulation's."""
    ref, path = _original_checkpoint(tmp_path, layers)
    model = EPSANet(
        depth, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    ref_keys = {k for k in ref.state_dict() if not k.startswith('fc.')}
    assert set(model.state_dict()) == ref_keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        ours = model(x)
        theirs = ref.stages(x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_loads_mmpretrain_classifier_checkpoint(tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.models import ImageClassifier
    # Other tests may leave mmdet as the default scope: build in mmpretrain's.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(
                type='EPSANet', depth=50, out_indices=(3, ), **TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead', num_classes=10, in_channels=512,
                loss=dict(type='CrossEntropyLoss')))
    classifier.init_weights()
    randomize_(classifier.backbone)
    path = tmp_path / 'mmpretrain.pth'
    torch.save({'state_dict': classifier.state_dict(), 'meta': {}}, path)
    backbone = EPSANet(
        50,
        **TINY,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    backbone.init_weights()
    for k, v in classifier.backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[k], v), k


class _Classifier(nn.Module):
    """EPSANet with the authors' head: global average pool + 1000-way fc."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.backbone = EPSANet(depth, out_indices=(3, ))
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        return self.fc(self.backbone(x)[0].mean((2, 3)))


@pytest.mark.parametrize('depth,params,flops', [(50, '22.56', '3.62'),
                                                (101, '38.90', '6.82')])
def test_params_and_flops_match_the_paper(depth, params, flops):
    """mmengine's counter (multiply-adds of convs and the fc, as the paper
    counts) gives the authors' table to the printed digits."""
    info = get_model_complexity_info(
        _Classifier(depth).eval(),
        input_shape=(3, 224, 224),
        show_table=False,
        show_arch=False)
    assert f'{info["params"] / 1e6:.2f}' == params
    assert f'{info["flops"] / 1e9:.2f}' == flops


def test_missing_pretrained_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / 'checkpoints' / 'epsanet50-s_imagenet.pth'
    model = EPSANet(
        50, **TINY, init_cfg=dict(type='Pretrained', checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError,
                       match=r"pretrained checkpoint '.*epsanet50-s_imagenet"
                       r"\.pth' not found.*epsanet_to_mmdet\.py"):
        model.init_weights()
