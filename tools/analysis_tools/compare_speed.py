# Copyright (c) mmepsa contributors. All rights reserved.
"""Side-by-side speed and memory of mmepsa's EPSANet, the authors' formulation
of EPSANet and mmdet's ResNet, in one process with interleaved runs.

Models (same depth; the two EPSANets share the same random weights):

* ``original``: the authors' EPSANet formulation
  (:class:`mmepsa.testing.RefEPSANet`: four SE passes, the growing
  concatenations, NCHW), the yardstick;
* ``mmepsa``: :class:`mmepsa.models.EPSANet` as a config builds it, with
  the fast path as this stack's defaults have it (:mod:`mmepsa.models.fast`);
* ``mmepsa-untuned``: the fast path with the autotuner off
  (``fast_path(autotune=False)``), so the table shows what it gains;
* ``mmepsa-plain``: the plain model (``fast_path(False)``);
* ``mmepsa-deploy`` (inference only): ``mmepsa`` with conv+BN pairs folded by
  :func:`mmcv.cnn.fuse_conv_bn` (:func:`mmepsa.utils.deploy_model`);
* ``mmepsa-compiled`` (inference only): that, compiled by ``torch.compile``
  with inductor's weight freezing (``deploy_model(compile=True)``);
* ``resnet``: mmdet's ``ResNet`` as a config builds it (NCHW);
* ``resnet-cl``: the same ResNet fed channels-last input, for a
  like-for-like comparison of memory formats;
* ``resnet-compiled`` (inference only): ResNet through the same
  ``deploy_model(compile=True)``, so that the compiled EPSANet is compared
  with a compiled ResNet.

Compilation happens in the warm-up and is not timed (its first-call time is
reported); ``--no-compile`` skips the compiled models.
``--models`` runs only the rows it names besides ``original`` and ``resnet``
(the yardsticks), e.g. for many rounds of two rows.

``--fast-path-check`` runs only the fast path's check instead
(:func:`mmepsa.analysis.compare_speed.fast_path_check`): the cost of tuning
an input size in steady steps and the fast path's steady time (untuned,
tuned, as by default) against the plain model, for a 2x3x800x1088
detection-setting train step and a 1x3x800x1216 inference pass; it exits
with status 1 if a bound is exceeded. Run it on each stack::

    python tools/analysis_tools/compare_speed.py --fast-path-check

For each case (input size x inference / training step = forward + backward,
with every BN in training mode (``train``) or with the backbone settings of
mmdet's detection configs, ``frozen_stages=1, norm_eval=True``
(``train-detection``)) every model runs ``--warmup`` untimed then ``--runs``
timed times, the models taking turns run after run so that load on the machine
hits them alike. The median, min and max, the speed-up over ``original``, the
time ratio to ``resnet``, the peak memory of one step (a fresh subprocess per
model: RSS high-water mark on CPU, ``torch.cuda.max_memory_allocated`` on GPU)
and the largest relative difference to ``original`` (outputs; gradients for
training) are reported, with the machine (CPU model and ISA flags, threads,
GPU, library versions). Also measured: a whole Mask R-CNN train step with each
backbone formulation (and ``mmepsa-nchw-neck``: mmepsa's config with the
backbone's features made contiguous NCHW for mmdet's FPN, instead of its
channels-last features into ``ChannelsLastFPN``), and the peak memory of a
backbone train step with and without ``with_cp``. Writes ``benchmark.json``,
``benchmark.md`` and ``benchmark.png`` to ``--out-dir``. The logic is in
:mod:`mmepsa.analysis.compare_speed`, its model list in
``mmepsa.analysis.compare_speed.BACKBONES``. Example (the README's command)::

    python tools/analysis_tools/compare_speed.py --out-dir work_dirs/benchmark
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
        'ResNet: time, memory and output differences, side by side')
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
        'plain model) and exit 1 if a bound is exceeded')
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
    from mmepsa.analysis.compare_speed import compare_speed, fast_path_check
    if args.fast_path_check:
        result = fast_path_check(args)
        if not result['ok']:
            raise SystemExit(1)
        return result
    return compare_speed(args)


if __name__ == '__main__':
    main()
