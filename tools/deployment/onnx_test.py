# Copyright (c) mmepsa contributors. All rights reserved.
"""Evaluate an exported ONNX detector under onnxruntime or OpenVINO over
its config's test set with the config's evaluator (mmdet's CocoMetric);
with ``--checkpoint``, PyTorch beside it on the same images, and the two
compared (``mmepsa.deployment.evaluate_onnx``; docs/deployment.md)::

    python tools/deployment/onnx_test.py CONFIG MODEL.onnx \\
        --checkpoint CHECKPOINT --out results.json \\
        [--backend openvino --precision bf16 [--static-shapes]]

``--backend openvino`` also runs an IR ``.xml`` (the int8 one of
``tools/deployment/quantize.py``: ``--precision int8``, or none given).
``--batch-size N`` evaluates N images a batch. ``--latency 4x800x1216``
(NxHxW: N images, one batch, or ``--latency-batch-sizes``) times the model
against PyTorch eager on random pixels, or ``--images`` resized, of that
size instead (``mmepsa.deployment.compare_latency``; needs
``--checkpoint``)::

    python tools/deployment/onnx_test.py CONFIG MODEL.onnx \\
        --checkpoint CHECKPOINT --latency 4x800x1216 --threads 2 \\
        --latency-batch-sizes 1 4

Exits 1 on bad input, 3 when the model and PyTorch differ by more than
the precision's tolerances (fp32: mAP 0.005 and matched boxes' IoU 0.99;
bf16: mAP 0.01; int8 and int8-bf16: mAP 0.02).
"""
import argparse
import json
import os
import os.path as osp
import pickle
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Evaluate an ONNX detector with onnxruntime (and '
        'compare it with PyTorch)')
    parser.add_argument('config', help='the detector config it came from')
    parser.add_argument(
        'model', help='the .onnx file (OpenVINO: or an IR .xml)')
    parser.add_argument(
        '--backend',
        default='onnxruntime',
        choices=('onnxruntime', 'openvino'),
        help='the runtime (default onnxruntime)')
    parser.add_argument(
        '--precision',
        choices=('fp32', 'bf16', 'int8', 'int8-bf16'),
        help='all but fp32 need --backend openvino, int8 and int8-bf16 '
        '(int8 with the rest in bf16) an int8 .xml; default: what the file '
        'holds (int8 for an int8 .xml, else fp32)')
    parser.add_argument(
        '--static-shapes',
        action='store_true',
        help='OpenVINO: compile the model for each input shape met (faster '
        'where images keep one size; a compile per new shape)')
    parser.add_argument(
        '--streams',
        type=int,
        default=1,
        help='split each batch over this many streams at once, the threads '
        'shared among them (default 1)')
    parser.add_argument(
        '--checkpoint',
        help='the checkpoint it was exported from: '
        'evaluate PyTorch too and compare')
    parser.add_argument(
        '--threads',
        type=int,
        help='the runtime\'s (and, with --latency, '
        'torch\'s) threads (default: the runtime\'s, one per core; 2 with '
        '--latency)')
    parser.add_argument(
        '--max-images', type=int, help='stop after this many images')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=1,
        help='images a batch, for the model and PyTorch (default 1)')
    parser.add_argument('--out', help='write the results here (JSON)')
    parser.add_argument(
        '--latency',
        metavar='NxHxW',
        help='time the model against PyTorch eager on a batch of N images '
        'of H x W instead of evaluating (e.g. 1x800x1216, 4x800x1216)')
    parser.add_argument(
        '--images',
        nargs='+',
        help='--latency: image files, resized (default: random pixels)')
    parser.add_argument(
        '--latency-batch-sizes',
        type=int,
        nargs='+',
        metavar='B',
        help='--latency: run the N images in batches of B, each B in turns '
        '(each divides N; default: one batch of N)')
    parser.add_argument(
        '--warmup',
        type=int,
        default=2,
        help='--latency: untimed rounds (default 2)')
    parser.add_argument(
        '--runs',
        type=int,
        default=5,
        help='--latency: timed rounds (default 5)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config settings, as in tools/test.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmepsa.analysis.benchmark import parse_nchw
    from mmepsa.deployment import (compare_latency, evaluate_onnx,
                                   format_latency)
    errors = (OSError, ValueError, RuntimeError, ImportError,
              pickle.UnpicklingError)
    try:
        if args.latency:
            if not args.checkpoint:
                raise ValueError('--latency needs --checkpoint (the PyTorch '
                                 'rows run the checkpoint)')
            result = compare_latency(
                args.config,
                args.checkpoint,
                args.model,
                parse_nchw(args.latency),
                args.threads or 2,
                args.warmup,
                args.runs,
                cfg_options=args.cfg_options,
                backend=args.backend,
                precision=args.precision,
                images=args.images,
                batch_sizes=args.latency_batch_sizes,
                static_shapes=args.static_shapes,
                streams=args.streams)
        else:
            result = evaluate_onnx(
                args.config,
                args.model,
                args.checkpoint,
                args.cfg_options,
                args.threads,
                args.max_images,
                args.backend,
                args.precision,
                args.batch_size,
                static_shapes=args.static_shapes,
                streams=args.streams)
    except errors as e:
        sys.exit(f'onnx_test: error: {e}')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2, default=str)
    if args.latency:
        print(format_latency(result))
        return 0
    for side, metrics in result['metrics'].items():
        shown = ', '.join(f'{k.split("/")[-1]} {v:.3f}'
                          for k, v in metrics.items()
                          if k.endswith(('mAP', 'mAP_50')))
        print(f'{side}: {shown}')
    if 'ok' not in result:
        return 0
    a = result['agreement']
    label = next(name for name in result['metrics'] if name != 'pytorch')
    print(f"differences ({label} - PyTorch): {result['differences']}; "
          f"{a['matched']} of {a['reference']} detections matched, box IoU "
          f"min {a['min_iou']}; within tolerance: {result['ok']}")
    return 0 if result['ok'] else 3


if __name__ == '__main__':
    sys.exit(main())
