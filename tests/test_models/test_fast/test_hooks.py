# Copyright (c) mmepsa contributors. All rights reserved.
"""Hooks on the backbone and on its convs leave the fast path engaged, and
fire: the demo's bf16 training step (CPUBF16OptimWrapper hooks the backbone
and its strided convs) runs the fast path, and a hooked conv runs as itself,
with the plain model's results. What runs is asserted, not its speed."""
import torch

from mmepsa.engine.optim import cpu_bf16_optim_wrapper as wrapper_module
from mmepsa.models import EPSANet
from mmepsa.models.fast import fast_path
from mmepsa.models.fast.switch import measured_win
from mmepsa.testing import randomize_
from tests.utils import TINY_BACKBONE as TINY


class Detectorish(torch.nn.Module):
    """What the wrapper hooks: a model with a ``backbone``, here the demo
    config's (trained from scratch: BN in training mode)."""

    def __init__(self):
        super().__init__()
        self.backbone = EPSANet(
            50, norm_eval=False, frozen_stages=-1, init_cfg=None, **TINY)


def test_engaged_in_the_demos_bf16_training_step(ran, monkeypatch):
    """The demo's step: train mode, deterministic algorithms (its
    ``randomness``), CPUBF16OptimWrapper's autocast and float32 hooks. The
    fast path runs (channels-last where measured to win), and the wrapper's
    hook on each strided conv still runs it in float32 where its input is
    narrower than its stride (layer3 and layer4 on an 8-px input)."""
    monkeypatch.setattr(wrapper_module, 'cpu_bf16_supported', lambda: True)
    entered = []
    enter_float32 = wrapper_module._enter_float32

    def spy(module, args):
        result = enter_float32(module, args)
        if result is not None:
            entered.append(module)
        return result

    monkeypatch.setattr(wrapper_module, '_enter_float32', spy)
    model = Detectorish().train()
    wrapper = wrapper_module.CPUBF16OptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with wrapper.optim_context(model):
            outs = model.backbone(torch.rand(2, 3, 8, 8))
    finally:
        torch.use_deterministic_algorithms(deterministic)
    sum(out.mean() for out in outs).backward()
    assert len(ran) == 1
    assert ran[0].is_contiguous(memory_format=torch.channels_last) == \
        measured_win(torch.device('cpu'))
    assert all(out.dtype == torch.float32 for out in outs)
    branches = [
        getattr(model.backbone, layer)[0].conv2.get_submodule(f'conv_{i}')
        for layer in ('layer3', 'layer4') for i in range(1, 5)
    ]
    assert entered == branches
    assert all(p.grad is not None for p in model.parameters())


def test_hooked_convs_run_as_themselves(ran):
    """A hook on the backbone, a PSA branch conv, a block's first conv (its
    BN folded in eval mode) and a shortcut conv: the fast path still runs,
    each hook fires once per forward, and outputs and gradients (float64)
    equal the plain model's with the same hooks. A hook on an SE conv (the
    fast path runs the SE module as matrix products) gets the plain
    model."""
    torch.manual_seed(0)
    model = randomize_(EPSANet(50, **TINY)).double()
    calls = []

    def double_output(module, args, out):
        calls.append(module)
        return out * 2

    hooked = (model.layer2[0].conv2.conv_3, model.layer1[1].conv1,
              model.layer3[0].downsample[0])
    handles = [m.register_forward_hook(double_output) for m in hooked]
    handles.append(
        model.register_forward_pre_hook(lambda m, args: calls.append(m)))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)

    def step(train):
        model.train(train)
        model.zero_grad()
        outs = model(x)
        if not train:
            return outs, {}
        sum((o * o.detach().sign()).mean() for o in outs).backward()
        return outs, {n: p.grad.clone() for n, p in model.named_parameters()}

    for train in (True, False):
        with fast_path(True, autotune=False):
            outs, grads = step(train)
        assert len(calls) == 4
        calls.clear()
        with fast_path(False):
            ref_outs, ref_grads = step(train)
        calls.clear()
        for a, b in zip(outs, ref_outs):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        for name in ref_grads:
            torch.testing.assert_close(
                grads[name], ref_grads[name], rtol=1e-8, atol=1e-10)
    assert len(ran) == 2
    handles.append(
        model.layer2[0].conv2.se.fc1.register_forward_hook(lambda *args: None))
    with torch.no_grad():
        model(x)
    assert len(ran) == 2
    for handle in handles:
        handle.remove()
