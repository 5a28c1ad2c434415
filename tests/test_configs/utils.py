# Copyright (c) mmepsa contributors. All rights reserved.
"""Helpers of the config tests that train a COCO config on the demo data:
the config's model, optimizer, lr schedule and runtime as they are, with
the demo's data, 2 iterations of 1 image and fewer sampled RoIs, proposals
and queries than COCO's. The fixtures built on them are in ``conftest.py``.
"""
import copy
import math
import os.path as osp

from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmepsa.demo.trainer import load_demo_config
from tests.utils import DEMO_MASK_RCNN, DEMO_RETINANET, REPO

# the demo shapes data set's classes
DEMO_CLASSES = 3


def load(rel_path: str) -> Config:
    """A config of the repository, by its path from the top."""
    return Config.fromfile(osp.join(REPO, rel_path))


def build(model_cfg):
    """A model (or part) of mmdet's registry, from a copy of its config."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(copy.deepcopy(model_cfg))


def without_scope(obj):
    """``obj`` without the ``_scope_`` keys mmengine adds to what a config
    inherits through ``mmdet::``."""
    if isinstance(obj, dict):
        return {k: without_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(without_scope(v) for v in obj)
    return obj


def train_two_iterations(cfg: Config):
    """Train ``cfg`` (already on the demo data, :func:`on_demo_data`): its
    runner, after 2 iterations, and the last train losses, all finite."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    losses = {
        key[len('train/'):]: scalar.current()
        for key, scalar in runner.message_hub.log_scalars.items()
        if key.startswith('train/') and 'loss' in key
    }
    for name, value in losses.items():
        assert math.isfinite(value), (name, value)
    return runner, losses


def demo_cfg(demo_config: str, data_root: str) -> Config:
    """``demo_config`` (a demo config) on 2 training and 2 validation images
    of 64 px under ``data_root``, in float32."""
    return load_demo_config(
        demo_config,
        data_root=data_root,
        img_size=64,
        precision='fp32',
        cfg_options={
            'demo_data.num_train': 2,
            'demo_data.num_val': 2
        })


def _as_list(cfg) -> list:
    return list(cfg) if isinstance(cfg, (list, tuple)) else [cfg]


def _shrink_two_stage(model) -> None:
    """Faster/Mask R-CNN, or a Cascade R-CNN (a list of box heads and of
    R-CNN training settings, one per stage)."""
    roi_head = model.roi_head
    for head in _as_list(roi_head.bbox_head):
        head.num_classes = DEMO_CLASSES
    if 'mask_head' in roi_head:
        for head in _as_list(roi_head.mask_head):
            head.num_classes = DEMO_CLASSES
    model.train_cfg.rpn.sampler.num = 64
    model.train_cfg.rpn_proposal.max_per_img = 32
    for stage in _as_list(model.train_cfg.rcnn):
        stage.sampler.num = 16
    model.test_cfg.rpn.max_per_img = 20
    model.test_cfg.rcnn.max_per_img = 10
    # an untrained model scores below 0.05, and CocoMetric returns no
    # metrics at all for empty results
    model.test_cfg.rcnn.score_thr = 0


def _shrink_detr(model) -> None:
    """DINO: 30 queries (the encoder picks them among its tokens, 85 for a
    64-px image at 4 scales) instead of 900, 10 denoising ones."""
    model.bbox_head.num_classes = DEMO_CLASSES
    model.num_queries = 30
    model.dn_cfg.group_cfg.num_dn_queries = 10
    model.test_cfg.max_per_img = 10


def on_demo_data(cfg: Config, data_root: str, work_dir: str) -> Config:
    """The COCO config ``cfg`` trained for 2 iterations of 1 image on the
    demo data under ``data_root``, then tested on 2 images.

    Example:
        >>> cfg = on_demo_data(Config.fromfile(path), root, work_dir)
        >>> Runner.from_cfg(cfg).train()
    """
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    init_cfg = model.backbone.get('init_cfg')
    if init_cfg and init_cfg.get('type') == 'Pretrained':
        # no ImageNet checkpoint exists: random weights
        model.backbone.init_cfg = None
    with_mask = 'mask_head' in model.get('roi_head', {})
    demo = demo_cfg(DEMO_MASK_RCNN if with_mask else DEMO_RETINANET, data_root)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'val_evaluator', 'test_evaluator'):
        cfg[key] = demo[key]
    cfg.train_dataloader.batch_size = 1
    cfg.train_cfg = dict(
        type='EpochBasedTrainLoop', max_epochs=1, val_interval=10)
    if 'roi_head' in model:
        _shrink_two_stage(model)
    elif 'num_queries' in model:
        _shrink_detr(model)
    else:
        raise ValueError(f'model type {model.type!r}: no shrinking known; '
                         'known: two-stage (roi_head) and DETR (num_queries)')
    # no checkpoint written (~0.5 GB with the optimizer state)
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.visualizer.pop('name', None)  # one per Runner in this process
    # a fixed seed; deterministic also keeps the PSA convs' timing-based
    # autotuning off (seconds of CPU time on the first step)
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.work_dir = work_dir
    return cfg
