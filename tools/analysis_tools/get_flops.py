# Copyright (c) mmepsa contributors. All rights reserved.
"""FLOPs and parameters of EPSANet, an EPSANet classifier or a detector.

Counted by ``mmengine.analysis.get_model_complexity_info``, which (like
fvcore, and like the EPSANet paper) counts one fused multiply-add as one
FLOP. Examples::

    # the paper's ImageNet figures: EPSANet-50(S) 22.56 M / 3.62 G
    python tools/analysis_tools/get_flops.py --arch epsanet50 --mode classifier
    # the backbone alone at 800x1333
    python tools/analysis_tools/get_flops.py --arch epsanet101 \\
        --mode backbone --shape 800 1333
    # a whole detector from a config (random input, no dataset needed)
    python tools/analysis_tools/get_flops.py CONFIG --shape 800 1333

For a detector, ``mode='tensor'`` is traced (backbone, neck and head outputs,
without post-processing such as NMS), as in mmdet's get_flops.py.
"""
import argparse
import os.path as osp
import sys
from functools import partial

import torch
from mmengine.config import DictAction

ARCHS = {'epsanet50': 50, 'epsanet101': 101}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='FLOPs/params of EPSANet, an EPSANet classifier or a '
        'detector config')
    parser.add_argument(
        'config',
        nargs='?',
        help='detector config; without it, --arch/--mode pick the model')
    parser.add_argument(
        '--arch',
        choices=sorted(ARCHS),
        default='epsanet50',
        help='EPSANet depth when no config is given (small variant)')
    parser.add_argument(
        '--mode',
        choices=['classifier', 'backbone'],
        default='classifier',
        help='without a config: the ImageNet classifier (backbone, global '
        'average pooling, 1000-way fc) or the backbone alone')
    parser.add_argument(
        '--num-classes',
        type=int,
        default=1000,
        help='classes of the classifier head')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=None,
        help='input size: H [W]. Defaults to 224 without a config and to '
        '800 1333 with one')
    parser.add_argument(
        '--show-table',
        action='store_true',
        help='print the per-module complexity table too')
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
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.config is not None and not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')

    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    # mmengine warns once per op type it does not count (add, mul, softmax,
    # batch_norm...); keep the output to the figures.
    MMLogger.get_current_instance().setLevel('ERROR')

    from mmepsa.analysis.benchmark import (EPSANetClassifier, build_detector,
                                           detector_inputs)
    from mmepsa.models import EPSANet

    h, w = args.shape
    if args.config is not None:
        # mode='tensor': backbone, neck and head, no post-processing
        model = build_detector(args.config, args.cfg_options)
        inputs, samples = detector_inputs((h, w))
        model.forward = partial(
            model.forward, data_samples=samples, mode='tensor')
        name = osp.splitext(osp.basename(args.config))[0]
    else:
        depth = ARCHS[args.arch]
        if args.mode == 'classifier':
            model = EPSANetClassifier(depth, args.num_classes)
            name = f'{args.arch} classifier ({args.num_classes} classes)'
        else:
            model = EPSANet(depth=depth)
            name = f'{args.arch} backbone'
        model.eval()
        inputs = torch.rand(1, 3, h, w)

    with torch.no_grad():
        result = get_model_complexity_info(
            model, inputs=inputs, show_table=args.show_table, show_arch=False)
    flops, params = result['flops'], result['params']
    split_line = '=' * 40
    if args.show_table:
        print(result['out_table'])
    print(f'{split_line}\nModel: {name}\nInput shape: (1, 3, {h}, {w})\n'
          f'FLOPs: {flops / 1e9:.2f} G ({flops} multiply-adds)\n'
          f'Params: {params / 1e6:.2f} M ({params})\n{split_line}')
    if args.config is not None:
        print('!!!Please be cautious if you use the results in papers. '
              'You may need to check if all ops are supported and verify '
              'that the flops computation is correct.')
    return result


if __name__ == '__main__':
    main()
