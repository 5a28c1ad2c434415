# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa's EPSANet vs the authors' formulation vs mmdet's ResNet: time,
memory and the forms the PSA convs' autotuner chose, side by side. The rows,
cases and report: docs/performance.md; the logic:
:mod:`mmepsa.analysis.compare_speed`. Run::

    python tools/analysis_tools/compare_speed.py --out-dir work_dirs/benchmark

``--fast-path-check`` runs the fast path check instead, as
``tools/analysis_tools/fast_path_check.py`` does.
"""
import argparse
import os.path as osp

import torch

from mmepsa.analysis.compare_speed import BACKBONES, MODES, YARDSTICKS


def _size(text: str):
    from mmepsa.analysis.benchmark import parse_nchw
    try:
        return parse_nchw(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='mmepsa EPSANet vs the original formulation vs mmdet '
        'ResNet: time, memory and the autotuner\'s forms, side by side')
    parser.add_argument('--depth', type=int, choices=(50, 101), default=50)
    parser.add_argument(
        '--sizes',
        type=_size,
        nargs='+',
        default=[_size('8x224x224'), _size('1x800x1216')],
        help='backbone input sizes NxHxW')
    parser.add_argument(
        '--modes',
        nargs='+',
        choices=tuple(MODES),
        default=list(MODES),
        help='train: a training step with every BN in training mode; '
        'train-detection: with the backbone settings of mmdet\'s detection '
        'configs (frozen_stages=1, norm_eval=True)')
    parser.add_argument(
        '--models',
        nargs='+',
        choices=[n for n in BACKBONES if n not in YARDSTICKS],
        default=None,
        help='the backbone rows to run besides original and resnet, which '
        'always run (default: all)')
    parser.add_argument(
        '--detector-size',
        type=_size,
        default=_size('1x800x1216'),
        help='input of the Mask R-CNN train step')
    parser.add_argument(
        '--no-detector',
        action='store_true',
        help='skip the Mask R-CNN train step')
    parser.add_argument(
        '--cp-size',
        type=_size,
        default=_size('2x800x1216'),
        help='input of the with_cp memory comparison')
    parser.add_argument(
        '--no-cp', action='store_true', help='skip the with_cp comparison')
    parser.add_argument(
        '--no-compile',
        action='store_true',
        help='skip the torch.compile\'d models (compiling takes tens of '
        'seconds per model and input size on CPU)')
    parser.add_argument(
        '--no-memory',
        action='store_true',
        help='skip the per-model peak memory subprocesses')
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N')
    parser.add_argument(
        '--precisions',
        nargs='+',
        choices=('fp32', 'amp'),
        default=None,
        help='fp32, and amp (float16 autocast; CUDA only). Defaults to fp32 '
        'on CPU, fp32 and amp on CUDA')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='CPU threads (torch.set_num_threads); default: torch\'s')
    parser.add_argument(
        '--fast-path-check',
        action='store_true',
        help='run only the fast path check (tuning cost, fast path vs '
        'plain model) and exit 1 if a bound is exceeded: the same as '
        'tools/analysis_tools/fast_path_check.py')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--out-dir',
        default=osp.join('work_dirs', 'benchmark'),
        help='where benchmark.json/.md/.png go')
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error('--runs must be >= 1 and --warmup >= 0')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda but CUDA is not available')
    if args.precisions is None:
        args.precisions = ['fp32', 'amp'
                           ] if device.type == 'cuda' else ['fp32']
    if 'amp' in args.precisions and device.type != 'cuda':
        parser.error('--precisions amp needs a CUDA device')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fast_path_check:
        from mmepsa.analysis.fast_path_check import fast_path_check
        result = fast_path_check(args)
        if not result['ok']:
            raise SystemExit(1)
        return result
    from mmepsa.analysis.compare_speed import compare_speed
    return compare_speed(args)


if __name__ == '__main__':
    main()
