# Copyright (c) mmepsa contributors. All rights reserved.
"""Eval-mode BN folded into the conv before it, on the fly: the same
outputs and gradients as conv then BN, a cache that follows every change of
the weights and statistics, and the plain modules where there is nothing to
fold (train-mode BN, other layer types)."""
import pytest
import torch
import torch.nn as nn

from mmepsa.models import EPSANet
from mmepsa.models.backbones.epsanet import PSAModule
from mmepsa.models.fast import fast_path
from mmepsa.models.fast.backbone import psa_forward
from mmepsa.models.fast.fold import conv_bn, run_folded
from tests.utils import TINY_BACKBONE

CL = torch.channels_last


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Statistics and affine parameters far from the identity, so that a
    BN skipped or applied twice shows."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _pair(bias: bool = False, dtype=torch.float64):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=bias).to(dtype)
    norm = _randomize_bn(nn.BatchNorm2d(8)).to(dtype).eval()
    return conv, norm


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('fmt', [torch.contiguous_format, CL])
def test_equals_conv_then_bn(bias, fmt):
    conv, norm = _pair(bias)
    x = torch.randn(
        2, 6, 9, 7, dtype=torch.float64).contiguous(memory_format=fmt)
    with torch.no_grad():
        out = conv_bn(conv, norm, x)
        torch.testing.assert_close(out, norm(conv(x)), rtol=1e-12, atol=1e-12)
    assert '_mmepsa_fold_cache' in conv.__dict__  # the folded path ran


def test_gradients_reach_conv_and_bn_parameters():
    """Eval-mode BN with trainable affine parameters (norm_eval=True): the
    folded weight is built with autograd, so every parameter gets the
    gradient it gets through the BN."""
    conv, norm = _pair(bias=True)
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    params = [x, conv.weight, conv.bias, norm.weight, norm.bias]
    folded = torch.autograd.grad(conv_bn(conv, norm, x), params, g)
    plain = torch.autograd.grad(norm(conv(x)), params, g)
    for a, b in zip(folded, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert '_mmepsa_fold_cache' not in conv.__dict__  # nothing cached


def test_cache_follows_changes():
    conv, norm = _pair()
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    opt = torch.optim.SGD(
        list(conv.parameters()) + list(norm.parameters()), lr=0.1)

    def check():
        with torch.no_grad():
            torch.testing.assert_close(
                conv_bn(conv, norm, x), norm(conv(x)), rtol=1e-12, atol=1e-12)

    check()
    norm.running_var.mul_(3)  # in place
    check()
    # an optimizer step on the conv and the BN's affine parameters
    conv_bn(conv, norm, x).square().mean().backward()
    opt.step()
    check()
    # a train-mode BN pass updates the statistics
    norm.train()
    norm(conv(x))
    norm.eval()
    check()
    norm.load_state_dict(
        _randomize_bn(nn.BatchNorm2d(8)).double().state_dict())
    check()
    norm.eps = 0.5
    check()


def test_plain_modules_where_there_is_nothing_to_fold():
    conv, norm = _pair()
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    # a train-mode BN uses and updates batch statistics
    norm.train()
    before = norm.running_mean.clone()
    conv_bn(conv, norm, x)
    assert not torch.equal(norm.running_mean, before)
    assert '_mmepsa_fold_cache' not in conv.__dict__
    # a BN without running statistics, another norm type
    for other in (nn.BatchNorm2d(8, track_running_stats=False).double(),
                  nn.GroupNorm(2, 8).double()):
        other.eval()
        torch.testing.assert_close(
            conv_bn(conv, other, x), other(conv(x)), rtol=0, atol=0)
    assert '_mmepsa_fold_cache' not in conv.__dict__


def test_folds_the_bn_revert_sync_batchnorm_makes():
    """mmengine's revert_sync_batchnorm (non-distributed runs of a SyncBN
    config) makes its own BN class: folded too; a BN subclass with a
    forward of its own is not."""
    from mmengine.model import revert_sync_batchnorm
    conv, norm = _pair()
    sync = nn.SyncBatchNorm(8).double()
    sync.load_state_dict(norm.state_dict())
    reverted = revert_sync_batchnorm(sync).eval()
    assert type(reverted) is not nn.BatchNorm2d
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            conv_bn(conv, reverted, x), norm(conv(x)), rtol=1e-12, atol=1e-12)
    assert '_mmepsa_fold_cache' in conv.__dict__

    class Doubled(nn.BatchNorm2d):

        def forward(self, x):
            return 2 * super().forward(x)

    del conv.__dict__['_mmepsa_fold_cache']
    doubled = Doubled(8).double().eval()
    doubled.load_state_dict(norm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            conv_bn(conv, doubled, x), 2 * norm(conv(x)))
    assert '_mmepsa_fold_cache' not in conv.__dict__


def test_cache_made_in_inference_mode_is_not_saved_for_backward():
    """A frozen conv (no trainable parameter) folded under
    torch.inference_mode, then run on an input that needs a gradient."""
    conv, norm = _pair()
    for p in list(conv.parameters()) + list(norm.parameters()):
        p.requires_grad_(False)
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    with torch.inference_mode():
        conv_bn(conv, norm, x)
    x.requires_grad_()
    grad, = torch.autograd.grad(conv_bn(conv, norm, x).sum(), x)
    ref, = torch.autograd.grad(norm(conv(x)).sum(), x)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-12)


def test_run_folded_sequential():
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.AvgPool2d(2), nn.Conv2d(4, 6, 1), _randomize_bn(nn.BatchNorm2d(6)),
        nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
        _randomize_bn(nn.BatchNorm2d(6))).double().eval()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            run_folded(seq, x), seq(x), rtol=1e-12, atol=1e-12)
    assert '_mmepsa_fold_cache' in seq[4].__dict__


@pytest.mark.parametrize('grad', [False, True])
def test_psa_module_folds_its_norm(grad):
    """psa_forward(psa, x, norm): the BN after the PSA module folded into
    the weighting of the branches (the attention is computed from the
    unscaled branches, so the BN cannot go into their convs)."""
    torch.manual_seed(0)
    psa = PSAModule(16, 16, conv_groups=(1, 2, 4, 4), se_ratio=4).double()
    norm = _randomize_bn(nn.BatchNorm2d(16)).double().eval()
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    x = x.contiguous(memory_format=CL).requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        with fast_path(True, autotune=False):
            out = psa_forward(psa, x, norm)
        ref = norm(psa(x))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    if grad:
        params = [x] + list(psa.parameters()) + [norm.weight, norm.bias]
        g = torch.randn_like(out)
        for a, b in zip(
                torch.autograd.grad(out, params, g),
                torch.autograd.grad(ref, params, g)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('cfg', [
    dict(),
    dict(deep_stem=True, avg_down=True),
    dict(frozen_stages=1, norm_eval=True),
])
def test_backbone_eval_and_norm_eval_training(cfg):
    """The whole backbone, folded and not: the same outputs in eval mode,
    and the same gradients in training with BN in eval mode (mmdet's
    detection setting), in float64."""
    torch.manual_seed(0)
    model = _randomize_bn(EPSANet(depth=50, **TINY_BACKBONE, **cfg)).double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        out = model(x)
        with fast_path(False):
            ref = model(x)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    if not cfg.get('norm_eval'):
        return
    model.train()

    def grads():
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        return {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.grad is not None
        }

    folded = grads()
    with fast_path(False):
        plain = grads()
    assert folded.keys() == plain.keys() and len(folded) > 0
    assert not any(
        n.startswith(('conv1', 'norm1', 'layer1.')) for n in folded)  # frozen
    for name in folded:
        torch.testing.assert_close(
            folded[name], plain[name], rtol=1e-8, atol=1e-12, msg=name)
