# Copyright (c) mmepsa contributors. All rights reserved.
"""Export a trained RetinaNet, Faster R-CNN or Mask R-CNN (config +
checkpoint) to one ONNX file that plain onnxruntime runs: image in, boxes,
scores, labels (and masks) out, post-processing and NMS in the graph
(``mmepsa.deployment.export_onnx``; docs/deployment.md)::

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT \\
        --output-file model.onnx

The file is written only once it is complete, checked (standard ONNX ops
only) and, unless ``--no-verify``, run by onnxruntime against PyTorch.
Exits 1 on bad input (an unsupported head, a checkpoint that does not fit
the config or is refused, ...), with the reason.
"""
import argparse
import os.path as osp
import pickle
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export an mmdet detector to ONNX (onnxruntime, no '
        'custom ops)')
    parser.add_argument('config', help='detector config file')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument(
        '--output-file',
        help='the .onnx file to write (default: <config name>.onnx beside '
        'the checkpoint)')
    parser.add_argument(
        '--opset-version',
        type=int,
        default=17,
        help='ONNX opset, >= 16 (default 17)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[320, 320],
        metavar='H W',
        help='image size traced (default 320 320); the graph takes any size')
    parser.add_argument(
        '--no-verify',
        action='store_true',
        help='do not compare onnxruntime with PyTorch before writing')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config settings, as in tools/test.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmepsa.analysis.benchmark import parse_hw
    from mmepsa.deployment import export_onnx

    try:
        shape = parse_hw(args.shape, (320, 320))
    except ValueError as e:
        sys.exit(f'pytorch2onnx: error: {e}')
    out = args.output_file or osp.join(
        osp.dirname(args.checkpoint),
        osp.splitext(osp.basename(args.config))[0] + '.onnx')
    try:
        info = export_onnx(args.config, args.checkpoint, out, args.cfg_options,
                           args.opset_version, shape, not args.no_verify)
    except (OSError, ValueError, RuntimeError, ImportError,
            pickle.UnpicklingError) as e:
        sys.exit(f'pytorch2onnx: error: {e}')
    print(f"wrote {out}: outputs {', '.join(info['outputs'])}; "
          f"{len(info['ops'])} ONNX op types, all in the default domain")
    if 'agreement' in info:
        a = info['agreement']
        iou = 'n/a' if a['min_iou'] is None else f"{a['min_iou']:.5f}"
        print(f'onnxruntime against PyTorch on a check batch of 2: '
              f"{a['matched']} of {a['reference']} detections matched "
              f'(lowest box IoU {iou}, largest score difference '
              f"{a['max_score_diff'] or 0:.2g})")
    return 0


if __name__ == '__main__':
    sys.exit(main())
