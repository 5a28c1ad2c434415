# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo ("main job") behind ``tools/run_demo.py``: train a demo config
from scratch on the synthetic shapes dataset (generated if missing), evaluate
it, draw the loss curves (:func:`mmepsa.visualization.plot_curves`) and the
predictions on a val image, and write a summary.

Example:
    >>> from mmepsa.demo import load_demo_config, run_demo
    >>> cfg = load_demo_config('configs/demo/'
    ...                        'mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
    ...                        epochs=1)  # doctest: +SKIP
    >>> summary = run_demo(cfg)  # doctest: +SKIP
"""
import json
import math
import os.path as osp
import time
from typing import Optional

from mmengine.config import Config

#: ``precision`` values of :func:`load_demo_config` (``--precision``).
PRECISIONS = ('auto', 'fp32', 'bf16')

#: The metrics the summary prints, when the run has them.
SUMMARY_METRICS = ('coco/bbox_mAP_50', 'coco/bbox_mAP', 'coco/segm_mAP_50',
                   'coco/segm_mAP')


class DemoDiverged(FloatingPointError):
    """Training produced a non-finite loss."""


class DemoDataError(ValueError):
    """The demo dataset could not be generated."""


def check_finite_loss(loss, iteration: int) -> None:
    """Raise :class:`DemoDiverged` if ``loss`` (a number or a tensor, which
    may require grad; None: nothing to check) is not finite."""
    if loss is None:
        return
    value = float(loss.detach()) if hasattr(loss, 'detach') else float(loss)
    if not math.isfinite(value):
        raise DemoDiverged(f'non-finite loss {value} at iteration {iteration}')


def load_demo_config(config: str,
                     work_dir: Optional[str] = None,
                     data_root: Optional[str] = None,
                     epochs: Optional[int] = None,
                     cfg_options: Optional[dict] = None,
                     img_size: Optional[int] = None,
                     precision: str = 'auto') -> Config:
    """The demo config with the overrides of ``tools/run_demo.py``; the
    training precision as :func:`set_precision` chooses it (read it back
    with :func:`precision_of`).

    Raises:
        FileNotFoundError: no such config.
        ValueError: the config cannot be loaded, or ``epochs < 1``, or
            ``img_size < 32``, or ``precision`` is not one of
            :data:`PRECISIONS` or not possible here.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    try:
        cfg = Config.fromfile(config)
    except Exception as e:  # noqa: BLE001 - report any config error plainly
        raise ValueError(f'could not load config {config}: '
                         f'{type(e).__name__}: {e}') from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f'--epochs must be >= 1, got {epochs}')
        set_epochs(cfg, epochs)
    if work_dir:
        cfg.work_dir = work_dir
    # a name of its own, so that runs in one process don't share one
    # visualizer (and its save_dir)
    if cfg.get('visualizer') is not None:
        cfg.visualizer.pop('name', None)
    cfg.setdefault(
        'work_dir', osp.join('work_dirs',
                             osp.splitext(osp.basename(config))[0]))
    if data_root:
        set_data_root(cfg, data_root)
    if img_size is not None:
        if img_size < 32:
            raise ValueError(f'--img-size must be >= 32, got {img_size}')
        set_img_size(cfg, img_size)
    set_precision(cfg, precision)
    return cfg


def precision_of(cfg: Config) -> str:
    """The precision ``cfg``'s optimizer wrapper trains in: ``'fp32'``
    (mmengine's ``OptimWrapper``), ``'bf16'`` (``CPUBF16OptimWrapper``) or,
    for another wrapper, its type."""
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    return {
        'OptimWrapper': 'fp32',
        'CPUBF16OptimWrapper': 'bf16'
    }.get(wrapper, wrapper)


def set_precision(cfg: Config, precision: str = 'auto') -> str:
    """Train in float32 (``'fp32'``: mmengine's ``OptimWrapper``) or under
    CPU bfloat16 autocast (``'bf16'``: :class:`~mmepsa.engine.
    CPUBF16OptimWrapper`, what ``tools/train.py --amp`` uses on a CPU).
    ``'auto'`` keeps an optimizer wrapper other than the plain one that the
    config (or ``--cfg-options``) names, and otherwise picks bf16 for a
    config that was measured to train well in it (``demo_bf16 = True``: the
    Mask R-CNN demo, docs/demo.md) when the run is
    on a CPU with native bfloat16 (AVX512-BF16 or AMX), and fp32
    otherwise.
    Returns :func:`precision_of` of the result."""
    from mmengine.device import get_device

    from mmepsa.engine import cpu_bf16_supported, use_amp

    if precision not in PRECISIONS:
        raise ValueError(f'--precision must be one of {PRECISIONS}, got '
                         f'{precision!r}')
    on_cpu = get_device() == 'cpu'
    if precision == 'auto':
        named = precision_of(cfg)
        if named != 'fp32':  # another wrapper, named by the config
            return named
        precision = 'bf16' if (cfg.get('demo_bf16', False) and on_cpu
                               and cpu_bf16_supported()) else 'fp32'
    if precision == 'fp32':
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
        return 'fp32'
    if not on_cpu:
        raise ValueError('--precision bf16 is CPU bfloat16 autocast; on a '
                         f'{get_device()} device use fp32 (or train.py --amp)')
    if not cpu_bf16_supported():
        raise ValueError('--precision bf16 needs a CPU with native bfloat16 '
                         '(avx512_bf16 or amx_bf16 in /proc/cpuinfo); this '
                         'one has neither: use --precision fp32')
    use_amp(cfg)
    return 'bf16'


def set_img_size(cfg, size):
    """Generate ``size`` px images and resize to ``(size, size)``."""
    if cfg.get('demo_data') is not None:
        cfg.demo_data.img_size = size
    cfg.img_scale = (size, size)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key) is None:
            continue
        for t in cfg[key].dataset.get('pipeline', []):
            if t.get('type') == 'Resize':
                t['scale'] = (size, size)


def set_epochs(cfg, epochs):
    """Set the number of epochs; evaluation stays after the last one and
    epoch-based lr schedulers are stretched to the new length."""
    old = cfg.train_cfg.get('max_epochs')
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    for sched in cfg.get('param_scheduler', None) or []:
        if not sched.get('by_epoch', True):
            continue
        if sched.get('end') == old:
            sched['end'] = epochs
        if 'T_max' in sched:
            sched['T_max'] = epochs
        if 'milestones' in sched and old:
            sched['milestones'] = [
                max(1, round(m * epochs / old)) for m in sched['milestones']
            ]


def set_data_root(cfg, data_root):
    data_root = data_root.rstrip('/') + '/'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key) is not None:
            cfg[key].dataset.data_root = data_root
    for key in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(key)
        if ev is not None and 'ann_file' in ev:
            ev.ann_file = osp.join(data_root, 'annotations',
                                   osp.basename(ev.ann_file))
    cfg.data_root = data_root


def ensure_data(cfg: Config) -> str:
    """Generate the config's demo dataset (parameters: ``cfg.demo_data``)
    unless it is there; returns its root."""
    from .data import make_demo_dataset
    data_root = cfg.train_dataloader.dataset.data_root
    params = dict(cfg.get('demo_data', {}) or {})
    return make_demo_dataset(data_root, **params)


#: predictions.png draws each image at least this many pixels on its longer
#: side, so that mmdet's labels (their font size follows the image size) do
#: not cover small objects and each other.
DRAW_SIZE = 960


def upscale_for_drawing(image, data_sample, min_size: int = DRAW_SIZE):
    """Scale ``image`` (H x W x 3) and the boxes and masks of
    ``data_sample``'s ``gt_instances``/``pred_instances`` by the integer
    factor that brings the longer side to at least ``min_size``; returns the
    image and the factor (1 for an image that is large enough)."""
    import mmcv
    import torch
    import torch.nn.functional as F

    factor = max(1, math.ceil(min_size / max(image.shape[:2])))
    if factor == 1:
        return image, 1
    image = mmcv.imrescale(image, factor, interpolation='bilinear')
    for key in ('gt_instances', 'pred_instances'):
        instances = data_sample.get(key)
        if instances is None:
            continue
        if 'bboxes' in instances:
            instances.bboxes = instances.bboxes * factor
        if 'masks' in instances:
            masks = instances.masks
            if isinstance(masks, torch.Tensor):
                instances.masks = F.interpolate(
                    masks[None].float(), scale_factor=factor,
                    mode='nearest')[0] > 0.5
            else:  # mmdet's BitmapMasks / PolygonMasks
                instances.masks = masks.rescale(factor)
    return image, factor


def draw_predictions(runner, index, out_png, score_thr=0.5):
    """Predict on val image ``index`` with the trained model and draw the
    ground truth (left) and the predictions with a score of at least
    ``score_thr`` (right) with mmdet's DetLocalVisualizer, scaled up to
    :data:`DRAW_SIZE` pixels so that every label can be read (at mmdet's
    default of 0.3 the demo model's overlapping low-score duplicates hid
    each other's labels)."""
    import copy

    import mmcv
    import torch
    from mmdet.registry import VISUALIZERS
    from mmengine.dataset import Compose, pseudo_collate

    dataset = runner.val_dataloader.dataset
    index = min(max(index, 0), len(dataset) - 1)
    info = dataset.get_data_info(index)
    model = runner.model
    model.eval()
    with torch.no_grad():
        result = model.test_step(pseudo_collate([dataset[index]]))[0]
    # ground truth in the original image's coordinates, as predictions are
    with_mask = any(
        t.get('with_mask', False)
        for t in runner.cfg.val_dataloader.dataset.pipeline
        if t.get('type') == 'LoadAnnotations')
    gt = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask),
        dict(type='PackDetInputs')
    ])(copy.deepcopy(info))['data_samples']
    gt_instances = gt.gt_instances
    if hasattr(gt_instances.bboxes, 'tensor'):  # the visualizer wants tensors
        gt_instances.bboxes = gt_instances.bboxes.tensor
    result.gt_instances = gt_instances
    vis = VISUALIZERS.build(
        dict(type='DetLocalVisualizer', name=f'demo_pred_{time.time_ns()}'))
    vis.dataset_meta = dataset.metainfo
    image = mmcv.imconvert(mmcv.imread(info['img_path']), 'bgr', 'rgb')
    image, _ = upscale_for_drawing(image, result)
    vis.add_datasample(
        'prediction',
        image,
        result,
        draw_gt=True,
        draw_pred=True,
        show=False,
        pred_score_thr=score_thr,
        out_file=out_png)
    return out_png, info['img_path']


def run_demo(cfg: Config, vis_image: int = 0) -> dict:
    """Generate the data, train, evaluate, plot; returns the summary (also
    written to ``<work_dir>/demo_summary.json``).

    Raises:
        DemoDataError: the dataset could not be generated.
        DemoDiverged: a non-finite loss; training stopped there (its
            checkpoints and logs are in the work dir).
    """
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from mmepsa.engine import cpu_bf16_supported
    from mmepsa.visualization import plot_curves

    try:
        ensure_data(cfg)
    except (OSError, ValueError, TypeError) as e:
        raise DemoDataError(f'could not generate the demo data: {e}') from e
    final_metrics = {}
    val_time = {'start': None, 'seconds': 0.0}

    class _DemoHook(Hook):
        """Records the val metrics and stops at the first non-finite loss
        (so that a diverged run ends at once, with its checkpoints)."""
        priority = 'LOWEST'

        def after_train_iter(self,
                             runner,
                             batch_idx,
                             data_batch=None,
                             outputs=None):
            check_finite_loss((outputs or {}).get('loss'), runner.iter)

        def before_val_epoch(self, runner):
            val_time['start'] = time.time()

        def after_val_epoch(self, runner, metrics=None):
            final_metrics.update(metrics or {})
            val_time['seconds'] += time.time() - val_time['start']

    runner = Runner.from_cfg(cfg)
    runner.register_hook(_DemoHook())
    t0 = time.time()
    runner.train()
    metrics = final_metrics
    if not metrics:  # no evaluation during training: evaluate now
        metrics = runner.val() or {}
    total_s = time.time() - t0
    val_s = val_time['seconds']
    train_s = total_s - val_s

    work_dir = osp.abspath(cfg.work_dir)
    log_dir = runner.log_dir
    outputs = {}
    try:
        outputs['loss curve'] = plot_curves(
            log_dir,
            osp.join(work_dir, 'loss_curve.png'),
            title='EPSANet demo: training losses and mAP')['out_png']
    except Exception as e:  # noqa: BLE001 - plotting must not lose the run
        print(f'run_demo: warning: could not plot the losses: {e}')
    try:
        outputs['predictions'], _ = draw_predictions(
            runner, vis_image, osp.join(work_dir, 'predictions.png'))
    except Exception as e:  # noqa: BLE001
        print(f'run_demo: warning: could not draw predictions: {e}')
    ckpt = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(ckpt):
        with open(ckpt) as f:
            outputs['checkpoint'] = f.read().strip()
    outputs['log'] = osp.join(log_dir, osp.basename(log_dir) + '.log')
    summary = dict(
        config=cfg.filename,
        train_seconds=round(train_s, 1),
        eval_seconds=round(val_s, 1),
        iterations=runner.iter,
        precision=precision_of(cfg),
        cpu_bf16=cpu_bf16_supported(),
        metrics={
            k: (round(float(v), 4) if isinstance(v, (int, float)) else v)
            for k, v in metrics.items()
        },
        outputs={k: v
                 for k, v in outputs.items() if v})
    with open(osp.join(work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    return summary


def format_summary(summary: dict, work_dir: str) -> str:
    """The summary block the demo prints at the end."""
    train_s, iters = summary['train_seconds'], summary['iterations']
    lines = [
        '', '=' * 60, 'EPSANet demo finished',
        f"  config:      {summary['config']}",
        f'  trained:     {iters} iterations in {train_s / 60:.1f} min '
        f'({train_s / max(iters, 1):.2f} s/iter); evaluated in '
        f"{summary['eval_seconds']:.0f} s"
    ]
    precision = summary.get('precision')
    if precision == 'bf16':
        lines.append('  precision:   bf16 (bfloat16 autocast in the backbone '
                     'and neck: this CPU has native bfloat16; --precision '
                     'fp32 for float32)')
    elif precision == 'fp32' and summary.get('cpu_bf16') is False:
        lines.append('  precision:   fp32 (this CPU has no bfloat16 '
                     'instructions, avx512_bf16 or amx_bf16)')
    elif precision is not None:
        lines.append(f'  precision:   {precision}')
    for key in SUMMARY_METRICS:
        if key in summary['metrics']:
            lines.append(f"  {key:18s} {float(summary['metrics'][key]):.3f}")
    for k, v in summary['outputs'].items():
        lines.append(f'  {k + ":":13s}{v}')
    path = osp.join(osp.abspath(work_dir), 'demo_summary.json')
    lines.append(f'  summary:     {path}')
    lines.append('=' * 60)
    return '\n'.join(lines)
