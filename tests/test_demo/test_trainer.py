# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa.demo.trainer (what tools/run_demo.py calls): the demo configs train
and evaluate through mmengine's Runner, on a tiny generated dataset."""
import math
import os.path as osp

import pytest

from mmepsa.demo.trainer import (DemoDiverged, check_finite_loss, ensure_data,
                                 format_summary, load_demo_config,
                                 precision_of, set_epochs)
from tests.utils import DEMO_MASK_RCNN, DEMO_RETINANET


def tiny_retinanet_cfg(tmp_path, work_dir='work'):
    """What tests.utils.tiny_demo_args gives tools/run_demo.py."""
    return load_demo_config(
        DEMO_RETINANET,
        work_dir=str(tmp_path / work_dir),
        data_root=str(tmp_path / 'data'),
        epochs=1,
        img_size=64,
        cfg_options={
            'demo_data.num_train': 8,
            'demo_data.num_val': 4,
            'model.test_cfg.score_thr': 0
        })


def test_retinanet_runner(tmp_path):
    import torch
    from mmengine.runner import Runner
    cfg = tiny_retinanet_cfg(tmp_path)
    assert cfg.model.backbone.type == 'EPSANet'
    assert cfg.model.bbox_head.num_classes == 3
    assert cfg.img_scale == (64, 64)
    ensure_data(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    assert runner.iter == 2
    metrics = runner.test()
    assert 'coco/bbox_mAP' in metrics and 'coco/bbox_mAP_50' in metrics
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))

    # The demo configs' seed (their shared _base_): a second run trains to
    # the same weights, bit for bit.
    again = Runner.from_cfg(tiny_retinanet_cfg(tmp_path, 'again'))
    again.train()
    first, second = runner.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_load_demo_config_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match='config not found'):
        load_demo_config(str(tmp_path / 'nope.py'))
    with pytest.raises(ValueError, match=r'--epochs must be >= 1, got 0'):
        load_demo_config(DEMO_RETINANET, epochs=0)
    with pytest.raises(ValueError, match=r'--img-size must be >= 32, got 8'):
        load_demo_config(DEMO_RETINANET, img_size=8)


def test_set_epochs_stretches_the_schedule():
    cfg = load_demo_config(DEMO_RETINANET)
    set_epochs(cfg, 3)
    assert cfg.train_cfg.max_epochs == cfg.train_cfg.val_interval == 3
    cosine = cfg.param_scheduler[1]
    assert cosine.end == cosine.T_max == 3
    assert cfg.param_scheduler[0].end == 50  # iteration-based: unchanged


def test_format_summary():
    text = format_summary(
        dict(
            config='c.py',
            train_seconds=120.0,
            eval_seconds=3.0,
            iterations=60,
            metrics={'coco/bbox_mAP_50': 0.5},
            outputs={'log': 'x.log'}), 'work')
    assert 'EPSANet demo finished' in text
    assert '60 iterations in 2.0 min (2.00 s/iter)' in text
    assert 'coco/bbox_mAP_50   0.500' in text
    assert osp.join(osp.abspath('work'), 'demo_summary.json') in text


def test_predictions_are_drawn_large_enough_to_read():
    """A 160-px demo image is drawn 6x larger, its boxes and masks with it
    (tensor masks as predicted, BitmapMasks as loaded)."""
    import numpy as np
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    from mmepsa.demo.trainer import DRAW_SIZE, upscale_for_drawing

    image = np.zeros((160, 120, 3), np.uint8)
    sample = DetDataSample()
    masks = np.zeros((1, 160, 120), np.uint8)
    masks[0, 10:20, 30:50] = 1
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[30., 10., 50., 20.]]),
        masks=BitmapMasks(masks, 160, 120))
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[30., 10., 50., 20.]]),
        masks=torch.from_numpy(masks.astype(bool)),
        scores=torch.tensor([0.9]))
    big, factor = upscale_for_drawing(image, sample)
    assert factor == 6 and big.shape == (960, 720, 3)
    assert max(big.shape[:2]) >= DRAW_SIZE
    for instances in (sample.gt_instances, sample.pred_instances):
        assert instances.bboxes.tolist() == [[180., 60., 300., 120.]]
    assert sample.gt_instances.masks.height == 960
    pred = sample.pred_instances.masks
    assert pred.shape == (1, 960, 720) and pred.dtype == torch.bool
    assert pred.sum().item() == 10 * 20 * 36
    # an image that is large enough is left as it is
    large = np.zeros((1000, 600, 3), np.uint8)
    assert upscale_for_drawing(large, DetDataSample())[1] == 1


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bfloat16."""
    import mmepsa.engine
    import mmepsa.engine.optim.cpu_bf16_optim_wrapper as wrapper

    def pretend(supported: bool) -> None:
        for module in (mmepsa.engine, wrapper):
            monkeypatch.setattr(module, 'cpu_bf16_supported',
                                lambda: supported)

    return pretend


@pytest.mark.parametrize('supported', [True, False])
def test_precision_auto_follows_the_cpu(bf16_cpu, supported):
    bf16_cpu(supported)
    cfg = load_demo_config(DEMO_MASK_RCNN)
    assert precision_of(cfg) == ('bf16' if supported else 'fp32')
    assert cfg.optim_wrapper.type == ('CPUBF16OptimWrapper'
                                      if supported else 'OptimWrapper')
    # a config without demo_bf16 (RetinaNet: not measured in bf16) stays
    # float32
    cfg = load_demo_config(DEMO_RETINANET)
    assert (precision_of(cfg), cfg.optim_wrapper.type) == ('fp32',
                                                           'OptimWrapper')
    # asked for explicitly
    cfg = load_demo_config(DEMO_RETINANET, precision='fp32')
    assert (precision_of(cfg), cfg.optim_wrapper.type) == ('fp32',
                                                           'OptimWrapper')
    if supported:
        cfg = load_demo_config(DEMO_RETINANET, precision='bf16')
        assert cfg.optim_wrapper.type == 'CPUBF16OptimWrapper'
    else:
        with pytest.raises(
                ValueError,
                match='needs a CPU with native '
                'bfloat16.*use --precision fp32'):
            load_demo_config(DEMO_RETINANET, precision='bf16')


def test_precision_auto_keeps_the_configs_wrapper(bf16_cpu):
    bf16_cpu(True)
    cfg = load_demo_config(
        DEMO_RETINANET, cfg_options={'optim_wrapper.type': 'AmpOptimWrapper'})
    assert precision_of(cfg) == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    bf16_cpu(False)
    cfg = load_demo_config(
        DEMO_RETINANET,
        cfg_options={'optim_wrapper.type': 'CPUBF16OptimWrapper'})
    assert precision_of(cfg) == 'bf16'
    with pytest.raises(
            ValueError,
            match=r'--precision must be one of '
            r"\('auto', 'fp32', 'bf16'\), got 'fp16'"):
        load_demo_config(DEMO_RETINANET, precision='fp16')


def test_format_summary_says_bf16():
    summary = dict(
        config='c.py',
        train_seconds=120.0,
        eval_seconds=3.0,
        iterations=60,
        metrics={},
        outputs={})
    assert 'precision' not in format_summary(summary, 'work')
    text = format_summary(dict(summary, precision='bf16'), 'work')
    assert '  precision:   bf16 (bfloat16 autocast' in text
    assert '--precision fp32 for float32' in text
    text = format_summary(dict(summary, precision='fp32'), 'work')
    assert '  precision:   fp32' in text
    assert 'no bfloat16' not in text
    text = format_summary(
        dict(summary, precision='fp32', cpu_bf16=False), 'work')
    assert '  precision:   fp32 (this CPU has no bfloat16 instructions' in text
    text = format_summary(
        dict(summary, precision='fp32', cpu_bf16=True), 'work')
    assert text.count('  precision:   fp32\n') == 1


@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_demo(bad):
    """The demo's hook stops at the first non-finite loss, naming it and
    the iteration; a finite loss that requires grad passes without the
    warning torch gives for float() of such a tensor."""
    import warnings

    import torch
    with pytest.raises(
            DemoDiverged, match=f'non-finite loss {bad} at '
            'iteration 7'):
        check_finite_loss(torch.tensor(bad, requires_grad=True), 7)
    with pytest.raises(DemoDiverged, match='iteration 3'):
        check_finite_loss(bad, 3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_finite_loss(torch.tensor(1.5, requires_grad=True), 1)
    check_finite_loss(None, 1)
