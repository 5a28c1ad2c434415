# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/analysis_tools/compare_speed.py as users run it, on tiny sizes (the
logic: mmepsa.utils.compare_speed)."""
import json
import os.path as osp

import pytest

from mmepsa.utils import compare_speed as cs
from mmepsa.utils.benchmark import ISA_FLAGS
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
    assert set(cases['backbone', 'inference']['models']) == set(
        cs.BACKBONES) - compiled
    for mode in ('train', 'train-detection'):
        assert set(cases['backbone', mode]['models']) == set(
            cs.BACKBONES) - set(cs.INFERENCE_ONLY)
    assert set(cases['mask-rcnn', 'train']['models']) == set(cs.DETECTORS)
    inference = cases['backbone', 'inference']['models']
    assert inference['mmepsa']['outputs'] < 1e-5
    assert inference['mmepsa-deploy']['outputs'] < 1e-5
    assert inference['mmepsa-untuned']['outputs'] < 1e-5
    assert inference['mmepsa-cl-out']['outputs'] < 1e-5
    assert inference['mmepsa-unfused']['outputs'] < 1e-5
    for name in ('mmepsa', 'mmepsa-cl-out', 'mmepsa-untuned',
                 'mmepsa-unfused'):
        for mode in ('train', 'train-detection'):
            train = cases['backbone', mode]['models'][name]
            assert train['outputs'] < 1e-9 and train['gradients'] < 1e-6
    for case in result['cases']:
        for row in case['models'].values():
            assert len(row['runs_ms']) == 1 and row['median_ms'] > 0
            assert 'peak_mib' not in row
        assert case['models']['original']['speedup_vs_original'] == 1.0
        resnet = case['models']['resnet']
        assert resnet['time_vs_resnet_paired'] == dict(median=1.0,
                                                       faster_in=0,
                                                       rounds=1)
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
             '--models', 'mmepsa', 'mmepsa-unfused', '--runs', '2',
             '--warmup', '0', '--no-memory', '--no-detector', '--no-cp',
             '--out-dir', out_dir)
    with open(osp.join(out_dir, 'benchmark.json')) as f:
        result = json.load(f)
    assert [c['mode'] for c in result['cases']] == ['inference', 'train']
    for case in result['cases']:
        assert set(case['models']) == {'original', 'resnet', 'mmepsa',
                                       'mmepsa-unfused'}
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
