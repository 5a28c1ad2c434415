# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo ("main job"): train Mask R-CNN EPSANet-50(S) from scratch on a
synthetic shapes dataset on CPU, evaluate it, and plot the results.

Steps (the logic is in :mod:`mmepsa.demo.trainer`):
  1. generate the dataset (``mmepsa.demo.data``) if it is missing,
     with the parameters in the config's ``demo_data``;
  2. train with mmengine's Runner (the config's schedule; the log shows
     progress every few iterations) and evaluate on the val split with
     mmdet's CocoMetric (bbox, and segm for Mask R-CNN);
  3. write the loss and mAP curves (``loss_curve.png``, from the run's
     ``vis_data/scalars.json``) and a PNG of predictions on a val image
     (mmdet's DetLocalVisualizer);
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
import os.path as osp  # noqa: E402
import sys  # noqa: E402

from mmengine.config import DictAction  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(REPO, 'configs', 'demo',
                          'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate the EPSANet demo on synthetic shapes '
        '(CPU is fine).')
    parser.add_argument(
        '--config',
        default=DEFAULT_CONFIG,
        help='demo config (default: the Mask R-CNN EPSANet-50(S) one)')
    parser.add_argument(
        '--work-dir',
        help="outputs go here (default: the config's "
        'work_dir, work_dirs/demo)')
    parser.add_argument(
        '--data-root',
        help='where the dataset is (generated if missing; '
        "default: the config's data_root)")
    parser.add_argument(
        '--epochs',
        type=int,
        help="override the config's number of "
        'epochs (the lr schedule is stretched to match)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config settings, as in mmdet tools/train.py')
    parser.add_argument(
        '--img-size',
        type=int,
        help='side of the generated images and of '
        "the Resize scale (default: the config's; changes the calibration)")
    parser.add_argument(
        '--precision',
        choices=('auto', 'fp32', 'bf16'),
        default='auto',
        help='training precision: bf16 = bfloat16 autocast on a CPU with '
        'native bfloat16 (AVX512-BF16/AMX); auto (default) = bf16 on such a '
        'CPU, else fp32')
    parser.add_argument(
        '--vis-image',
        type=int,
        default=0,
        help='index of the val image to draw predictions on')
    return parser.parse_args(argv)


def fail(msg, code=1):
    print(f'run_demo: error: {msg}', file=sys.stderr)
    sys.exit(code)


def main(argv=None):
    args = parse_args(argv)
    # Import after argument parsing so that `--help` is quick.
    from mmepsa.demo.trainer import (DemoDataError, DemoDiverged,
                                     format_summary, load_demo_config,
                                     run_demo)
    try:
        cfg = load_demo_config(args.config, args.work_dir, args.data_root,
                               args.epochs, args.cfg_options, args.img_size,
                               args.precision)
    except (OSError, ValueError) as e:
        fail(e)
    try:
        summary = run_demo(cfg, args.vis_image)
    except DemoDiverged as e:
        print(
            f'run_demo: training diverged: {e}. Checkpoints and logs are '
            f'in {cfg.work_dir}; lower the lr (optim_wrapper.optimizer.lr)'
            ' or keep grad clipping on.',
            file=sys.stderr)
        return 2
    except DemoDataError as e:
        fail(e)
    print(format_summary(summary, cfg.work_dir))
    return 0


if __name__ == '__main__':
    sys.exit(main())
