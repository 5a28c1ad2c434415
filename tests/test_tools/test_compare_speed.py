# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/analysis_tools/compare_speed.py as users run it, on tiny sizes (the
logic: mmepsa.analysis.compare_speed)."""
import argparse
import json
import os.path as osp

import pytest

from mmepsa.analysis import compare_speed as cs
from mmepsa.analysis.benchmark import ISA_FLAGS
from tests.utils import run_tool

TOOL = 'analysis_tools/compare_speed.py'


def test_compare_speed_tool(tmp_path):
    """The benchmark's own run on tiny sizes: every model in every case,
    the differences it reports are small, files written. (Per-model peak
    memory is skipped to save subprocesses; the with_cp comparison measures
    memory through the same function.)"""
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
    inference = cases['backbone', 'inference']['models']
    assert inference['mmepsa']['outputs'] < 1e-5
    assert inference['mmepsa-deploy']['outputs'] < 1e-5
    assert inference['mmepsa-untuned']['outputs'] < 1e-5
    assert inference['mmepsa-plain']['outputs'] < 1e-5
    for name in ('mmepsa', 'mmepsa-untuned', 'mmepsa-plain'):
        for mode in ('train', 'train-detection'):
            train = cases['backbone', mode]['models'][name]
            assert train['outputs'] < 1e-9 and train['gradients'] < 1e-6
    for case in result['cases']:
        for row in case['models'].values():
            assert len(row['runs_ms']) == 1 and row['median_ms'] > 0
            assert 'peak_mib' not in row
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
    # a row per model but the compiled ones, and the noise-floor row
    assert table.count('| backbone inference 1x3x64x64 fp32 |') == len(
        cs.BACKBONES) - len(compiled) + 1
    assert 'with_cp' in table and 'noise floor' in table
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


def _check_args(tmp_path, runs=2):
    return argparse.Namespace(
        depth=50,
        seed=0,
        runs=runs,
        warmup=0,
        device='cpu',
        threads=None,
        out_dir=str(tmp_path / 'check'))


def test_fast_path_check(tmp_path, monkeypatch):
    """The fast path check on tiny sizes: each case times the first tuned
    step alone and every row interleaved, and reports the tuning cost in
    steady steps and each row's time against the plain model, with
    verdicts against the bounds; files written."""
    monkeypatch.setattr(cs, 'FAST_PATH_CASES',
                        (('train-detection', (1, 3, 64, 64)),
                         ('inference', (1, 3, 64, 48))))
    result = cs.fast_path_check(_check_args(tmp_path))
    assert [(c['mode'], c['shape'])
            for c in result['cases']] == [('train-detection', [1, 3, 64, 64]),
                                          ('inference', [1, 3, 64, 48])]
    for case in result['cases']:
        assert set(case['models']) == set(cs.FAST_PATH_ROWS)
        assert case['first_tuned_step_s'] > 0
        tuned_ms = case['models']['tuned']['median_ms']
        assert case['tuning_cost_steps'] == pytest.approx(
            case['first_tuned_step_s'] * 1000 / tuned_ms - 1)
        assert case['tuning_ok'] == (
            case['tuning_cost_steps'] <= cs.MAX_TUNING_STEPS)
        for name, row in case['models'].items():
            assert len(row['runs_ms']) == 2
            assert row['time_vs_plain'] == pytest.approx(
                row['median_ms'] / case['models']['plain']['median_ms'])
            assert row['ok'] == (
                name == 'plain'
                or row['time_vs_plain'] <= cs.MAX_TIME_VS_PLAIN)
    table = open(osp.join(tmp_path, 'check', 'fast_path_check.md')).read()
    assert table.count('| train-detection 1x3x64x64 |') == 4
    with open(osp.join(tmp_path, 'check', 'fast_path_check.json')) as f:
        assert json.load(f)['ok'] == result['ok']


def test_fast_path_check_fails_past_its_bounds(tmp_path, monkeypatch):
    """A bound exceeded: the verdict says NO and the result is not ok (the
    tool then exits 1)."""
    monkeypatch.setattr(cs, 'FAST_PATH_CASES',
                        (('inference', (1, 3, 32, 32)), ))
    monkeypatch.setattr(cs, 'MAX_TIME_VS_PLAIN', 0.0)
    result = cs.fast_path_check(_check_args(tmp_path, runs=1))
    assert not result['ok']
    rows = result['cases'][0]['models']
    assert rows['plain']['ok'] and not rows['untuned']['ok']
    table = open(osp.join(tmp_path, 'check', 'fast_path_check.md')).read()
    assert '| NO |' in table
