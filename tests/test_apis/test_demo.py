# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo configs train and evaluate through mmengine's Runner.

A tiny generated dataset (8 train / 4 val images of 64 px) and one epoch
(2 iterations of batch 4) keep this fast; the full-size backbone is kept.
"""
import importlib.util
import json
import math
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MASK_RCNN = osp.join(REPO, 'configs', 'demo',
                     'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')
RETINANET = osp.join(REPO, 'configs', 'demo',
                     'retinanet_epsanet50-s_fpn_demo-shapes.py')
TINY = ['demo_data.num_train=8', 'demo_data.num_val=4']
# an (almost) untrained model scores below the usual 0.05 threshold, and
# CocoMetric returns no metrics at all for empty results
KEEP_ALL = {
    MASK_RCNN: ['model.test_cfg.rcnn.score_thr=0'],
    RETINANET: ['model.test_cfg.score_thr=0'],
}


def _run_demo():
    spec = importlib.util.spec_from_file_location(
        'run_demo', osp.join(REPO, 'tools', 'run_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_args(config, tmp_path):
    return [
        '--config', config, '--work-dir',
        str(tmp_path / 'work'), '--data-root',
        str(tmp_path / 'data'), '--epochs', '1', '--img-size', '64',
        '--cfg-options', *TINY, *KEEP_ALL[config]
    ]


def test_retinanet_runner(tmp_path):
    from mmengine.runner import Runner
    run_demo = _run_demo()
    cfg = run_demo.load_config(
        run_demo.parse_args(_tiny_args(RETINANET, tmp_path)))
    assert cfg.model.backbone.type == 'EPSANet'
    assert cfg.model.bbox_head.num_classes == 3
    run_demo.ensure_data(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    assert runner.iter == 2
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics and 'coco/bbox_mAP_50' in metrics
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))


def test_mask_rcnn_run_demo(tmp_path, capsys):
    run_demo = _run_demo()
    assert run_demo.main(_tiny_args(MASK_RCNN, tmp_path)) == 0
    work = tmp_path / 'work'
    with open(work / 'demo_summary.json') as f:
        summary = json.load(f)
    metrics = summary['metrics']
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                'coco/segm_mAP_50'):
        assert key in metrics and 0 <= metrics[key] <= 1
    assert summary['iterations'] == 2
    outputs = summary['outputs']
    for key in ('loss curve', 'predictions', 'checkpoint', 'log'):
        assert osp.isfile(outputs[key]), key
    assert outputs['checkpoint'].endswith('epoch_1.pth')
    assert 'EPSANet demo finished' in capsys.readouterr().out
    with open(work / outputs['log'].split(str(work) + '/')[-1]) as f:
        assert 'Epoch(train)' in f.read()


def test_run_demo_bad_input(tmp_path, capsys):
    run_demo = _run_demo()
    with pytest.raises(SystemExit) as e:
        run_demo.main(['--config', str(tmp_path / 'nope.py')])
    assert e.value.code == 1
    assert 'config not found' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_demo.main(['--config', MASK_RCNN, '--epochs', '0'])
    assert e.value.code == 1
    assert not (tmp_path / 'work').exists()
