# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet backbone: shapes, ResNet-family options, bad arguments, parity
with the authors' formulation, checkpoint loading, params and FLOPs."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import get_model_complexity_info
from torch.nn.modules import GroupNorm

from mmepsa.analysis import compare_speed as cs
from mmepsa.models import EPSABlock, EPSANet, PSAModule
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
    assert [tuple(o.shape)
            for o in outs] == [(1, 256, 25, 33), (1, 512, 13, 17),
                               (1, 1024, 7, 9), (1, 2048, 4, 5)]


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
        50, conv_kernels=(3, 3, 5, 5), **dict(TINY, conv_groups=(1, 2, 2, 4)))
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
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                          lr=0.1)
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
        results.append(
            (outs, inp.grad, {n: p.grad
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


def test_stem_channels_none_is_base_channels():
    """As in mmdet's ResNet: stem_channels=None takes base_channels."""
    settings = dict(TINY, stem_channels=None, base_channels=32)
    model = EPSANet(50, **settings)
    assert model.stem_channels == 32 and model.conv1.out_channels == 32
    deep = EPSANet(50, deep_stem=True, **settings)
    assert deep.stem[-3].out_channels == 32


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
        torch.testing.assert_close(block, torch.full_like(block, (4 - j) / 4))


def _original_checkpoint(tmp_path,
                         depth_layers,
                         seed=0,
                         width=64,
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
            'state_dict':
            {f'module.{k}': v
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


def max_rel_diff(a, b) -> float:
    """max |a - b| / max |b| over pairs of tensors (the worst pair)."""
    return max(((x.detach() - y.detach()).abs().max() /
                y.detach().abs().max().clamp_min(1e-12)).item()
               for x, y in zip(a, b))


def run_benchmark_row(name: str, mode: str, x: torch.Tensor):
    """One step of a row of the benchmark (``compare_speed.BACKBONES``, the
    EPSANets holding the same random weights) in a mode of
    ``compare_speed.MODES``, as the benchmark runs it; training in float64
    (in float32 batch-statistics BN amplifies rounding until the original
    differs from itself run channels-last by ~1e-2 in gradients). Returns
    the outputs and, for training, the gradients by the original's
    parameter names (the benchmark wrappers' ``ref.``/``model.`` off)."""
    train, settings = cs.MODES[mode]
    model = cs.build_backbone(name, 50, 0, train, settings=settings)
    if train:
        model, x = model.double(), x.double()
    outs = cs.backbone_step(model, x, train, 'fp32')()
    if not train:
        return outs, None
    grads = {}
    for n, p in model.named_parameters():
        if p.grad is not None:
            for prefix in ('ref.', 'model.'):
                n = n[len(prefix):] if n.startswith(prefix) else n
            grads[n] = p.grad
    return outs, grads


@pytest.fixture(scope='module')
def original_steps():
    """The benchmark's ``original`` row (the authors' formulation, with
    ResNet's frozen_stages and norm_eval) on 1x3x64x64, run once per mode
    and kept: mode -> (input, outputs, gradients)."""
    cache = {}

    def get(mode: str):
        if mode not in cache:
            torch.manual_seed(0)
            x = torch.randn(1, 3, 64, 64)
            cache[mode] = (x, ) + run_benchmark_row('original', mode, x)
        return cache[mode]

    return get


@pytest.mark.parametrize('row,mode', [
    (row, mode) for mode in cs.MODES
    for row in ('mmepsa', 'mmepsa-untuned', 'mmepsa-plain', 'mmepsa-deploy')
    if mode == 'inference' or row not in cs.INFERENCE_ONLY
])
def test_benchmark_rows_match_the_original(row, mode, original_steps):
    """Each EPSANet row of the benchmark (the fast path as by default,
    untuned and off; deploy_model's, inference only) computes the authors'
    formulation, same weights and input: inference outputs to 1e-5 of the
    largest output; a training step (every BN training, or the detection
    setting frozen_stages=1, norm_eval=True) in float64, outputs to 1e-9
    and the gradients of the same parameters to 1e-6."""
    x, ref_outs, ref_grads = original_steps(mode)
    outs, grads = run_benchmark_row(row, mode, x)
    if mode == 'inference':
        assert max_rel_diff(outs, ref_outs) < 1e-5
        return
    assert max_rel_diff(outs, ref_outs) < 1e-9
    assert set(grads) == set(ref_grads) and grads
    keys = sorted(grads)
    assert max_rel_diff([grads[k] for k in keys], [ref_grads[k]
                                                   for k in keys]) < 1e-6


def test_loads_mmpretrain_classifier_checkpoint(tmp_path):
    from mmengine.registry import DefaultScope
    from mmpretrain.models import ImageClassifier

    # Other tests may leave mmdet as the default scope: build in mmpretrain's.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(type='EPSANet', depth=50, out_indices=(3, ), **TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=10,
                in_channels=512,
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
    with pytest.raises(
            FileNotFoundError,
            match=r"pretrained checkpoint '.*epsanet50-s_imagenet"
            r"\.pth' not found.*epsanet_to_mmdet\.py"):
        model.init_weights()
