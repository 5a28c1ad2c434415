# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/analysis_tools/compare_speed.py and fast_path_check.py as users run
them, on tiny sizes (the logic: mmepsa.analysis.compare_speed and
fast_path_check; the rows' numerical parity with the authors' formulation:
tests/test_models/test_backbones/test_epsanet.py)."""
import json
import os.path as osp

import pytest

from mmepsa.analysis import compare_speed as cs
from mmepsa.analysis import fast_path_check as fpc
from mmepsa.analysis.benchmark import ISA_FLAGS
from tests.utils import load_tool, run_tool

TOOL = 'analysis_tools/compare_speed.py'
CHECK_TOOL = 'analysis_tools/fast_path_check.py'


def test_compare_speed_tool(tmp_path):
    """The benchmark's own run on tiny sizes: every model in every case,
    each run once untimed, the forms the autotuner chose recorded per case,
    files written. (Per-model peak memory is skipped to save subprocesses;
    the with_cp comparison measures memory through the same function.)"""
    out_dir = str(tmp_path / 'bench')
    proc = run_tool(TOOL, '--sizes', '1x64x64', '--detector-size', '1x64x96',
                    '--cp-size', '1x128x128', '--runs', '1', '--warmup', '0',
                    '--no-memory', '--no-compile', '--out-dir', out_dir)
    with open(osp.join(out_dir, 'benchmark.json')) as f:
        result = json.load(f)
    cases = {(c['kind'], c['mode']): c for c in result['cases']}
    assert set(cases) == {('backbone', 'inference'), ('backbone', 'train'),
                          ('backbone', 'train-detection'),
                          ('mask-rcnn', 'train')}
    compiled = {n for n in cs.BACKBONES if n.endswith('-compiled')}
    assert set(cases['backbone',
                     'inference']['models']) == set(cs.BACKBONES) - compiled
    for mode in ('train', 'train-detection'):
        assert set(cases['backbone', mode]['models']) == set(
            cs.BACKBONES) - set(cs.INFERENCE_ONLY)
    assert set(cases['mask-rcnn', 'train']['models']) == set(cs.DETECTORS)
    for case in result['cases']:
        # no PSA conv of a 64x64 input is large enough to time
        assert case['chosen_forms'] == {}
        for row in case['models'].values():
            assert len(row['runs_ms']) == 1 and row['median_ms'] > 0
            assert 'peak_mib' not in row
            if case['kind'] == 'backbone':  # run once untimed first
                assert row['first_call_s'] > 0
        assert case['models']['original']['speedup_vs_original'] == 1.0
        resnet = case['models']['resnet']
        assert resnet['time_vs_resnet_paired'] == dict(
            median=1.0, faster_in=0, rounds=1)
        for row in case['models'].values():
            paired = row['time_vs_resnet_paired']
            assert paired['median'] == pytest.approx(row['time_vs_resnet'])
    cp = result['with_cp']
    assert 0 < cp['peak_mib_with_cp'] < cp['peak_mib_without_cp']
    env = result['environment']
    assert env['threads'] >= 1 and env['cpu'] and env['torch']
    assert set(env['isa_flags']) <= set(ISA_FLAGS)
    table = open(osp.join(out_dir, 'benchmark.md')).read()
    assert table in proc.stdout
    assert f"{env['threads']} threads; torch {env['torch']}, mmcv" in table
    # a row per model but the compiled ones
    assert table.count('| backbone inference 1x3x64x64 fp32 |') == len(
        cs.BACKBONES) - len(compiled)
    assert 'with_cp' in table
    for case in result['cases']:  # a line per case naming the forms
        assert f'- {cs.case_label(case)}: no conv timed' in table
    assert '; faster in ' in table and 'within each round' in table
    assert osp.getsize(osp.join(out_dir, 'benchmark.png')) > 1000


def test_compare_speed_models_selects_rows(tmp_path):
    """--models runs the rows it names and the two yardsticks only."""
    out_dir = str(tmp_path / 'bench')
    run_tool(TOOL, '--sizes', '1x64x64', '--modes', 'inference', 'train',
             '--models', 'mmepsa', 'mmepsa-plain', '--runs', '2', '--warmup',
             '0', '--no-memory', '--no-detector', '--no-cp', '--out-dir',
             out_dir)
    with open(osp.join(out_dir, 'benchmark.json')) as f:
        result = json.load(f)
    assert [c['mode'] for c in result['cases']] == ['inference', 'train']
    for case in result['cases']:
        assert set(case['models']) == {
            'original', 'resnet', 'mmepsa', 'mmepsa-plain'
        }
        assert all(len(r['runs_ms']) == 2 for r in case['models'].values())
    assert 'with_cp' not in result


@pytest.mark.parametrize('argv, message', [
    (['--sizes', '8x224'], 'size must be NxHxW'),
    (['--sizes', '0x224x224'], 'size must be positive'),
    (['--runs', '0'], '--runs must be >= 1'),
    (['--device', 'cpu', '--precisions', 'amp'], 'amp needs a CUDA'),
    (['--models', 'resnet'], "invalid choice: 'resnet'"),
])
def test_compare_speed_bad_arguments(argv, message):
    proc = run_tool(TOOL, *argv, check=False)
    assert proc.returncode == 2 and message in proc.stdout, proc.stdout


@pytest.mark.parametrize('tool, argv', [
    (CHECK_TOOL, ['--runs', '1']),
    (TOOL, ['--fast-path-check', '--runs', '1']),
])
def test_fast_path_check_tools_exit_1_past_a_bound(tmp_path, monkeypatch, tool,
                                                   argv):
    """fast_path_check.py (and compare_speed.py --fast-path-check, which
    runs the same check) exits 1 when a bound is exceeded: the verdict says
    NO and the result is not ok."""
    monkeypatch.setattr(fpc, 'FAST_PATH_CASES',
                        (('inference', (1, 3, 32, 32)), ))
    monkeypatch.setattr(fpc, 'MAX_TIME_VS_PLAIN', 0.0)
    out_dir = str(tmp_path / 'check')
    with pytest.raises(SystemExit) as stop:
        load_tool(tool).main(argv + ['--device', 'cpu', '--out-dir', out_dir])
    assert stop.value.code == 1
    with open(osp.join(out_dir, 'fast_path_check.json')) as f:
        result = json.load(f)
    assert not result['ok']
    # the rounds it ran, whichever tool (compare_speed's --warmup is not)
    assert result['environment']['warmup'] == fpc.WARMUP
    rows = result['cases'][0]['models']
    assert rows['plain']['ok'] and not rows['untuned']['ok']
    table = open(osp.join(out_dir, 'fast_path_check.md')).read()
    assert '| NO |' in table


@pytest.mark.parametrize('argv, message', [
    (['--runs', '0'], '--runs must be >= 1'),
    (['--threads', '0'], '--threads must be >= 1'),
])
def test_fast_path_check_bad_arguments(argv, message):
    proc = run_tool(CHECK_TOOL, *argv, check=False)
    assert proc.returncode == 2 and message in proc.stdout, proc.stdout
