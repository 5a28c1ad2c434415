# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast paths compute what the authors' formulation computes: channels-
last execution, training gradients, BN folding for deploy, torch.compile,
ONNX export; and the side-by-side benchmark reports what it measured.
No timing is asserted: speed is measured by
``tools/analysis_tools/compare_speed.py`` (README, Performance)."""
import copy
import inspect
import io
import json
import os.path as osp
import warnings

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmepsa.models import EPSANet
from mmepsa.testing import RefEPSANet, randomize_
from mmepsa.utils import deploy_model
from test_tools import load_tool

TINY = dict(
    stem_channels=16, base_channels=16, conv_groups=(1, 2, 2, 4), se_ratio=4)


def load_compare_speed():
    return load_tool('analysis_tools/compare_speed.py')


def original_and_ours(depth_layers=(3, 4, 6, 3), **kwargs):
    """The authors' classifier with random weights, and mmepsa's EPSANet-50
    holding the same weights."""
    ref = randomize_(RefEPSANet(depth_layers))
    ours = EPSANet(50, norm_eval=False, init_cfg=None, **kwargs)
    ours.load_state_dict({
        k: v
        for k, v in ref.state_dict().items() if not k.startswith('fc.')
    })
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


def test_channels_last_auto_follows_the_device():
    """auto (None) runs channels-last on CPU: the stem conv sees NHWC."""
    model = EPSANet(50, **TINY).eval()
    seen = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
        model.channels_last = False
        model(torch.rand(1, 3, 32, 32))
    assert seen == [True, False]


@pytest.mark.parametrize('value', ['yes', 1, 0.0])
def test_channels_last_bad_value(value):
    with pytest.raises(ValueError, match='channels_last must be None'):
        EPSANet(50, channels_last=value, **TINY)


def test_training_step_same_gradients():
    """A training step (train-mode BN) of mmepsa and of the original give
    the same outputs and gradients. Compared in float64: in float32,
    batch-statistics BN amplifies rounding until even the original differs
    from itself run channels-last by ~1e-2 in gradients."""
    ref, ours = original_and_ours()
    ref, ours = ref.double().train(), ours.double().train()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    theirs, outs = ref.stages(x), ours(x)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    sum((o * w).mean() for o, w in zip(outs, weights)).backward()
    sum((o * w).mean() for o, w in zip(theirs, weights)).backward()
    for a, b in zip(outs, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    ref_params = dict(ref.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, ref_params[name].grad, rtol=1e-7, atol=1e-10, msg=name)
        checked += 1
    assert checked == len(ref_params) - 2  # all but the classifier's fc


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


def test_torch_compile_fullgraph_matches_eager():
    model = EPSANet(50, num_stages=2, strides=(1, 2), dilations=(1, 1),
                    out_indices=(0, 1), **TINY).eval()
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        outs = compiled(x)
    assert len(outs) == len(expected) == 2
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_deploy_compiled_with_freezing_matches_eager():
    model = EPSANet(50, num_stages=2, strides=(1, 2), dilations=(1, 1),
                    out_indices=(0, 1), norm_eval=False, **TINY)
    randomize_(model)  # non-trivial BN statistics to fold
    model.eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        expected = model(x)
        outs = deploy_model(copy.deepcopy(model), compile=True)(x)
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_onnx_export_matches_eager():
    ort = pytest.importorskip('onnxruntime')
    model = EPSANet(50, **TINY).eval()
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TorchScript exporter deprecation
        torch.onnx.export(
            model, (torch.randn(1, 3, 64, 64), ),
            f,
            # the TorchScript exporter (torch 2.1 has only it, no `dynamo`)
            **({'dynamo': False} if 'dynamo' in inspect.signature(
                torch.onnx.export).parameters else {}),
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


def test_original_psa_swap_keeps_the_detector_loss():
    """The benchmark's 'original' Mask R-CNN (authors' PSA modules, same
    weights) computes the same losses as mmepsa's."""
    cs = load_compare_speed()
    ours = cs.build_detector('mmepsa', 0, torch.device('cpu'))
    original = cs.to_original_psa(copy.deepcopy(ours))
    assert original.backbone.layer1[0].conv2.__class__.__name__ == 'RefPSA'
    batch = cs.detector_batch(ours, (1, 3, 96, 128), torch.device('cpu'))
    losses = []
    for model in (ours, original):
        torch.manual_seed(0)  # the RPN/RoI samplers draw at random
        loss, _ = model.parse_losses(model(**batch, mode='loss'))
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)


def test_compare_speed_tool(tmp_path):
    """The benchmark's own run on tiny sizes: every model in every case,
    the differences it reports are small, files written. (Per-model peak
    memory is skipped to save subprocesses; the with_cp comparison measures
    memory through the same function.)"""
    cs = load_compare_speed()
    out_dir = str(tmp_path / 'bench')
    result = cs.main([
        '--sizes', '1x64x64', '--detector-size', '1x64x96', '--cp-size',
        '1x128x128', '--runs', '1', '--warmup', '0', '--no-memory',
        '--no-compile', '--out-dir', out_dir
    ])
    cases = {(c['kind'], c['mode']): c for c in result['cases']}
    assert set(cases) == {('backbone', 'inference'), ('backbone', 'train'),
                          ('mask-rcnn', 'train')}
    compiled = {n for n in cs.BACKBONES if n.endswith('-compiled')}
    assert set(cases['backbone', 'inference']['models']) == set(
        cs.BACKBONES) - compiled
    assert set(cases['backbone', 'train']['models']) == set(
        cs.BACKBONES) - set(cs.INFERENCE_ONLY)
    assert set(cases['mask-rcnn', 'train']['models']) == set(cs.DETECTORS)
    inference = cases['backbone', 'inference']['models']
    assert inference['mmepsa']['outputs'] < 1e-5
    assert inference['mmepsa-deploy']['outputs'] < 1e-5
    train = cases['backbone', 'train']['models']['mmepsa']
    assert train['outputs'] < 1e-9 and train['gradients'] < 1e-6
    for case in result['cases']:
        for row in case['models'].values():
            assert len(row['runs_ms']) == 1 and row['median_ms'] > 0
            assert 'peak_mib' not in row
        assert case['models']['original']['speedup_vs_original'] == 1.0
    cp = result['with_cp']
    assert 0 < cp['peak_mib_with_cp'] < cp['peak_mib_without_cp']
    with open(osp.join(out_dir, 'benchmark.json')) as f:
        assert json.load(f)['environment']['threads'] >= 1
    table = open(osp.join(out_dir, 'benchmark.md')).read()
    # 5 models and the noise-floor row
    assert table.count('| backbone inference 1x3x64x64 fp32 |') == 6
    assert 'with_cp' in table and 'noise floor' in table
    assert osp.getsize(osp.join(out_dir, 'benchmark.png')) > 1000


@pytest.mark.parametrize('argv, message', [
    (['--sizes', '8x224'], 'size must be NxHxW'),
    (['--runs', '0'], '--runs must be >= 1'),
    (['--device', 'cpu', '--precisions', 'amp'], 'amp needs a CUDA'),
])
def test_compare_speed_bad_arguments(argv, message, capsys):
    cs = load_compare_speed()
    with pytest.raises(SystemExit):
        cs.main(argv)
    assert message in capsys.readouterr().err
