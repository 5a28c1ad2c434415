# Copyright (c) mmepsa contributors. All rights reserved.
"""Plot loss and mAP curves of a training run into a PNG.

Reads mmengine's ``vis_data/scalars.json`` (or the ``<timestamp>.json`` log,
or a work dir, whose newest run is used)::

    python tools/analysis_tools/plot_curves.py \\
        work_dirs/retinanet_epsanet50/20240101_000000/vis_data/scalars.json \\
        --out curves.png [--keys loss loss_cls coco/bbox_mAP]

The drawing lives in :func:`mmepsa.visualization.plot_curves`, for use from
Python.
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot loss and mAP curves from an mmengine scalar log')
    parser.add_argument(
        'json_log',
        help='vis_data/scalars.json, the <timestamp>.json log, or a work dir')
    parser.add_argument('--out', default='curves.png', help='the PNG to write')
    parser.add_argument(
        '--keys',
        nargs='+',
        help='scalars to plot (default: every loss* and *_mAP key)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--dpi', type=int, default=100)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.exists(args.json_log):
        sys.exit(f'error: log not found: {args.json_log}')
    from mmepsa.visualization import plot_curves
    try:
        result = plot_curves(
            args.json_log,
            args.out,
            keys=args.keys,
            title=args.title,
            dpi=args.dpi)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    if result['missing']:
        print(f'no values for: {", ".join(result["missing"])}')
    print(f'plotted {", ".join(result["keys"])} -> {result["out_png"]}')


if __name__ == '__main__':
    main()
