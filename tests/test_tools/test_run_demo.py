# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/run_demo.py as users run it: the Mask R-CNN demo for 2 iterations
on a tiny generated dataset, and bad input. (The functions behind it:
test_demo/test_trainer.py.)"""
import json
import os.path as osp

import mmcv

from tests.utils import DEMO_MASK_RCNN, run_tool, tiny_demo_args


def test_mask_rcnn_run_demo(tmp_path):
    proc = run_tool('run_demo.py', *tiny_demo_args(DEMO_MASK_RCNN, tmp_path))
    work = tmp_path / 'work'
    with open(work / 'demo_summary.json') as f:
        summary = json.load(f)
    metrics = summary['metrics']
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert key in metrics and 0 <= metrics[key] <= 1
    assert summary['iterations'] == 2
    # bfloat16 where this CPU has it natively (the default, --precision auto)
    from mmepsa.engine import cpu_bf16_supported
    precision = 'bf16' if cpu_bf16_supported() else 'fp32'
    assert summary['precision'] == precision
    assert summary['cpu_bf16'] is cpu_bf16_supported()
    assert f'  precision:   {precision}' in proc.stdout
    outputs = summary['outputs']
    for key in ('loss curve', 'predictions', 'checkpoint', 'log'):
        assert osp.isfile(outputs[key]), key
    assert outputs['checkpoint'].endswith('epoch_1.pth')
    # ground truth and predictions side by side, each drawn >= 960 px tall
    height, width = mmcv.imread(outputs['predictions']).shape[:2]
    assert height >= 960 and width >= 2 * 960
    assert 'EPSANet demo finished' in proc.stdout
    with open(work / outputs['log'].split(str(work) + '/')[-1]) as f:
        assert 'Epoch(train)' in f.read()


def test_run_demo_bad_input(tmp_path):
    proc = run_tool(
        'run_demo.py',
        '--config',
        tmp_path / 'nope.py',
        check=False,
        merge_stderr=False)
    assert proc.returncode == 1
    assert 'config not found' in proc.stderr
    proc = run_tool(
        'run_demo.py',
        '--config',
        DEMO_MASK_RCNN,
        '--epochs',
        '0',
        '--work-dir',
        tmp_path / 'work',
        check=False,
        merge_stderr=False)
    assert proc.returncode == 1
    assert '--epochs must be >= 1, got 0' in proc.stderr
    assert not (tmp_path / 'work').exists()
    proc = run_tool(
        'run_demo.py', '--precision', 'fp16', check=False, merge_stderr=False)
    assert proc.returncode == 2  # argparse
    assert "invalid choice: 'fp16'" in proc.stderr
