# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast path computes what the plain model and the authors' formulation
compute (channels-last execution, training gradients, every ResNet option),
runs where the switch and the run time allow it and only there (hooks,
tracing, torch.compile, ONNX export run the plain model), logs its tuning,
and the deployed, compiled and exported models match. No timing is
asserted: speed is measured by ``tools/analysis_tools/compare_speed.py``."""
import copy
import inspect
import io
import logging
import warnings

import pytest
import torch
from mmengine.logging import MMLogger
from torch.nn.modules.batchnorm import _BatchNorm

from mmepsa.models import EPSANet
from mmepsa.models.fast import clear_choices, conv_forms, fast_path, settings
from mmepsa.models.fast.switch import ENV, measured_win
from mmepsa.testing import RefEPSANet, RefPSA, randomize_
from mmepsa.utils import deploy_model
from tests.utils import TINY_BACKBONE as TINY
from tests.utils import assert_train_step_equal


def original_and_ours(depth_layers=(3, 4, 6, 3), **kwargs):
    """The authors' classifier with random weights, and mmepsa's EPSANet-50
    holding the same weights."""
    ref = randomize_(RefEPSANet(depth_layers))
    ours = EPSANet(50, norm_eval=False, init_cfg=None, **kwargs)
    ours.load_state_dict(
        {k: v
         for k, v in ref.state_dict().items() if not k.startswith('fc.')})
    return ref, ours


@pytest.mark.parametrize('channels_last', [None, True, False])
def test_channels_last_same_outputs_contiguous(channels_last):
    ref, ours = original_and_ours(channels_last=channels_last)
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 75, 61)
    with torch.no_grad():
        outs, theirs = ours(x), ref.stages(x)
    for a, b in zip(outs, theirs):
        # callers get NCHW-contiguous features whatever runs inside
        assert a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_channels_last_auto_where_measured(ran):
    """auto (None) runs channels-last where measured to win (torch >= 2.14,
    AVX-512 CPU); True and False as they say."""
    model = EPSANet(50, **TINY).eval()
    with torch.no_grad():
        for setting in (None, True, False):
            model.channels_last = setting
            model(torch.rand(1, 3, 32, 32))
    cl = [x.is_contiguous(memory_format=torch.channels_last) for x in ran]
    assert cl == [measured_win(torch.device('cpu')), True, False]


def test_the_switch(ran, monkeypatch):
    """fast_path() for a with block (back to what it was, even on an
    error), else MMEPSA_FAST_PATH; bad values name the allowed ones."""
    model = EPSANet(50, **TINY).eval()
    x = torch.rand(1, 3, 32, 32)
    monkeypatch.delenv(ENV, raising=False)
    assert settings() == (True, None)
    with torch.no_grad():
        model(x)
        assert len(ran) == 1
        with fast_path(False):
            model(x)
        assert len(ran) == 1
        with pytest.raises(RuntimeError):
            with fast_path(False):
                raise RuntimeError
        model(x)
        assert len(ran) == 2
        for value, expected in (('0', (False, None)), ('1', (True, None)),
                                ('untuned', (True, False))):
            monkeypatch.setenv(ENV, value)
            assert settings() == expected
            with fast_path(True, autotune=True):  # the block wins
                assert settings() == (True, True)
        monkeypatch.setenv(ENV, '0')
        model(x)
        assert len(ran) == 2
        monkeypatch.setenv(ENV, 'off')
        with pytest.raises(
                ValueError,
                match=r'MMEPSA_FAST_PATH must be '
                r"one of \['0', '1', 'untuned'\], got 'off'"):
            model(x)
    with pytest.raises(TypeError, match='enabled must be True or False'):
        with fast_path('no'):
            pass
    with pytest.raises(
            TypeError, match='autotune must be True, False or '
            'None'):
        with fast_path(True, autotune=1):
            pass


def test_autotune_default(monkeypatch):
    """By default the autotuner runs where measured to win, and not in
    deterministic mode; the switch can force it either way."""
    from mmepsa.models.fast.switch import autotuning
    monkeypatch.delenv(ENV, raising=False)
    cpu = torch.device('cpu')
    assert autotuning(cpu) == measured_win(cpu)
    assert not autotuning(torch.device('cuda'))
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not autotuning(cpu)
        with fast_path(True, autotune=True):
            assert autotuning(cpu)
    finally:
        torch.use_deterministic_algorithms(was)
    with fast_path(True, autotune=False):
        assert not autotuning(cpu)
    monkeypatch.setenv(ENV, 'untuned')
    assert not autotuning(cpu)


def test_hooks_tracing_and_export_run_the_plain_model(ran):
    """Whatever would miss a module being called (a hook anywhere in the
    backbone, global hooks, tracing) gets the plain model."""
    model = EPSANet(50, **TINY).eval()
    x = torch.rand(1, 3, 32, 32)
    calls = []
    handle = model.layer2[0].conv2.se.fc1.register_forward_hook(
        lambda *args: calls.append(1))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert calls == [1] * 4 and ran == []  # the SE module, per branch
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda *args: None)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert ran == []
    traced = torch.jit.trace(model, (x, ), check_trace=False)
    assert ran == []
    nodes = str(traced.inlined_graph)
    assert 'aten::batch_norm' in nodes and 'aten::cat' in nodes
    with torch.no_grad():
        for a, b in zip(traced(x), model(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(ran) == 1  # the eager call


def test_logs_when_it_tunes(monkeypatch):
    """Timing the forms of a new input size is announced in the log before
    it starts, and its duration after; a size already tuned is not."""
    monkeypatch.setattr(conv_forms.TunedConv, 'min_tuned_macs', 0)
    model = EPSANet(50, **TINY).eval()
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    clear_choices()
    try:
        with torch.no_grad(), fast_path(True, autotune=True):
            model(torch.rand(1, 3, 32, 32))
            first = [r.getMessage() for r in records]
            model(torch.rand(1, 3, 32, 32))
            with fast_path(True, autotune=False):
                model(torch.rand(1, 3, 64, 64))
    finally:
        logger.removeHandler(handler)
        clear_choices()
    assert len(first) == 2
    assert first[0].startswith('mmepsa fast path: timing the PSA convs\' '
                               'exact forms for input (1, 3, 32, 32)')
    assert 'MMEPSA_FAST_PATH=untuned' in first[0]
    assert 'chose the forms of' in first[1]
    assert len(records) == 2


@pytest.mark.parametrize('cfg', [
    dict(deep_stem=True, avg_down=True),
    dict(frozen_stages=2, norm_eval=True),
    dict(widen_factor=2, style='caffe'),
    dict(with_cp=True),
    dict(norm_cfg=dict(type='GN', num_groups=8)),
    dict(plugins=[
        dict(
            cfg=dict(type='ContextBlock', ratio=1. / 4),
            position='after_conv2',
            stages=(False, True, True, True))
    ]),
])
def test_fast_equals_plain_training_step(cfg, ran):
    """A training step (float64) through the fast path and through the
    plain model: the same outputs and gradients, for every ResNet option
    the fast path walks."""
    torch.manual_seed(0)
    model = randomize_(EPSANet(50, **TINY, **cfg)).double().train()
    x = torch.randn(2, 3, 48, 40, dtype=torch.float64, requires_grad=True)

    def step():
        model.zero_grad()
        outs = model(x)
        sum((o * o.detach().sign()).mean() for o in outs).backward()
        return outs, {
            n: p.grad.clone()
            for n, p in model.named_parameters() if p.grad is not None
        }

    with fast_path(True, autotune=False):
        outs, grads = step()
    assert len(ran) == 1
    with fast_path(False):
        ref_outs, ref_grads = step()
    assert len(ran) == 1
    assert grads.keys() == ref_grads.keys() and grads
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for name in grads:
        torch.testing.assert_close(
            grads[name], ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_a_replaced_psa_module_runs_as_itself(ran):
    """A block whose conv2 is not EPSANet's PSAModule (here the authors'
    formulation, same weights) runs as the module itself: same outputs."""
    _, ours = original_and_ours()
    ours.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ours(x)
        psa = ours.layer3[1].conv2
        ref = RefPSA(
            psa.conv_1.in_channels,
            psa.split_channels * 4,
            stride=psa.conv_1.stride[0])
        ref.load_state_dict(psa.state_dict())
        ours.layer3[1].conv2 = ref
        with fast_path(False):
            plain = ours(x)
        fast = ours(x)
    assert len(ran) == 2  # the fast path ran, the authors' PSA as itself
    for a, b, c in zip(fast, plain, expected):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('value', ['yes', 1, 0.0])
def test_channels_last_bad_value(value):
    with pytest.raises(ValueError, match='channels_last must be None'):
        EPSANet(50, channels_last=value, **TINY)


@pytest.mark.parametrize('channels_last', [True, False])
def test_contiguous_outputs_false_keeps_the_memory_format(channels_last):
    """contiguous_outputs=False hands over the features in the format the
    network ran in (channels-last on CPU by default), equal bit for bit to
    the contiguous ones; gradients flow back through them alike."""
    torch.manual_seed(0)
    model = EPSANet(
        50, channels_last=channels_last, norm_eval=False, **TINY).train()
    x = torch.randn(2, 3, 75, 61)
    ref_outs = model(x)
    sum(o.square().mean() for o in ref_outs).backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.contiguous_outputs = False
    outs = model(x)
    sum(o.square().mean() for o in outs).backward()
    for a, b in zip(outs, ref_outs):
        assert a.is_contiguous(memory_format=torch.channels_last
                               if channels_last else torch.contiguous_format)
        assert torch.equal(a, b)
    for p, g in zip(model.parameters(), ref_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('value', [None, 'no', 0])
def test_contiguous_outputs_bad_value(value):
    with pytest.raises(
            ValueError,
            match='contiguous_outputs must be True or '
            f'False, got {value!r}'):
        EPSANet(50, contiguous_outputs=value, **TINY)


def test_training_step_same_gradients():
    """A training step (train-mode BN) of mmepsa and of the original give
    the same outputs and gradients (float64: see assert_train_step_equal)."""
    ref, ours = original_and_ours()
    checked = assert_train_step_equal(ref, ours, torch.randn(2, 3, 64, 64))
    assert checked == len(dict(ref.named_parameters())) - 2  # all but fc


def test_deploy_folds_conv_bn():
    """deploy_model (mmcv's fuse_conv_bn) folds every conv+BN pair of
    EPSANet (stem, 1x1 convs, shortcuts); only the BN after the PSA module
    stays, since the attention sits between it and the branch convs.
    Outputs unchanged."""
    _, ours = original_and_ours()
    ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ours(x)
        fused = deploy_model(copy.deepcopy(ours).train())
        assert not fused.training
        outs = fused(x)
    bns = [n for n, m in fused.named_modules() if isinstance(m, _BatchNorm)]
    assert bns and all(n.endswith('.bn2') for n in bns)
    assert len(bns) == sum(ours.stage_blocks)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# One stage, its first block strided (a PSA conv with stride 2 and a
# downsample shortcut) and a plain one after it, covers every operation of
# the backbone (the stage's third block is cut: inductor's compile time
# grows with the graph).
ONE_STAGE = dict(
    num_stages=1, strides=(2, ), dilations=(1, ), out_indices=(0, ))


def test_compiled_forms_match_eager():
    """``torch.compile(fullgraph=True)`` (no graph break anywhere) and
    ``deploy_model(compile=True)`` (BN folded, inductor's weight freezing)
    give the eager outputs. One test, so that one process pays inductor's
    set-up (~20 s on torch 2.1) once."""
    model = EPSANet(50, **ONE_STAGE, norm_eval=False, **TINY)
    del model.layer1[2]
    randomize_(model)  # non-trivial BN statistics to fold
    model.eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        compiled = torch.compile(model, fullgraph=True)(x)
        deployed = deploy_model(copy.deepcopy(model), compile=True)(x)
    assert len(compiled) == len(deployed) == len(expected) == 1
    for outs in (compiled, deployed):
        for a, b in zip(outs, expected):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_eager():
    ort = pytest.importorskip('onnxruntime')
    model = EPSANet(50, **TINY).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript exporter deprecation
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 64, 64), ),
            f,
            # the TorchScript exporter (torch 2.1 has only it, no `dynamo`)
            **({
                'dynamo': False
            } if 'dynamo' in inspect.signature(torch.onnx.export).parameters
               else {}),
            opset_version=17,
            input_names=['input'],
            output_names=[f'stage{i + 1}' for i in range(4)],
            dynamic_axes={'input': {
                0: 'batch',
                2: 'height',
                3: 'width'
            }})
    session = ort.InferenceSession(
        f.getvalue(), providers=['CPUExecutionProvider'])
    x = torch.randn(2, 3, 96, 80)  # not the export shape
    outs = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = model(x)
    assert len(outs) == 4
    for a, b in zip(outs, expected):
        torch.testing.assert_close(
            torch.from_numpy(a), b, rtol=1e-4, atol=1e-4)
