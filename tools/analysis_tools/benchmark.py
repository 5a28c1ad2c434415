# Copyright (c) mmepsa contributors. All rights reserved.
"""Inference speed (images/s) of EPSANet or of a detector, on random inputs.

Warm-up runs are discarded, then the median time over ``--runs`` timed runs
is reported (CUDA is synchronised around every run). Examples::

    # backbones alone, 224x224, batch 32, on GPU
    python tools/analysis_tools/benchmark.py --arch epsanet50 epsanet101 \\
        --shape 224 --batch-size 32 --device cuda
    # a detector from its config (full predict: backbone, neck, head, NMS)
    python tools/analysis_tools/benchmark.py CONFIG --shape 800 1333 \\
        --device cpu --runs 5
"""
import argparse
import os.path as osp
import statistics
import sys
import time

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
    if args.shape is None:
        args.shape = [800, 1333] if args.config else [224]
    if len(args.shape) == 1:
        args.shape = args.shape * 2
    if len(args.shape) != 2:
        parser.error('--shape takes H or H W')
    if args.runs < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--runs and --batch-size must be >= 1, --warmup >= 0')
    return args


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_model(fn, device: torch.device, warmup: int, runs: int) -> list:
    """Seconds per call of ``fn()``, one value per timed run."""
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def backbone_runner(arch: str, args, device: torch.device):
    from mmepsa.models import EPSANet
    model = EPSANet(depth=ARCHS[arch]).to(device).eval()
    h, w = args.shape
    x = torch.rand(args.batch_size, 3, h, w, device=device)
    return lambda: model(x)


def detector_runner(args, device: torch.device):
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    model = revert_sync_batchnorm(model).to(device).eval()
    h, w = args.shape
    meta = dict(
        img_shape=(h, w),
        ori_shape=(h, w),
        pad_shape=(h, w),
        batch_input_shape=(h, w),
        scale_factor=(1.0, 1.0))
    samples = [DetDataSample(metainfo=meta) for _ in range(args.batch_size)]
    x = torch.rand(args.batch_size, 3, h, w, device=device)
    return lambda: model(x, samples, mode='predict')


def main(argv=None):
    args = parse_args(argv)
    if args.config is not None and not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('error: --device cuda but CUDA is not available')

    import mmepsa  # noqa: F401  (registers EPSANet)

    if args.config is not None:
        jobs = [(osp.splitext(osp.basename(args.config))[0],
                 detector_runner(args, device))]
    else:
        jobs = [(f'{arch} backbone', backbone_runner(arch, args, device))
                for arch in args.arch]

    rows = []
    for name, fn in jobs:
        if args.fp16:
            plain_fn = fn

            def fn(plain_fn=plain_fn):
                with torch.autocast(device.type, dtype=torch.float16):
                    return plain_fn()

        times = time_model(fn, device, args.warmup, args.runs)
        median = statistics.median(times)
        rows.append((name, median, args.batch_size / median))

    h, w = args.shape
    header = (f'{"model":<32} {"input":>14} {"batch":>5} {"device":>8} '
              f'{"ms/batch":>10} {"img/s":>9}')
    print(f'median of {args.runs} runs after {args.warmup} warm-up runs'
          f'{" (fp16)" if args.fp16 else ""}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} CPU threads')
    print(header)
    print('-' * len(header))
    for name, median, ips in rows:
        print(f'{name:<32} {f"{h}x{w}":>14} {args.batch_size:>5} '
              f'{str(device):>8} {median * 1000:>10.1f} {ips:>9.2f}')
    return rows


if __name__ == '__main__':
    main()
