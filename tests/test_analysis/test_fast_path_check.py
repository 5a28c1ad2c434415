# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa.analysis.fast_path_check on tiny sizes: what each case times, the
verdicts against the bounds and the forms the tuned step chose (the tools:
tests/test_tools/test_compare_speed.py)."""
import argparse
import json
import os.path as osp

import pytest

from mmepsa.analysis import fast_path_check as fpc
from mmepsa.models.fast import TunedConv
from mmepsa.models.fast.conv_forms import PARTS


def test_fast_path_check(tmp_path, monkeypatch):
    """Each case times the first tuned step alone and every row
    interleaved, and reports the tuning cost in steady steps and each row's
    time against the plain model, with verdicts against the bounds, and
    the forms the tuned step chose; files written."""
    monkeypatch.setattr(fpc, 'FAST_PATH_CASES',
                        (('train-detection', (1, 3, 64, 64)),
                         ('inference', (1, 3, 64, 48))))
    # every conv tuned, instantly, the grouped conv the fastest form of
    # each part (what runs at these sizes anyway: the steps cost no more)
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    monkeypatch.setattr(
        TunedConv, '_time_part', lambda self, x, fmt, part: {
            form: 0.5 if form == ('grouped', 1) else 1.0
            for form in self.forms()
        })
    args = argparse.Namespace(
        depth=50,
        seed=0,
        runs=2,
        device='cpu',
        out_dir=str(tmp_path / 'check'))
    result = fpc.fast_path_check(args)
    assert result['environment']['warmup'] == fpc.WARMUP == 1
    assert [(c['mode'], c['shape'])
            for c in result['cases']] == [('train-detection', [1, 3, 64, 64]),
                                          ('inference', [1, 3, 64, 48])]
    for case in result['cases']:
        assert set(case['models']) == set(fpc.FAST_PATH_ROWS)
        assert case['first_tuned_step_s'] > 0
        tuned_ms = case['models']['tuned']['median_ms']
        assert case['tuning_cost_steps'] == pytest.approx(
            case['first_tuned_step_s'] * 1000 / tuned_ms - 1)
        assert case['tuning_ok'] == (
            case['tuning_cost_steps'] <= fpc.MAX_TUNING_STEPS)
        for name, row in case['models'].items():
            assert len(row['runs_ms']) == 2
            assert row['time_vs_plain'] == pytest.approx(
                row['median_ms'] / case['models']['plain']['median_ms'])
            assert row['ok'] == (
                name == 'plain'
                or row['time_vs_plain'] <= fpc.MAX_TIME_VS_PLAIN)
    train, inference = (c['chosen_forms'] for c in result['cases'])
    # 4 branch convs x (stage 1's blocks, which share a key; the first
    # block of stages 2-4; their other blocks)
    assert len(train) == len(inference) == 4 * 7
    for conv, parts in [*train.items(), *inference.items()]:
        assert set(parts.values()) == {'grouped'}, conv
    assert all(list(parts) == ['forward'] for parts in inference.values())
    for conv, parts in train.items():
        # stage 1 is frozen: its convs take no gradient, the others both
        assert list(parts) == (list(PARTS)
                               if 'grad x+w' in conv else ['forward']), conv
    assert sum('grad' not in conv for conv in train) == 4
    table = open(osp.join(tmp_path, 'check', 'fast_path_check.md')).read()
    assert table.count('| train-detection 1x3x64x64 |') == 4
    with open(osp.join(tmp_path, 'check', 'fast_path_check.json')) as f:
        assert json.load(f)['ok'] == result['ok']
