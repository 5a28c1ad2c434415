# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa.analysis.benchmark, what the benchmark and analysis tools share:
shape parsing, the timing loop, /proc memory, a detector from its config, the
machine description; and the side-by-side benchmark's models
(mmepsa.analysis.compare_speed)."""
import copy
import mmap
import re

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mmepsa.analysis import compare_speed as cs
from mmepsa.analysis.benchmark import (ISA_FLAGS, EPSANetClassifier,
                                       build_detector, describe_machine,
                                       detector_inputs, fmt_nchw, machine_info,
                                       paired_ratio, parse_hw, parse_nchw,
                                       read_memory, reset_peak_memory,
                                       summarise_times, time_interleaved,
                                       time_runs)


@pytest.mark.parametrize('values,default,expected', [
    (None, [224], (224, 224)),
    (None, [800, 1333], (800, 1333)),
    ([64], [224], (64, 64)),
    ([32, 48], [224], (32, 48)),
])
def test_parse_hw(values, default, expected):
    assert parse_hw(values, default) == expected


@pytest.mark.parametrize('values,match', [
    ([1, 2, 3], r'--shape takes H or H W, got \[1, 2, 3\]'),
    ([], r'--shape takes H or H W, got \[\]'),
    ([0, 32], r'--shape must be positive, got \[0, 32\]'),
])
def test_parse_hw_bad(values, match):
    with pytest.raises(ValueError, match=match):
        parse_hw(values, [224])


def test_parse_nchw():
    assert parse_nchw('8x224x224') == (8, 3, 224, 224)
    assert parse_nchw('1X800X1216') == (1, 3, 800, 1216)
    assert fmt_nchw(parse_nchw('2x64x96')) == '2x3x64x96'
    with pytest.raises(
            ValueError, match=r'NxHxW \(e\.g\. 8x224x224\), '
            r"got '8x224'"):
        parse_nchw('8x224')
    with pytest.raises(ValueError, match=r"got 'axbxc'"):
        parse_nchw('axbxc')
    with pytest.raises(ValueError, match=r"size must be positive: '1x0x8'"):
        parse_nchw('1x0x8')


def test_time_interleaved_takes_turns_and_drops_warmup():
    calls = []
    steps = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}
    times = time_interleaved(steps, torch.device('cpu'), warmup=2, runs=3)
    # the order turns round every other round
    assert calls == ['a', 'b', 'b', 'a'] * 2 + ['a', 'b']
    assert {k: len(v) for k, v in times.items()} == {'a': 3, 'b': 3}
    assert all(t >= 0 for v in times.values() for t in v)
    with pytest.raises(ValueError, match='need runs >= 1'):
        time_interleaved(steps, torch.device('cpu'), warmup=0, runs=0)


def test_paired_ratio_compares_round_by_round():
    # a slow spell in round 2 slows both: the paired ratio sees through it
    times, reference = [1.0, 4.0, 1.0], [2.0, 5.0, 2.0]
    assert paired_ratio(times, reference) == dict(
        median=0.5, faster_in=3, rounds=3)
    assert paired_ratio([3.0, 1.0], [1.0, 2.0])['faster_in'] == 1
    with pytest.raises(ValueError, match='equally long, non-empty'):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match='equally long, non-empty'):
        paired_ratio([], [])


def test_time_runs_without_grad():
    x = torch.ones(2, requires_grad=True)
    seen = []
    times = time_runs(
        lambda: seen.append((x * 2).requires_grad),
        torch.device('cpu'),
        warmup=1,
        runs=2)
    assert len(times) == 2 and seen == [False] * 3


def test_summarise_times():
    s = summarise_times([0.003, 0.001, 0.002])
    assert s['median_ms'] == pytest.approx(2.0)
    assert (s['min_ms'], s['max_ms']) == (pytest.approx(1.0),
                                          pytest.approx(3.0))
    assert s['runs_ms'] == pytest.approx([3.0, 1.0, 2.0])


def _touched_mapping(size: int) -> mmap.mmap:
    """``size`` bytes of fresh anonymous memory, every page written: new
    resident memory whatever the allocator holds (an array from malloc may
    reuse pages already resident in a long test process)."""
    mapping = mmap.mmap(-1, size)
    np.frombuffer(mapping, np.uint8)[:] = 1
    return mapping


def test_read_memory_sees_a_peak():
    before = read_memory()
    assert 0 < before['rss_mib'] <= before['peak_rss_mib']
    _touched_mapping(64 * 2**20).close()  # 64 MiB, touched, freed
    for _ in range(2):  # each reset forgets the last peak; the next is seen
        reset_peak_memory()  # the high-water mark back to the resident set
        reset = read_memory()
        assert reset['peak_rss_mib'] - reset['rss_mib'] < 16
        block = _touched_mapping(64 * 2**20)  # 64 MiB, touched
        after = read_memory()
        assert after['peak_rss_mib'] - reset['rss_mib'] > 50
        block.close()


def test_machine_info():
    info = machine_info('cpu')
    assert info['cpu'] and info['cpu_count'] >= 1
    assert info['threads'] == torch.get_num_threads()
    assert set(info['isa_flags']) <= set(ISA_FLAGS)
    assert info['gpu'] is None and info['device'] == 'cpu'
    import mmcv
    import mmdet
    assert (info['torch'], info['mmcv'],
            info['mmdet']) == (torch.__version__, mmcv.__version__,
                               mmdet.__version__)
    with open('/proc/cpuinfo') as f:
        found = re.search(r'^flags\s*:(.*)$', f.read(), re.M)
    flags = set(found.group(1).split()) if found else set()
    assert info['isa_flags'] == [f for f in ISA_FLAGS if f in flags]
    line = describe_machine(info)
    assert info['cpu'] in line and f"{info['threads']} threads" in line
    assert f"torch {info['torch']}, mmcv {info['mmcv']}" in line


def test_machine_info_without_flags():
    info = dict(machine_info('cpu'), isa_flags=[], gpu='Some GPU')
    line = describe_machine(info)
    assert 'none of avx2/avx512f/avx512_bf16/amx_tile/amx_bf16' in line
    assert 'GPU Some GPU' in line


def test_build_detector_and_inputs(tiny_project):
    model = build_detector(tiny_project['config'])
    assert not model.training
    assert type(model.backbone).__name__ == 'EPSANet'
    x, samples = detector_inputs((64, 96), batch_size=2)
    assert x.shape == (2, 3, 64, 96) and len(samples) == 2
    assert samples[0].metainfo['batch_input_shape'] == (64, 96)
    with torch.no_grad():
        results = model(x, samples, mode='predict')
    assert len(results) == 2
    model = build_detector(
        tiny_project['config'], cfg_options={'model.bbox_head.num_classes': 3})
    assert model.bbox_head.num_classes == 3


def test_classifier_head():
    model = EPSANetClassifier(50, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7)


def test_compare_speed_models_are_data_driven():
    assert set(cs.INFERENCE_ONLY) <= set(cs.BACKBONES)
    with pytest.raises(ValueError, match='mmepsa-deploy is inference only'):
        cs.build_backbone('mmepsa-deploy', 50, 0, train=True)
    # the EPSANets share the same random weights
    ours = cs.build_backbone('mmepsa', 50, 0, train=False)
    original = cs.build_backbone('original', 50, 0, train=False)
    assert not ours.training and not original.training
    ref = dict(original.ref.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_detection_setting_freezes_the_same_parameters():
    """train-detection: the original formulation is frozen and in eval mode
    where mmepsa's EPSANet and mmdet's ResNet are (frozen_stages=1,
    norm_eval=True), and trains the same parameters."""
    kw = dict(train=True, settings=cs.DETECTION_SETTINGS)
    models = {
        n: cs.build_backbone(n, 50, 0, **kw)
        for n in ('original', 'mmepsa', 'resnet')
    }
    trained = {}
    for name, model in models.items():
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        assert norms and not any(m.training for m in norms), name
        trained[name] = {  # the original's classifier (fc) is unused
            n[len('ref.'):] if n.startswith('ref.') else n
            for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith('ref.fc.')
        }
    assert trained['original'] == trained['mmepsa']
    assert not any(
        n.startswith(('conv1', 'bn1', 'layer1')) for n in trained['original'])
    assert {n.split('.')[0]
            for n in trained['resnet']} == {'layer2', 'layer3', 'layer4'}


def test_original_psa_swap_keeps_the_detector_loss():
    """The benchmark's 'original' Mask R-CNN (authors' PSA modules, same
    weights) computes the same losses as mmepsa's."""
    ours = cs.build_mask_rcnn('mmepsa', 0, torch.device('cpu'))
    original = cs.to_original_psa(copy.deepcopy(ours))
    assert original.backbone.layer1[0].conv2.__class__.__name__ == 'RefPSA'
    batch = cs.detector_batch(ours, (1, 3, 96, 128), torch.device('cpu'))
    losses = []
    for model in (ours, original):
        torch.manual_seed(0)  # the RPN/RoI samplers draw at random
        loss, _ = model.parse_losses(model(**batch, mode='loss'))
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
