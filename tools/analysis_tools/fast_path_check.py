# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast path's cost and gain on this stack: the cost of tuning an input
size in steady steps, and the fast path's time (untuned, tuned, as by
default) against the plain model; exit status 1 past a bound. What it runs
and the bounds: docs/performance.md; the logic:
:mod:`mmepsa.analysis.fast_path_check`. Run it on each stack::

    python tools/analysis_tools/fast_path_check.py --threads 2
"""
import argparse
import os.path as osp

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='the fast path\'s tuning cost and its time against the '
        'plain model, with bounds (exit status 1 past one)')
    parser.add_argument('--depth', type=int, choices=(50, 101), default=50)
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N')
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help='CPU threads (torch.set_num_threads); default: torch\'s')
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--out-dir',
        default=osp.join('work_dirs', 'benchmark'),
        help='where fast_path_check.json/.md go')
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error('--runs must be >= 1')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if torch.device(args.device).type == 'cuda' and \
            not torch.cuda.is_available():
        parser.error('--device cuda but CUDA is not available')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmepsa.analysis.fast_path_check import fast_path_check
    result = fast_path_check(args)
    if not result['ok']:
        raise SystemExit(1)
    return result


if __name__ == '__main__':
    main()
