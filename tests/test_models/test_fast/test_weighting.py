# Copyright (c) mmepsa contributors. All rights reserved.
"""The fused PSA weighting (one batched SE pass as matrix products, each
weighted branch written into its slice of the output, an eval-mode BN
folded in) gives the plain PSAModule's outputs and gradients, in float64,
and is differentiable twice."""
import pytest
import torch
import torch.nn as nn

from mmepsa.models import PSAModule
from mmepsa.models.fast import fast_path
from mmepsa.models.fast.backbone import psa_forward
from mmepsa.models.fast.weighting import se_attention


def _psa(channels=16, groups=(1, 2, 4, 4), se_ratio=4):
    torch.manual_seed(0)
    return PSAModule(
        channels, channels, conv_groups=groups, se_ratio=se_ratio).double()


def _bn(channels=16):
    norm = nn.BatchNorm2d(channels).double().eval()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 1.5)
    return norm


@pytest.mark.parametrize('memory_format',
                         [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize('with_bn', [False, True])
def test_fused_equals_the_plain_module(memory_format, with_bn):
    """Outputs and gradients (input, convs, SE, the folded eval-mode BN's
    weight and bias) of ``psa_forward`` equal ``norm(psa(x))``."""
    psa = _psa()
    norm = _bn() if with_bn else nn.Identity()
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    x = x.contiguous(memory_format=memory_format).requires_grad_()
    params = [x] + list(psa.parameters()) + list(norm.parameters())
    torch.manual_seed(1)
    grad = torch.randn(2, 16, 9, 7, dtype=torch.float64)

    def run(fused):
        with fast_path(True, autotune=False):
            out = psa_forward(psa, x, norm) if fused else norm(psa(x))
        return out, torch.autograd.grad(out, params, grad)

    out, grads = run(True)
    ref, ref_grads = run(False)
    assert out.is_contiguous(memory_format=memory_format)
    assert type(out.grad_fn).__name__ == '_WeightedConcatBackward'
    assert type(ref.grad_fn).__name__ != '_WeightedConcatBackward'
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(params)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # Branches that need no gradient (frozen convs, an input that needs
    # none) while the SE module trains: the SE gradients still agree.
    for i in range(1, 5):
        getattr(psa, f'conv_{i}').requires_grad_(False)
    x, params = x.detach(), list(psa.se.parameters())
    out, grads = run(True)
    ref, ref_grads = run(False)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_double_backward():
    """The fused weighting's backward is differentiable: gradcheck and
    gradgradcheck pass through it (float64)."""
    psa = _psa(8, (1, 2, 2, 2), se_ratio=2)
    x = torch.randn(1, 8, 4, 3, dtype=torch.float64, requires_grad=True)

    def fused(x):
        return psa_forward(psa, x, nn.Identity())

    assert torch.autograd.gradcheck(fused, (x, ))
    assert torch.autograd.gradgradcheck(fused, (x, ))


def test_se_attention_with_other_conv_types():
    """The SE pass runs as matrix products for plain convs, and through
    the modules otherwise (here a conv subclass): the same attention."""
    psa = _psa()
    feats = [torch.randn(2, 4, 5, 5, dtype=torch.float64) for _ in range(4)]
    fast = se_attention(psa.se, feats)

    class Conv(nn.Conv2d):
        pass

    for name in ('fc1', 'fc2'):
        plain = getattr(psa.se, name)
        conv = Conv(plain.in_channels, plain.out_channels, 1).double()
        conv.load_state_dict(plain.state_dict())
        setattr(psa.se, name, conv)
    slow = se_attention(psa.se, feats)
    ref = torch.stack([psa.se(f) for f in feats]).softmax(0)
    assert fast.shape == (4, 2, 4, 1, 1)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(slow, ref, rtol=1e-12, atol=1e-12)
