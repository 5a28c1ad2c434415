# Copyright (c) mmepsa contributors. All rights reserved.
"""Save an exported ONNX detector as an OpenVINO IR (``.xml`` and
``.bin``, float32 weights, the model's metadata kept), so that a
deployment needs openvino, numpy and OpenCV only
(``mmepsa.deployment.save_openvino_ir``; docs/deployment.md)::

    python tools/deployment/onnx2openvino.py MODEL.onnx --output-file model.xml

Both files are written to temporary names and renamed once complete.
Needs the openvino extra (``pip install "mmepsa[openvino]"``). Exits 1 on
bad input.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Save an exported ONNX detector as an OpenVINO IR')
    parser.add_argument('model', help='the exported .onnx file')
    parser.add_argument(
        '--output-file',
        required=True,
        help='the IR to write (.xml; the .bin goes beside it)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmepsa.deployment.backends import (openvino_metadata,
                                            read_openvino_model)
    from mmepsa.deployment.files import save_openvino_ir
    try:
        model = read_openvino_model(args.model)
        if openvino_metadata(model) is None:
            raise ValueError(f'{args.model} has no mmepsa metadata: export '
                             'it with tools/deployment/pytorch2onnx.py')
        save_openvino_ir(model, args.output_file)
    except (OSError, ValueError, ImportError) as e:
        sys.exit(f'onnx2openvino: error: {e}')
    print(f'{args.output_file}: OpenVINO IR of {args.model}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
