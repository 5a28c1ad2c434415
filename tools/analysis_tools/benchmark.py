# Copyright (c) mmepsa contributors. All rights reserved.
"""Inference speed (images/s) of EPSANet or of a detector, on random inputs.

Warm-up runs are discarded, then the median time over ``--runs`` timed runs
is reported (CUDA is synchronised around every run), with the machine it
ran on. The logic is in :mod:`mmepsa.analysis.benchmark`. Examples::

    # backbones alone, 224x224, batch 32, on GPU
    python tools/analysis_tools/benchmark.py --arch epsanet50 epsanet101 \\
        --shape 224 --batch-size 32 --device cuda
    # a detector from its config (full predict: backbone, neck, head, NMS)
    python tools/analysis_tools/benchmark.py CONFIG --shape 800 1333 \\
        --device cpu --runs 5

For the side-by-side comparison with the authors' formulation and mmdet's
ResNet (time, memory, differences), see ``compare_speed.py``.
"""
import argparse
import os.path as osp
import statistics
import sys

import torch
from mmengine.config import DictAction

ARCHS = {'epsanet50': 50, 'epsanet101': 101}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Images/s of EPSANet backbones or of a detector config')
    parser.add_argument(
        'config', nargs='?', help='detector config (else: --arch backbones)')
    parser.add_argument(
        '--arch',
        nargs='+',
        choices=sorted(ARCHS),
        default=['epsanet50'],
        help='EPSANet backbones to time when no config is given')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=None,
        help='input size H [W]; defaults to 224 (backbone) or 800 1333 '
        '(detector)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument(
        '--device',
        default='cuda' if torch.cuda.is_available() else 'cpu',
        help='cpu, cuda or cuda:N')
    parser.add_argument(
        '--warmup', type=int, default=3, help='untimed runs first')
    parser.add_argument('--runs', type=int, default=10, help='timed runs')
    parser.add_argument(
        '--fp16', action='store_true', help='autocast to float16 (CUDA)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    from mmepsa.analysis.benchmark import parse_hw
    try:
        args.shape = parse_hw(args.shape,
                              [800, 1333] if args.config else [224])
    except ValueError as e:
        parser.error(str(e))
    if args.runs < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--runs and --batch-size must be >= 1, --warmup >= 0')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.config is not None and not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('error: --device cuda but CUDA is not available')

    from mmepsa.analysis.benchmark import (autocast, build_detector,
                                           describe_machine, detector_inputs,
                                           machine_info, time_runs)
    from mmepsa.models import EPSANet

    h, w = args.shape
    if args.config is not None:
        model = build_detector(args.config, args.cfg_options, device)
        x, samples = detector_inputs((h, w), args.batch_size, device)
        jobs = {
            osp.splitext(osp.basename(args.config))[0]:
            lambda: model(x, samples, mode='predict')
        }
    else:
        x = torch.rand(args.batch_size, 3, h, w, device=device)
        jobs = {}
        for arch in args.arch:
            backbone = EPSANet(depth=ARCHS[arch]).to(device).eval()
            jobs[f'{arch} backbone'] = lambda m=backbone: m(x)

    rows = []
    for name, fn in jobs.items():
        with autocast(device, 'amp' if args.fp16 else 'fp32'):
            times = time_runs(fn, device, args.warmup, args.runs)
        median = statistics.median(times)
        rows.append((name, median, args.batch_size / median))

    header = (f'{"model":<32} {"input":>14} {"batch":>5} {"device":>8} '
              f'{"ms/batch":>10} {"img/s":>9}')
    print(f'median of {args.runs} runs after {args.warmup} warm-up runs'
          f'{" (fp16)" if args.fp16 else ""}, '
          f'{describe_machine(machine_info(device))}')
    print(header)
    print('-' * len(header))
    for name, median, ips in rows:
        print(f'{name:<32} {f"{h}x{w}":>14} {args.batch_size:>5} '
              f'{str(device):>8} {median * 1000:>10.1f} {ips:>9.2f}')
    return rows


if __name__ == '__main__':
    main()
