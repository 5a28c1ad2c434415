# Copyright (c) mmepsa contributors. All rights reserved.
"""Quantize an exported detector to int8 with NNCF (post-training,
calibrated on images of the config's dataset through the runner's own
pre-processing; post-processing kept in float) and write the OpenVINO IR
(``mmepsa.deployment.quantize_int8``; docs/deployment.md)::

    python tools/deployment/quantize.py CONFIG MODEL.onnx \\
        --output-file model-int8.xml [--num-images 300] [--split val]

Run the result with ``--backend openvino`` (``onnx_test.py``,
``onnx_image_demo.py``). Needs the openvino extra
(``pip install "mmepsa[openvino]"``). Exits 1 on bad input; nothing is
written then.
"""
import argparse
import json
import pickle
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Quantize an exported detector to int8 (NNCF, OpenVINO '
        'IR)')
    parser.add_argument('config', help='the detector config it came from')
    parser.add_argument(
        'model', help='the exported .onnx file (or its fp32 IR .xml)')
    parser.add_argument(
        '--output-file',
        required=True,
        help='the int8 IR to write (.xml; the .bin goes beside it)')
    parser.add_argument(
        '--num-images',
        type=int,
        default=300,
        help='calibration images (default 300; all the dataset has if '
        'fewer, with a warning)')
    parser.add_argument(
        '--split',
        default='val',
        choices=('train', 'val', 'test'),
        help='the config\'s dataset the images come from (default val)')
    parser.add_argument(
        '--keep-float',
        nargs='+',
        default=[],
        metavar='REGEX',
        help='keep more ops in float: regular expressions of op names, '
        'matched at the start (e.g. /backbone/conv1/)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the images\' draw')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='override config settings, as in tools/test.py')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmepsa.deployment import quantize_int8
    try:
        info = quantize_int8(
            args.config,
            args.model,
            args.output_file,
            num_images=args.num_images,
            split=args.split,
            keep_float=args.keep_float,
            cfg_options=args.cfg_options,
            seed=args.seed)
    except (OSError, ValueError, RuntimeError, ImportError,
            pickle.UnpicklingError) as e:
        sys.exit(f'quantize: error: {e}')
    print(json.dumps(info, indent=2))
    if info['images'] < info['num_images']:
        print(f"quantize: warning: calibrated on {info['images']} images, "
              f"fewer than the {info['num_images']} asked (all the "
              f'{args.split} dataset has)')
    print(f"{info['out_file']}: int8, calibrated on {info['images']} "
          f"images, {info['fake_quantize']} FakeQuantize ops")
    return 0


if __name__ == '__main__':
    sys.exit(main())
