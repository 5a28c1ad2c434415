# Copyright (c) mmepsa contributors. All rights reserved.
"""CPUBF16OptimWrapper: bfloat16 autocast on CPU for the backbone and neck
(or the whole forward), float32 parameters, a registered name, a state dict
round trip, and a clear error on a CPU without bfloat16; --amp selects it on
a CPU."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import OPTIM_WRAPPERS

import mmepsa  # noqa: F401  (registers the wrapper)
from mmepsa.engine import CPUBF16OptimWrapper, use_amp
from mmepsa.engine.optim import cpu_bf16_optim_wrapper as wrapper_module


@pytest.fixture
def any_cpu(monkeypatch):
    """What the wrapper does does not depend on the CPU's bfloat16
    instructions, only how fast it runs (torch computes bfloat16 without
    them, emulated): its training tests run on any CPU."""
    monkeypatch.setattr(wrapper_module, 'cpu_bf16_supported', lambda: True)


def autocast_dtype():
    """The dtype CPU autocast gives a matrix product here: float32 when
    autocast is off (the same on every torch version, unlike torch's
    autocast query functions)."""
    return (torch.ones(1, 1) @ torch.ones(1, 1)).dtype


class Recorder(nn.Module):
    """A conv that records the autocast state its forward ran under."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.seen = []

    def forward(self, x):
        dtype = autocast_dtype()
        self.seen.append((dtype != torch.float32, dtype, x.dtype))
        return self.conv(x)


class Detectorish(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = Recorder(3, 8)
        self.neck = Recorder(8, 8)
        self.head = Recorder(8, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.head(self.neck(self.backbone(inputs)))
        return dict(loss=(out.float() - 1).pow(2).mean())


class Plain(BaseModel):

    def __init__(self):
        super().__init__()
        self.body = Recorder(3, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=(self.body(inputs).float() - 1).pow(2).mean())


def build(model, **kwargs):
    return OPTIM_WRAPPERS.build(
        dict(
            type='CPUBF16OptimWrapper',
            optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
            **kwargs))


@pytest.mark.usefixtures('any_cpu')
def test_trains_under_bf16_autocast_backbone_and_neck():
    torch.manual_seed(0)
    model = Detectorish()
    wrapper = build(model)
    assert type(wrapper) is CPUBF16OptimWrapper
    data = dict(inputs=torch.rand(2, 3, 8, 8))
    losses = [model.train_step(data, wrapper)['loss'].item() for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    bf16 = (True, torch.bfloat16)
    assert all(s[:2] == bf16 for s in model.backbone.seen)
    assert all(s[:2] == bf16 for s in model.neck.seen)
    # the head runs outside autocast, on float32 features
    assert all(not s[0] and s[2] == torch.float32 for s in model.head.seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with wrapper.optim_context(model):  # mmengine zeroes grads after step
        loss = model(**data)['loss']
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    # outside the training step nothing is autocast, no hooks are left
    assert autocast_dtype() == torch.float32
    assert not model.backbone._forward_hooks
    assert not model.backbone._forward_pre_hooks


@pytest.mark.usefixtures('any_cpu')
def test_whole_forward_when_no_backbone():
    model = Plain()
    wrapper = build(model, autocast_modules=None)
    model.train_step(dict(inputs=torch.rand(2, 3, 8, 8)), wrapper)
    assert model.body.seen == [(True, torch.bfloat16, torch.float32)]
    model2 = Plain()  # default names, none present: whole forward too
    model2.train_step(dict(inputs=torch.rand(2, 3, 8, 8)), build(model2))
    assert model2.body.seen[0][:2] == (True, torch.bfloat16)


@pytest.mark.usefixtures('any_cpu')
def test_state_dict_round_trip():
    torch.manual_seed(0)
    model = Detectorish()
    wrapper = build(model)
    data = dict(inputs=torch.rand(2, 3, 8, 8))
    model.train_step(data, wrapper)
    state = wrapper.state_dict()
    other = build(model)
    other.load_state_dict(state)
    assert other.state_dict()['param_groups'] == state['param_groups']
    assert other.get_lr() == wrapper.get_lr()


class Pyramid(BaseModel):
    """A backbone, then pyramid levels as RetinaNet's P6 and P7 (3x3 convs
    with stride 2, mmdet's FPN): on a 4x4 input the last one meets a 1x1
    map, narrower than its stride."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        self.neck = nn.Sequential(
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1))
        self.target = torch.randn(2, 64, 1, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.neck(self.backbone(inputs)).float()
        return dict(loss=(out * self.target).sum())


@pytest.mark.usefixtures('any_cpu')
@pytest.mark.parametrize('autocast_modules', [('backbone', 'neck'), None])
def test_strided_conv_on_a_map_narrower_than_its_stride(autocast_modules):
    """oneDNN's bfloat16 weight gradient of a strided conv whose input is
    narrower than the stride holds garbage (up to 1e38, different at every
    call): that conv runs in float32, so its weight gradient is float32
    training's at every step; the other convs stay in bfloat16 (agreeing to
    its rounding), and the wrapper leaves no hook behind."""
    torch.manual_seed(0)
    model, reference = Pyramid(), Pyramid()
    reference.load_state_dict(model.state_dict())
    reference.target = model.target
    wrapper = build(model, autocast_modules=autocast_modules)
    data = dict(inputs=torch.rand(2, 3, 4, 4))
    dtypes = {}
    for i in (0, 2):
        model.neck[i].register_forward_hook(
            lambda m, args, out, i=i: dtypes.__setitem__(i, out.dtype))
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks))
             for m in model.modules()]
    for _ in range(6):
        model.zero_grad()
        reference.zero_grad()
        with wrapper.optim_context(model):
            model(**data)['loss'].backward()
        reference(**data)['loss'].backward()
        assert dtypes == {0: torch.bfloat16, 2: torch.float32}
        torch.testing.assert_close(
            model.neck[2].weight.grad,
            reference.neck[2].weight.grad,
            rtol=2e-2,
            atol=2e-2)
        for name in ('backbone', 'neck.0'):
            grad = model.get_submodule(name).weight.grad
            ref = reference.get_submodule(name).weight.grad
            assert (grad - ref).norm() <= 0.05 * ref.norm()
    assert hooks == [(len(m._forward_hooks), len(m._forward_pre_hooks))
                     for m in model.modules()]


def test_cpu_without_bf16_says_so(monkeypatch):
    monkeypatch.setattr(wrapper_module, 'cpu_bf16_supported', lambda: False)
    with pytest.raises(RuntimeError, match='no native bfloat16'):
        build(Plain())
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    with pytest.raises(RuntimeError, match='--amp on CPU needs native'):
        use_amp(cfg)


def test_use_amp_picks_the_wrapper(monkeypatch):
    monkeypatch.setattr(wrapper_module, 'cpu_bf16_supported', lambda: True)
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cpu')
    cfg = Config(
        dict(optim_wrapper=dict(type='OptimWrapper', loss_scale='dynamic')))
    use_amp(cfg)
    assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    monkeypatch.setattr('mmengine.device.get_device', lambda: 'cuda')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper')))
    use_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_detection_from_cpuinfo(monkeypatch, tmp_path):
    """Without torch's CPUID checks (torch 2.1 has neither), the
    /proc/cpuinfo flags decide."""
    monkeypatch.setattr(wrapper_module, '_torch_isa_checks', lambda: [])
    real_open = open

    def fake_open(flags):
        path = tmp_path / 'cpuinfo'
        path.write_text(f'flags\t: fpu sse2 {flags}\n')
        return lambda name, *a, **k: real_open(
            path if name == '/proc/cpuinfo' else name, *a, **k)

    monkeypatch.setattr('builtins.open', fake_open('avx512f amx_bf16'))
    assert wrapper_module.cpu_bf16_supported()
    monkeypatch.setattr('builtins.open', fake_open('avx512f avx512_bf16'))
    assert wrapper_module.cpu_bf16_supported()
    # AVX-512 without bfloat16 instructions: oneDNN would emulate it
    monkeypatch.setattr('builtins.open',
                        fake_open('avx512f avx512bw avx512_vnni'))
    assert not wrapper_module.cpu_bf16_supported()


@pytest.mark.parametrize('avx512_bf16, amx, expected', [(False, False, False),
                                                        (True, False, True),
                                                        (False, True, True)])
def test_detection_by_torch_checks(monkeypatch, avx512_bf16, amx, expected):
    """torch's CPUID checks decide where they exist, whatever oneDNN says
    (it reports bfloat16 support on any AVX-512 CPU)."""
    monkeypatch.setattr(wrapper_module, '_torch_isa_checks',
                        lambda: [lambda: avx512_bf16, lambda: amx])
    monkeypatch.setattr(
        torch.ops.mkldnn,
        '_is_mkldnn_bf16_supported',
        lambda: True,
        raising=False)
    assert wrapper_module.cpu_bf16_supported() is expected


def test_detection_agrees_with_the_cpu_flags():
    """On this machine: the answer is whether /proc/cpuinfo lists
    avx512_bf16 or amx_bf16."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read().split()
    except OSError:
        pytest.skip('no /proc/cpuinfo')
    assert wrapper_module.cpu_bf16_supported() == any(
        flag in flags for flag in ('avx512_bf16', 'amx_bf16'))
