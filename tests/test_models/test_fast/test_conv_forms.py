# Copyright (c) mmepsa contributors. All rights reserved.
"""TunedConv's exact forms compute the grouped conv (outputs and gradients),
its autotuning picks one of them once per input key within its time budget
and follows the switch; EPSANet with any forced form equals the authors'
formulation. No timing is asserted."""
import copy
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmepsa.models import EPSANet
from mmepsa.models.fast import TunedConv
from mmepsa.models.fast import choices as autotune_choices
from mmepsa.models.fast import clear_choices as clear_autotune_choices
from mmepsa.models.fast import conv_forms, fast_path
from mmepsa.models.fast.conv_forms import PARTS
from mmepsa.testing import RefEPSANet, randomize_
from mmepsa.utils import deploy_model
from tests.utils import assert_train_step_equal

CL = torch.channels_last


@pytest.fixture(autouse=True)
def fresh_autotune():
    """Every test starts with no choices and the autotuner on, on every
    stack (by default it is on only where measured to win)."""
    clear_autotune_choices()
    with fast_path(True, autotune=True):
        yield
    clear_autotune_choices()


def make_conv(in_ch=32,
              out_ch=8,
              k=5,
              groups=8,
              stride=1,
              dilation=1,
              bias=False,
              dtype=torch.float32):
    torch.manual_seed(0)
    conv = nn.Conv2d(
        in_ch,
        out_ch,
        k,
        stride=stride,
        padding=dilation * (k // 2),
        dilation=dilation,
        groups=groups,
        bias=bias).to(dtype)
    with torch.no_grad():  # non-zero bias, so that a lost bias shows
        if bias:
            conv.bias.normal_()
    return TunedConv(conv)


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
                                   ('depthwise', 1), ('polyphase', 1)]
    # polyphase: stride 1 or 2, odd kernel, padding k // 2, no dilation
    assert ('polyphase', 1) in make_conv(k=3, groups=2, stride=2).forms()
    for kwargs in (dict(k=7, groups=4, dilation=2), dict(k=1, groups=2),
                   dict(k=5, groups=2, stride=3)):
        assert ('polyphase', 1) not in make_conv(**kwargs).forms(), kwargs
    assert ('polyphase',
            1) not in TunedConv(nn.Conv2d(8, 8, 4, padding=2,
                                          groups=2)).forms()
    assert make_conv(
        k=3, groups=1).forms() == [('grouped', 1), ('other-format', 1)]
    with pytest.raises(ValueError, match='is not one of'):
        make_conv(
            k=3,
            groups=1).forward_form(torch.rand(1, 32, 8, 8), ('depthwise', 1))
    # the gradients: only the forms the benchmark's record chose for them
    conv = make_conv()
    grouped = ('grouped', 1)
    for part, form in (('input', ('depthwise', 1)),
                       ('input', ('polyphase', 1)), ('input', ('regroup', 4)),
                       ('weight', ('depthwise', 1))):
        plan = tuple(form if p == part else grouped for p in PARTS)
        with pytest.raises(ValueError, match=f'{part} form .* not one of'):
            conv.forward_plan(torch.rand(1, 32, 8, 8), plan)


def assert_each_is_the_conv(conv, x, variants, run, rtol, atol):
    """``run(variant)`` for each variant: an output in ``x``'s memory format
    whose value and gradients (input, weight, bias) equal F.conv2d's."""
    x.requires_grad_()
    fmt = CL if not x.is_contiguous() else torch.contiguous_format
    expected = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding,
                        conv.dilation, conv.groups)
    g = torch.randn_like(expected)
    params = [x] + list(conv.parameters())
    expected_grads = torch.autograd.grad(expected, params, g)
    for variant in variants:
        out = run(variant)
        assert out.is_contiguous(memory_format=fmt), variant
        torch.testing.assert_close(
            out, expected, rtol=rtol, atol=atol, msg=str(variant))
        grads = torch.autograd.grad(out, params, g)
        for a, b in zip(grads, expected_grads):
            torch.testing.assert_close(
                a, b, rtol=rtol, atol=10 * atol, msg=str(variant))


@pytest.mark.parametrize('kwargs', CONVS)
@pytest.mark.parametrize('fmt', [torch.contiguous_format, CL])
def test_every_form_is_the_grouped_conv(kwargs, fmt):
    """Outputs (same memory format as the input), input, weight and bias
    gradients of each form equal those of F.conv2d."""
    conv = make_conv(**kwargs)
    x = torch.randn(2, conv.in_channels, 13, 11).contiguous(memory_format=fmt)
    assert_each_is_the_conv(conv, x, conv.forms(),
                            lambda form: conv.forward_form(x, form), 1e-5,
                            1e-5)


def test_forms_exact_in_float64():
    """In float64 the forms agree to 1e-12: they add the same products
    (plus exact zeros), only in another order."""
    conv = make_conv(**CONVS[1], dtype=torch.float64)
    x = torch.randn(1, 32, 9, 9, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, None, 1, 4, 1, 4)
    for form in conv.forms():
        torch.testing.assert_close(
            conv.forward_form(x, form), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('fmt', [torch.contiguous_format, CL])
def test_depthwise_form_has_one_output_per_input_channel(fmt, monkeypatch):
    """With 2 outputs per input channel (8 in, 2 out per group), the
    depthwise form runs 2 depthwise convs with one output per input channel
    (oneDNN's fast kernel)."""
    conv = make_conv(**CONVS[1])  # 32 in, 8 out, 4 groups
    x = torch.randn(2, 32, 9, 9).contiguous(memory_format=fmt)
    calls = []
    conv2d = F.conv2d

    def spy(inp, weight, *args):
        calls.append((inp.shape[1], tuple(weight.shape[:2]), args[-1],
                      inp.is_contiguous(memory_format=fmt)))
        return conv2d(inp, weight, *args)

    monkeypatch.setattr(conv_forms.F, 'conv2d', spy)
    conv.forward_form(x, ('depthwise', 1))
    assert calls == [(32, (32, 1), 32, True)] * 2


def test_time_forms_times_each_form_of_a_part():
    """Each part times its own forms: every form for the forward pass,
    those the benchmark's record chose for each gradient."""
    conv = make_conv()
    x = torch.randn(1, 32, 12, 12)
    grouped, other, regroup2 = conv.forms()[:3]
    expected = dict(
        forward=conv.forms(),
        input=[grouped, other, regroup2],
        weight=[f for f in conv.forms() if f != ('depthwise', 1)])
    for part in PARTS:
        times = conv.time_forms(x, part)
        assert list(times) == expected[part], part
        assert all(t > 0 for t in times.values()), part
    # the polyphase weight gradient is not used in half precision
    assert list(conv.time_forms(x.bfloat16(),
                                'weight')) == expected['weight'][:-1]
    with pytest.raises(ValueError, match='part must be one of'):
        conv.time_forms(x, 'backward')
    with pytest.raises(ValueError, match=r'shape \(N, 32, H, W\)'):
        conv.time_forms(torch.randn(1, 8, 4, 4))


def test_autotune_chooses_once_per_key(monkeypatch):
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    timed = []
    real = TunedConv._time_forms

    def spy(self, forms, x, fmt, part='forward'):
        timed.append((tuple(forms), part))
        return real(self, forms, x, fmt, part)

    monkeypatch.setattr(TunedConv, '_time_forms', spy)
    conv = make_conv()
    forms = tuple(conv.forms())
    x = torch.randn(2, 32, 16, 16).contiguous(memory_format=CL)
    part_forms = [(tuple(conv._part_forms(part)), part) for part in PARTS]
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, None, 1, 2, 1, 8)
        out = conv(x)
        assert timed == [(forms, 'forward')]  # the forms timed once
        assert out.is_contiguous(memory_format=CL)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        conv(x)
        conv(torch.randn(2, 32, 17, 16).contiguous(memory_format=CL))
    assert len(timed) == 1  # same key: no new timing
    (key, form), = autotune_choices().items()
    assert form in conv.forms()
    assert CL in key and torch.float32 in key
    # another memory format, or gradients needed: new keys, timed
    with torch.no_grad():
        conv(torch.randn(2, 32, 16, 16))
    assert len(autotune_choices()) == 2
    conv(x.requires_grad_()).sum().backward()
    assert conv.weight.grad is not None
    choices = autotune_choices()
    assert len(choices) == 3
    # a training step: the forward pass, the input gradient and the weight
    # gradient are timed apart, and the key holds a plan of three forms
    assert timed[2:] == part_forms
    plan, = [c for c in choices.values() if isinstance(c[0], tuple)]
    assert len(plan) == 3 and all(f in conv.forms() for f in plan)
    conv(x).sum().backward()
    assert len(timed) == 5


def fake_timings(monkeypatch, seconds: dict) -> dict:
    """Make every timing of a form return ``seconds[form]``; returns the
    count of timed runs per form, as they happen."""
    runs = {f: 0 for f in seconds}

    def fake_timer(self, form, part, x, fmt):

        def run():
            runs[form] += 1
            return seconds[form]

        return run

    monkeypatch.setattr(TunedConv, '_timer', fake_timer)
    return runs


def test_slow_forms_are_not_timed_again(monkeypatch):
    """A form more than max_slowdown times slower than the fastest one
    runs once (the warm-up) and is not chosen; the others run
    1 + timing_rounds times."""
    conv = make_conv()
    seconds = dict(zip(conv.forms(), (1.0, 9.0, 0.8, 1.5, 5.0, 1.2)))
    runs = fake_timings(monkeypatch, seconds)
    monkeypatch.setattr(TunedConv, 'max_tuning_cost', 1000)
    times = conv._time_forms(conv.forms(), torch.rand(1, 32, 8, 8),
                             torch.contiguous_format)
    assert times == [seconds[f] for f in conv.forms()]
    rounds = 1 + TunedConv.timing_rounds
    assert runs == {
        ('grouped', 1): rounds,
        ('other-format', 1): 1,
        ('regroup', 2): rounds,
        ('regroup', 4): rounds,
        ('depthwise', 1): 1,
        ('polyphase', 1): rounds
    }


def test_chooses_the_fastest_clearly_faster_form(monkeypatch):
    """The fastest form wins when it beats the grouped conv by more than
    min_gain; a near tie keeps the grouped conv."""
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    for times, expected in (([1.0, 0.9, 0.5, 0.7, 0.8, 0.6], ('regroup', 2)),
                            ([1.0, 0.9, 0.5, 0.7, 0.8, 0.4], ('polyphase', 1)),
                            ([1.0, 0.97, 1.2, 1.1, 0.99,
                              1.3], ('grouped', 1))):
        monkeypatch.setattr(
            TunedConv,
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


def test_timing_stops_at_its_budget(monkeypatch):
    """A part stops timing forms once it has spent max_tuning_cost grouped
    conv runs; forms not run are not chosen; a form over ``hopeless``
    times the grouped conv is not timed again in this process."""
    conv = make_conv()
    forms = conv.forms()
    seconds = dict(zip(forms, (1.0, 5.0, 1.0, 1.0, 0.5, 0.1)))
    runs = fake_timings(monkeypatch, seconds)
    monkeypatch.setattr(TunedConv, 'max_tuning_cost', 7)
    x = torch.rand(1, 32, 8, 8)
    times = conv._time_forms(forms, x, torch.contiguous_format)
    # warm-up: grouped 1 + other-format 5 + regroup-2 1 = 7 s, regroup-4 1
    # more: over budget, so depthwise and polyphase never run
    assert [runs[f] for f in forms] == [1, 1, 1, 1, 0, 0]
    assert times[-2:] == [float('inf')] * 2
    assert conv._fastest(dict(zip(forms, times))) == ('grouped', 1)
    # other-format was 5x the grouped conv: hopeless from now on
    monkeypatch.setattr(TunedConv, 'max_tuning_cost', 1000)
    conv._time_forms(forms, x, torch.contiguous_format)
    assert runs[('other-format', 1)] == 1
    assert runs[('polyphase', 1)] == 1 + TunedConv.timing_rounds
    # ... for that part, memory format and input size only
    conv._time_forms(forms, x, torch.contiguous_format, 'input')
    assert runs[('other-format', 1)] == 2
    conv._time_forms(forms, torch.rand(4, 32, 16, 16), torch.contiguous_format)
    assert runs[('other-format', 1)] == 3
    clear_autotune_choices()  # forgets it
    conv._time_forms(forms, x, torch.contiguous_format)
    assert runs[('other-format', 1)] == 4


def test_follows_the_switch(monkeypatch):
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    with fast_path(True, autotune=False):
        out = conv(x)
    assert autotune_choices() == {}
    torch.testing.assert_close(out, F.conv2d(x, conv.weight, None, 1, 2, 1, 8))
    conv(x)  # the fixture's autotune=True
    assert len(autotune_choices()) == 1


@pytest.mark.parametrize('kwargs', CONVS)
@pytest.mark.parametrize('fmt', [torch.contiguous_format, CL])
def test_every_plan_is_the_grouped_conv(kwargs, fmt):
    """Forward pass, input gradient and weight gradient each in any form of
    that part: the output and every gradient equal F.conv2d's to 1e-12 in
    float64 (the same products, summed in another order)."""
    conv = make_conv(**kwargs, dtype=torch.float64)
    x = torch.randn(2, conv.in_channels, 13, 11, dtype=torch.float64)
    x = x.contiguous(memory_format=fmt)
    plans = itertools.product(*(conv._part_forms(part) for part in PARTS))
    assert_each_is_the_conv(conv, x, plans,
                            lambda plan: conv.forward_plan(x, plan), 1e-12,
                            1e-13)
    with pytest.raises(ValueError, match='is not one of'):
        conv.forward_plan(x, (('regroup', 8), ) * 3)


def fake_part_times(forms, part):
    """Times that make depthwise the fastest forward form, regroup-2 the
    fastest for the input gradient and regroup-4 for the weight's."""
    fastest = dict(
        forward=('depthwise', 1), input=('regroup', 2),
        weight=('regroup', 4))[part]
    return [0.1 if f == fastest else 1.0 for f in forms]


@pytest.fixture
def planned(monkeypatch):
    """A conv whose timings (:func:`fake_part_times`) choose a different
    form for each part of a training step, and a channels-last input that
    needs its gradient."""
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    monkeypatch.setattr(
        TunedConv,
        '_time_forms',
        lambda self, forms, x, fmt, part='forward': fake_part_times(
            forms, part))
    x = torch.randn(2, 32, 12, 12).contiguous(memory_format=CL)
    return make_conv(), x.requires_grad_()


def test_training_step_runs_each_part_in_its_form(planned, monkeypatch):
    conv, x = planned
    out = conv(x)
    assert type(out.grad_fn).__name__ == '_PlannedConvBackward'
    plan = (('depthwise', 1), ('regroup', 2), ('regroup', 4))
    assert list(autotune_choices().values()) == [plan]
    expected = F.conv2d(x, conv.weight, None, 1, 2, 1, 8)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(
            torch.autograd.grad(out, (x, conv.weight), g),
            torch.autograd.grad(expected, (x, conv.weight), g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    # an all-grouped plan is the plain conv, with autograd's own backward
    clear_autotune_choices()
    monkeypatch.setattr(TunedConv, '_time_forms',
                        lambda self, forms, *a: [1.0] * len(forms))
    assert type(conv(x).grad_fn).__name__ == 'ConvolutionBackward0'


@pytest.mark.parametrize('fastest', [None, ('polyphase', 1)])
def test_training_plan_under_bf16_autocast(planned, fastest, monkeypatch):
    """Under autocast the plan runs on bfloat16 input and weight (as
    autocast casts a conv's) and the gradients come back in the
    parameters' and the input's float32; the mixed plan of ``planned``,
    or the polyphase form wherever it is offered."""
    conv, x = planned
    if fastest is not None:
        monkeypatch.setattr(
            TunedConv,
            '_time_forms',
            lambda self, forms, x, fmt, part='forward':
            [0.1 if f == fastest else 1.0 for f in forms])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = conv(x)
        expected = F.conv2d(x, conv.weight, None, 1, 2, 1, 8)
    assert out.dtype == expected.dtype == torch.bfloat16
    assert type(out.grad_fn).__name__ == '_PlannedConvBackward'
    (key, plan), = autotune_choices().items()
    assert torch.bfloat16 in key
    if fastest is not None:  # not for the input gradient, nor for the
        # weight gradient in half precision
        assert plan == (fastest, ('grouped', 1), ('grouped', 1))
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, conv.weight), g)
    assert [t.dtype for t in grads] == [torch.float32, torch.float32]
    for a, b in zip(grads, torch.autograd.grad(expected, (x, conv.weight), g)):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=5e-2)


def test_inference_weight_cache_follows_the_weight(monkeypatch):
    """The prepared weight of a form is reused in inference and rebuilt
    when the weight changes (an optimizer step, a load, BN folding)."""
    monkeypatch.setattr(TunedConv, '_choose', lambda self, x, fmt:
                        ('regroup', 2))
    conv = make_conv()
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        conv(x)
        conv.weight.mul_(2)
        out = conv(x)
    torch.testing.assert_close(
        out, F.conv2d(x, conv.weight, None, 1, 2, 1, 8), rtol=1e-5, atol=1e-5)


def backbone_pair(**kwargs):
    ref = randomize_(RefEPSANet((2, 1, 1, 1)))
    ours = EPSANet(50, norm_eval=False, init_cfg=None, **kwargs)
    # the reference's depths (2, 1, 1, 1): keep the first blocks of each
    # stage (ResLayer cannot be sliced: it is built from block arguments)
    for i, blocks in zip((1, 2, 3, 4), (2, 1, 1, 1)):
        layer = getattr(ours, f'layer{i}')
        setattr(ours, f'layer{i}', nn.Sequential(*list(layer)[:blocks]))
    ours.load_state_dict(
        {k: v
         for k, v in ref.state_dict().items() if not k.startswith('fc.')})
    return ref, ours


MIXED_PLAN = (('depthwise', 1), ('regroup', 2), ('regroup', 4))


@pytest.mark.parametrize('form', [('grouped', 1), ('other-format', 1),
                                  ('regroup', 2), ('regroup', 4),
                                  ('depthwise', 1),
                                  ('polyphase', 1), MIXED_PLAN])
def test_backbone_with_each_form_equals_the_original(form, monkeypatch):
    """Every PSA conv forced to one form for each part (where it has it for
    that part), or to a plan of three: inference in float32 channels-last,
    a training step in float64, and the deployed (BN-folded) model, against
    the authors' formulation."""

    def choose(self, x, fmt):
        plan = tuple(
            f if f in self._part_forms(part) else ('grouped', 1)
            for f, part in zip(form if form == MIXED_PLAN else (form, ) *
                               3, PARTS))
        # the plan's forward form in inference
        return plan if torch.is_grad_enabled() else plan[0]

    monkeypatch.setattr(TunedConv, '_choose', choose)
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
