# Copyright (c) mmepsa contributors. All rights reserved.
"""PSAConv2d's exact forms compute the grouped conv (outputs and gradients),
its autotuning picks one of them once per input key, can be switched off,
and stays out of tracing; EPSANet with any forced form equals the authors'
formulation. No timing is asserted."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmepsa.models import EPSANet, PSAModule
from mmepsa.models.layers import (PSAConv2d, autotune_choices,
                                  clear_autotune_choices, set_autotune)
from mmepsa.models.layers import psa_conv
from mmepsa.testing import RefEPSANet, RefPSA, randomize_
from mmepsa.utils import deploy_model
from tests.utils import assert_train_step_equal

CL = torch.channels_last


@pytest.fixture(autouse=True)
def fresh_autotune(monkeypatch):
    """Every test starts with no choices and the default switch."""
    monkeypatch.delenv('MMEPSA_PSA_AUTOTUNE', raising=False)
    set_autotune(None)
    clear_autotune_choices()
    yield
    set_autotune(None)
    clear_autotune_choices()


def make_conv(in_ch=32,
              out_ch=8,
              k=5,
              groups=8,
              stride=1,
              dilation=1,
              bias=False):
    torch.manual_seed(0)
    conv = PSAConv2d(in_ch,
                     out_ch,
                     k,
                     stride=stride,
                     padding=dilation * (k // 2),
                     dilation=dilation,
                     groups=groups,
                     bias=bias)
    with torch.no_grad():  # non-zero bias, so that a lost bias shows
        if bias:
            conv.bias.normal_()
    return conv


CONVS = [
    dict(),  # 4 in, 1 out per group: every form
    dict(in_ch=32, out_ch=8, k=9, groups=4),  # 8 in, 2 out per group
    dict(k=3, groups=2, stride=2, bias=True),
    dict(k=7, groups=4, dilation=2, bias=True),
    dict(k=3, groups=1),  # dense: grouped and other-format only
]


def test_forms_listed():
    assert make_conv().forms() == [('grouped', 1), ('other-format', 1),
                                   ('regroup', 2), ('regroup', 4),
                                   ('depthwise', 1)]
    assert make_conv(k=3, groups=1).forms() == [('grouped', 1),
                                                ('other-format', 1)]
    with pytest.raises(ValueError, match='is not one of'):
        make_conv(k=3, groups=1).forward_form(torch.rand(1, 32, 8, 8),
                                              ('depthwise', 1))


@pytest.mark.parametrize('kwargs', CONVS)
@pytest.mark.parametrize('fmt', [torch.contiguous_format, CL])
def test_every_form_is_the_grouped_conv(kwargs, fmt):
    """Outputs (same memory format as the input), input, weight and bias
    gradients of each form equal those of F.conv2d."""
    conv = make_conv(**kwargs)
    x = torch.randn(2, conv.in_channels, 13, 11).contiguous(memory_format=fmt)
    x.requires_grad_()
    expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding,
                        conv.dilation, conv.groups)
    g = torch.randn_like(expected)
    params = [x] + list(conv.parameters())
    expected_grads = torch.autograd.grad(expected, params, g)
    for form in conv.forms():
        out = conv.forward_form(x, form)
        assert out.is_contiguous(memory_format=fmt), form
        torch.testing.assert_close(out,
                                   expected,
                                   rtol=1e-5,
                                   atol=1e-5,
                                   msg=str(form))
        grads = torch.autograd.grad(out, params, g)
        for a, b in zip(grads, expected_grads):
            torch.testing.assert_close(a,
                                       b,
                                       rtol=1e-5,
                                       atol=1e-4,
                                       msg=str(form))


def test_forms_exact_in_float64():
    """In float64 the forms agree to 1e-12: they add the same products
    (plus exact zeros), only in another order."""
    conv = make_conv(**CONVS[1]).double()
    x = torch.randn(1, 32, 9, 9, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, None, 1, 4, 1, 4)
    for form in conv.forms():
        torch.testing.assert_close(conv.forward_form(x, form),
                                   expected,
                                   rtol=1e-12,
                                   atol=1e-12)


def test_autotune_chooses_once_per_key(monkeypatch):
    monkeypatch.setattr(PSAConv2d, 'min_tuned_macs', 0)
    timed = []
    real = PSAConv2d._time_forms

    def spy(self, forms, *args):
        timed.extend(forms)
        return real(self, forms, *args)

    monkeypatch.setattr(PSAConv2d, '_time_forms', spy)
    conv = make_conv()
    x = torch.randn(2, 32, 16, 16).contiguous(memory_format=CL)
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, None, 1, 2, 1, 8)
        out = conv(x)
        assert timed == conv.forms()  # each form timed once
        assert out.is_contiguous(memory_format=CL)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        conv(x)
        conv(torch.randn(2, 32, 17, 16).contiguous(memory_format=CL))
    assert len(timed) == len(conv.forms())  # same key: no new timing
    (key, form), = autotune_choices().items()
    assert form in conv.forms()
    assert CL in key and torch.float32 in key
    # another memory format, or gradients needed (opt-in): new keys, timed
    with torch.no_grad():
        conv(torch.randn(2, 32, 16, 16))
    conv(x.requires_grad_()).sum().backward()
    assert len(autotune_choices()) == 2  # by default not in training
    set_autotune(True)
    conv(x).sum().backward()
    assert len(autotune_choices()) == 3
    assert conv.weight.grad is not None
    assert len(timed) == 3 * len(conv.forms())


def test_chooses_the_fastest_clearly_faster_form(monkeypatch):
    """The fastest form wins when it beats the grouped conv by more than
    min_gain; a near tie keeps the grouped conv."""
    monkeypatch.setattr(PSAConv2d, 'min_tuned_macs', 0)
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    for times, expected in (([1.0, 0.9, 0.5, 0.7, 0.8], ('regroup', 2)),
                            ([1.0, 0.97, 1.2, 1.1, 0.99], ('grouped', 1))):
        monkeypatch.setattr(PSAConv2d,
                            '_time_forms',
                            lambda self, forms, *a, times=times: times)
        clear_autotune_choices()
        with torch.no_grad():
            conv(x)
        assert list(autotune_choices().values()) == [expected]


def test_small_convs_not_timed():
    conv = make_conv()
    with torch.no_grad():
        conv(torch.randn(1, 32, 8, 8))
    assert autotune_choices() == {}


def test_switches(monkeypatch):
    monkeypatch.setattr(PSAConv2d, 'min_tuned_macs', 0)
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    set_autotune(False)
    conv(x)
    assert autotune_choices() == {}
    set_autotune(None)
    monkeypatch.setenv('MMEPSA_PSA_AUTOTUNE', '0')
    conv(x)
    assert autotune_choices() == {}
    monkeypatch.setenv('MMEPSA_PSA_AUTOTUNE', 'yes')
    with pytest.raises(ValueError, match="must be '0' or '1'"):
        conv(x)
    monkeypatch.setenv('MMEPSA_PSA_AUTOTUNE', '1')
    conv(x)
    assert len(autotune_choices()) == 1
    with pytest.raises(TypeError, match='True, False or None'):
        set_autotune('on')


def test_default_cpu_inference_only(monkeypatch):
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert psa_conv._autotune_enabled(cpu, backward=False)
    assert not psa_conv._autotune_enabled(cpu, backward=True)
    assert not psa_conv._autotune_enabled(cuda, backward=False)
    monkeypatch.setenv('MMEPSA_PSA_AUTOTUNE', '1')
    assert psa_conv._autotune_enabled(cuda, backward=True)


def test_tracing_runs_the_plain_conv(monkeypatch):
    monkeypatch.setattr(PSAConv2d, 'min_tuned_macs', 0)
    conv = make_conv().eval()
    x = torch.randn(1, 32, 8, 8)
    traced = torch.jit.trace(conv, (x, ), check_trace=False)
    assert autotune_choices() == {}
    nodes = [n.kind() for n in traced.graph.nodes()]
    assert 'aten::_convolution' in nodes and 'aten::sum' not in nodes
    torch.testing.assert_close(traced(x), conv(x), rtol=1e-5, atol=1e-5)


def test_inference_weight_cache_follows_the_weight(monkeypatch):
    """The prepared weight of a form is reused in inference and rebuilt
    when the weight changes (an optimizer step, a load, BN folding)."""
    monkeypatch.setattr(PSAConv2d, '_choose', lambda self, x, fmt:
                        ('regroup', 2))
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        conv(x)
        conv.weight.mul_(2)
        out = conv(x)
    torch.testing.assert_close(out,
                               F.conv2d(x, conv.weight, None, 1, 2, 1, 8),
                               rtol=1e-5,
                               atol=1e-5)


def test_psa_module_state_dict_unchanged():
    psa = PSAModule(64, 64, stride=2)
    ref = RefPSA(64, 64, stride=2)
    assert {
        k: v.shape
        for k, v in psa.state_dict().items()
    } == {
        k: v.shape
        for k, v in ref.state_dict().items()
    }
    assert all(
        type(getattr(psa, f'conv_{i}')) is PSAConv2d for i in range(1, 5))
    # another conv type is built as configured
    other = PSAModule(64, 64, conv_cfg=dict(type='Conv2dAdaptivePadding'))
    assert type(other.conv_1).__name__ == 'Conv2dAdaptivePadding'


def test_psa_module_inference_output_is_the_training_formulation():
    psa = PSAModule(64, 64)
    ref = RefPSA(64, 64)
    ref.load_state_dict(psa.state_dict())
    for fmt in (torch.contiguous_format, CL):
        x = torch.randn(2, 64, 12, 10).contiguous(memory_format=fmt)
        with torch.no_grad():
            out = psa(x)
        assert out.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(psa(x), out, rtol=1e-5, atol=1e-5)


def backbone_pair(**kwargs):
    ref = randomize_(RefEPSANet((2, 1, 1, 1)))
    ours = EPSANet(50, norm_eval=False, init_cfg=None, **kwargs)
    # the reference's depths (2, 1, 1, 1): keep the first blocks of each
    # stage (ResLayer cannot be sliced: it is built from block arguments)
    for i, blocks in zip((1, 2, 3, 4), (2, 1, 1, 1)):
        layer = getattr(ours, f'layer{i}')
        setattr(ours, f'layer{i}', nn.Sequential(*list(layer)[:blocks]))
    ours.load_state_dict({
        k: v
        for k, v in ref.state_dict().items() if not k.startswith('fc.')
    })
    return ref, ours


@pytest.mark.parametrize('form', [('grouped', 1), ('other-format', 1),
                                  ('regroup', 2), ('regroup', 4),
                                  ('depthwise', 1)])
def test_backbone_with_each_form_equals_the_original(form, monkeypatch):
    """Every PSA conv forced to one form (where it has it): inference in
    float32 channels-last, a training step in float64, and the deployed
    (BN-folded) model, against the authors' formulation."""
    monkeypatch.setattr(
        PSAConv2d, '_choose', lambda self, x, fmt: form
        if form in self.forms() else ('grouped', 1))
    set_autotune(True)  # the forms in the training step too
    ref, ours = backbone_pair()
    x = torch.randn(2, 3, 64, 48)
    ref.eval(), ours.eval()
    with torch.no_grad():
        expected = ref.stages(x)
        outs = ours(x)
        folded = deploy_model(copy.deepcopy(ours))(x)
    for a, b, c in zip(outs, expected, folded):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-5)

    assert_train_step_equal(ref, ours, x)
