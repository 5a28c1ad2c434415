# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo ("main job"): train Mask R-CNN EPSANet-50(S) from scratch on a
synthetic shapes dataset on CPU, evaluate it, and plot the results.

Steps:
  1. generate the dataset (``mmepsa.datasets.demo_data``) if it is missing,
     with the parameters in the config's ``demo_data``;
  2. train with mmengine's Runner (the config's schedule; the log shows
     progress every few iterations) and evaluate on the val split with
     mmdet's CocoMetric (bbox, and segm for Mask R-CNN);
  3. write a loss-curve PNG (from the run's ``vis_data/scalars.json``) and a
     PNG of predictions on a val image (mmdet's DetLocalVisualizer);
  4. print a summary with the final metrics and the output paths.

Usage::

    .venv/bin/python tools/run_demo.py                      # make demo
    .venv/bin/python tools/run_demo.py --epochs 2 --work-dir work_dirs/x

Exits 1 on bad input, 2 if training produced a non-finite loss.
"""
import os

# On a shared CPU, spinning OpenMP threads slow the run down many times over
# (set the variable yourself to override).
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os.path as osp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(REPO, 'configs', 'demo',
                          'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate the EPSANet demo on synthetic shapes '
        '(CPU is fine).')
    parser.add_argument(
        '--config', default=DEFAULT_CONFIG,
        help='demo config (default: the Mask R-CNN EPSANet-50(S) one)')
    parser.add_argument(
        '--work-dir', help="outputs go here (default: the config's "
        "work_dir, work_dirs/demo)")
    parser.add_argument(
        '--data-root', help='where the dataset is (generated if missing; '
        "default: the config's data_root)")
    parser.add_argument(
        '--epochs', type=int, help="override the config's number of "
        'epochs (the lr schedule is stretched to match)')
    parser.add_argument(
        '--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
        help='override config settings, as in mmdet tools/train.py')
    parser.add_argument(
        '--img-size', type=int, help='side of the generated images and of '
        "the Resize scale (default: the config's; changes the calibration)")
    parser.add_argument(
        '--vis-image', type=int, default=0,
        help='index of the val image to draw predictions on')
    return parser.parse_args(argv)


def fail(msg, code=1):
    print(f'run_demo: error: {msg}', file=sys.stderr)
    sys.exit(code)


def load_config(args):
    from mmengine.config import Config, DictAction
    if not osp.isfile(args.config):
        fail(f'config not found: {args.config}')
    try:
        cfg = Config.fromfile(args.config)
    except Exception as e:  # noqa: BLE001 - report any config error plainly
        fail(f'could not load config {args.config}: '
             f'{type(e).__name__}: {e}')
    if args.cfg_options:
        action = DictAction(option_strings=[], dest='cfg_options')
        ns = argparse.Namespace()
        action(None, ns, args.cfg_options)
        cfg.merge_from_dict(ns.cfg_options)
    if args.epochs is not None:
        if args.epochs < 1:
            fail(f'--epochs must be >= 1, got {args.epochs}')
        set_epochs(cfg, args.epochs)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    # a name of its own, so that runs in one process don't share one
    # visualizer (and its save_dir)
    if cfg.get('visualizer') is not None:
        cfg.visualizer.pop('name', None)
    cfg.setdefault('work_dir', osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0]))
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.img_size is not None:
        if args.img_size < 32:
            fail(f'--img-size must be >= 32, got {args.img_size}')
        set_img_size(cfg, args.img_size)
    return cfg


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


def ensure_data(cfg):
    from mmepsa.datasets.demo_data import make_demo_dataset
    data_root = cfg.train_dataloader.dataset.data_root
    params = dict(cfg.get('demo_data', {}) or {})
    make_demo_dataset(data_root, **params)


def plot_losses(work_dir, log_dir, out_png):
    """Plot the loss terms logged in ``vis_data/scalars.json``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    if not osp.isfile(path):
        path = osp.join(log_dir, osp.basename(log_dir) + '.json')
    if not osp.isfile(path):
        return None
    series = {}
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if 'iter' not in rec or 'loss' not in rec:
                continue
            for k, v in rec.items():
                if k.startswith('loss') or k == 'lr':
                    series.setdefault(k, []).append((rec['iter'], v))
    if 'loss' not in series:
        return None
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True,
        gridspec_kw=dict(height_ratios=[3, 1]))
    for k, pts in sorted(series.items()):
        if k == 'lr':
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, label=k, lw=2.0 if k == 'loss' else 1.0)
    ax.set_ylabel('loss')
    ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title('EPSANet demo: training losses')
    if 'lr' in series:
        xs, ys = zip(*series['lr'])
        ax_lr.plot(xs, ys, color='k')
    ax_lr.set_ylabel('lr')
    ax_lr.set_xlabel('iteration')
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def draw_predictions(runner, index, out_png, score_thr=0.3):
    """Predict on val image ``index`` with the trained model and draw the
    ground truth (left) and the predictions (right) with mmdet's
    DetLocalVisualizer."""
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
        t.get('with_mask', False) for t in runner.cfg.val_dataloader.dataset
        .pipeline if t.get('type') == 'LoadAnnotations')
    gt = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True,
             with_mask=with_mask),
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
    vis.add_datasample(
        'prediction', image, result, draw_gt=True, draw_pred=True,
        show=False, pred_score_thr=score_thr, out_file=out_png)
    return out_png, info['img_path']


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    # Import after argument checks so that `--help` and bad input are quick.
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    try:
        ensure_data(cfg)
    except (OSError, ValueError, TypeError) as e:
        fail(f'could not generate the demo data: {e}')

    final_metrics = {}
    val_time = {'start': None, 'seconds': 0.0}

    class _DemoHook(Hook):
        """Records the val metrics and stops at the first non-finite loss
        (so that a diverged run ends at once, with its checkpoints)."""
        priority = 'LOWEST'

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            loss = (outputs or {}).get('loss')
            if loss is not None and not math.isfinite(float(loss)):
                raise FloatingPointError(
                    f'non-finite loss {float(loss)} at iteration '
                    f'{runner.iter}')

        def before_val_epoch(self, runner):
            val_time['start'] = time.time()

        def after_val_epoch(self, runner, metrics=None):
            final_metrics.update(metrics or {})
            val_time['seconds'] += time.time() - val_time['start']

    runner = Runner.from_cfg(cfg)
    runner.register_hook(_DemoHook())
    t0 = time.time()
    try:
        runner.train()
    except FloatingPointError as e:
        print(f'run_demo: training diverged: {e}. Checkpoints and logs are '
              f'in {cfg.work_dir}; lower the lr (optim_wrapper.optimizer.lr)'
              ' or keep grad clipping on.', file=sys.stderr)
        return 2
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
        outputs['loss curve'] = plot_losses(
            work_dir, log_dir, osp.join(work_dir, 'loss_curve.png'))
    except Exception as e:  # noqa: BLE001 - plotting must not lose the run
        print(f'run_demo: warning: could not plot the losses: {e}')
    try:
        outputs['predictions'], img = draw_predictions(
            runner, args.vis_image, osp.join(work_dir, 'predictions.png'))
    except Exception as e:  # noqa: BLE001
        print(f'run_demo: warning: could not draw predictions: {e}')
    ckpt = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(ckpt):
        with open(ckpt) as f:
            outputs['checkpoint'] = f.read().strip()
    outputs['log'] = osp.join(log_dir, osp.basename(log_dir) + '.log')
    summary = dict(
        config=args.config,
        train_seconds=round(train_s, 1),
        eval_seconds=round(val_s, 1),
        iterations=runner.iter,
        metrics={k: (round(float(v), 4) if isinstance(v, (int, float)) else v)
                 for k, v in metrics.items()},
        outputs={k: v for k, v in outputs.items() if v})
    with open(osp.join(work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)

    print('\n' + '=' * 60)
    print('EPSANet demo finished')
    print(f'  config:      {args.config}')
    print(f'  trained:     {runner.iter} iterations in {train_s / 60:.1f} '
          f'min ({train_s / max(runner.iter, 1):.2f} s/iter); evaluated '
          f'in {val_s:.0f} s')
    for key in ('coco/bbox_mAP_50', 'coco/bbox_mAP', 'coco/segm_mAP_50',
                'coco/segm_mAP'):
        if key in metrics:
            print(f'  {key:18s} {float(metrics[key]):.3f}')
    for k, v in summary['outputs'].items():
        print(f'  {k + ":":13s}{v}')
    print(f'  summary:     {osp.join(work_dir, "demo_summary.json")}')
    print('=' * 60)
    return 0


if __name__ == '__main__':
    sys.exit(main())
