# Copyright (c) mmepsa contributors. All rights reserved.
"""Convert an EPSANet ImageNet checkpoint into a backbone-only checkpoint.

Inputs:

* the authors' training-script checkpoint, ``{'state_dict': {'module.conv1.
  weight', ..., 'module.fc.weight', 'module.fc.bias'}, 'epoch': ...,
  'optimizer': ...}`` (``nn.DataParallel`` names), or a bare state dict;
* with ``--from-mmpretrain``, an mmpretrain ``ImageClassifier`` checkpoint
  (``backbone.*``, ``head.*``).

The output, ``{'state_dict': <backbone weights>, 'meta': {...}}``, loads with
``init_cfg=dict(type='Pretrained', checkpoint=OUT)`` on ``EPSANet``. Its keys
must equal the state-dict keys of ``EPSANet(depth=--depth)`` and every shape
must match; otherwise the missing/unexpected keys are listed and nothing is
written::

    python tools/model_converters/epsanet_to_mmdet.py \\
        epsanet50_small.pth.tar checkpoints/epsanet50-s_imagenet.pth \\
        --depth 50
"""
import argparse
import os
import os.path as osp
import sys
import time
from collections import OrderedDict

import torch

#: Checkpoint entries that may hold the weights, in order of preference.
STATE_DICT_KEYS = ('state_dict', 'model', 'model_state_dict')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an EPSANet ImageNet checkpoint (authors\' or '
        'mmpretrain\'s) into an EPSANet backbone checkpoint for mmdet')
    parser.add_argument('src', help='source checkpoint')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--depth',
        type=int,
        choices=[50, 101],
        default=50,
        help='EPSANet depth the checkpoint must match')
    parser.add_argument(
        '--from-mmpretrain',
        action='store_true',
        help='the source is an mmpretrain ImageClassifier checkpoint: keep '
        'backbone.* (prefix stripped), drop neck/head')
    parser.add_argument(
        '--backbone-kwargs',
        nargs='*',
        default=[],
        metavar='KEY=VALUE',
        help='extra EPSANet arguments of the checked architecture, e.g. '
        'conv_groups="(1,4,8,16)" (values are Python literals)')
    parser.add_argument(
        '--unsafe-load',
        action='store_true',
        help='load the source with torch.load(weights_only=False); only for '
        'checkpoints you trust (some old ones pickle extra objects)')
    return parser.parse_args(argv)


def load_state_dict(path: str, unsafe: bool = False) -> OrderedDict:
    """The tensors of a checkpoint file, wherever the file keeps them."""
    from mmepsa.utils.safe_pickle import torch_load
    if unsafe:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    else:
        try:  # the allow-list unpickler mmengine's loaders use too
            ckpt = torch_load(path, map_location='cpu')
        except Exception as e:  # noqa: BLE001 - the message says what to do
            raise RuntimeError(
                f'{path} could not be loaded by the safe loader, which '
                'admits tensors, containers, numpy and mmengine types only '
                f'(mmepsa.utils.safe_pickle): {type(e).__name__}: {e}. If '
                'you trust the file, rerun with --unsafe-load.') from e
    if isinstance(ckpt, dict):
        for key in STATE_DICT_KEYS:
            if key in ckpt and isinstance(ckpt[key], dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise RuntimeError(f'{path} holds no state dict (a dict of tensors, '
                           f'or one under {STATE_DICT_KEYS})')
    return OrderedDict(ckpt)


def convert(state_dict: dict, from_mmpretrain: bool = False) -> OrderedDict:
    """Backbone weights under EPSANet's own names.

    Authors' format: strip ``module.`` (``nn.DataParallel``) and drop the
    classifier ``fc.*``. mmpretrain format: keep ``backbone.*`` without the
    prefix and drop everything else (``neck``, ``head``,
    ``data_preprocessor``).
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if from_mmpretrain:
            if not key.startswith('backbone.'):
                continue
            key = key[len('backbone.'):]
        elif key.startswith('fc.'):
            continue
        out[key] = value
    return out


def _literal(text: str):
    import ast
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_keys(state_dict: dict, depth: int, backbone_kwargs: dict) -> list:
    """Differences between ``state_dict`` and ``EPSANet(depth)``'s; empty
    when keys and shapes all match."""
    from mmepsa.models import EPSANet
    reference = EPSANet(depth=depth, **backbone_kwargs).state_dict()
    problems = []
    missing = [k for k in reference if k not in state_dict]
    unexpected = [k for k in state_dict if k not in reference]
    if missing:
        problems.append(f'missing keys ({len(missing)}): ' +
                        ', '.join(missing))
    if unexpected:
        problems.append(f'unexpected keys ({len(unexpected)}): ' +
                        ', '.join(unexpected))
    mismatched = [
        f'{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
        for k, v in reference.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if mismatched:
        problems.append(f'shape mismatches ({len(mismatched)}, checkpoint '
                        'vs EPSANet): ' + ', '.join(mismatched))
    return problems


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.src):
        sys.exit(f'error: source checkpoint not found: {args.src}')
    backbone_kwargs = {}
    for item in args.backbone_kwargs:
        if '=' not in item:
            sys.exit(f'error: --backbone-kwargs takes KEY=VALUE, got {item}')
        key, value = item.split('=', 1)
        backbone_kwargs[key] = _literal(value)

    import mmepsa  # noqa: F401

    try:
        state_dict = load_state_dict(args.src, unsafe=args.unsafe_load)
    except RuntimeError as e:
        sys.exit(f'error: {e}')
    converted = convert(state_dict, from_mmpretrain=args.from_mmpretrain)
    problems = check_keys(converted, args.depth, backbone_kwargs)
    if problems:
        print(
            f'error: {args.src} does not match EPSANet-{args.depth}'
            f'{" " + str(backbone_kwargs) if backbone_kwargs else ""} '
            'after conversion; nothing written.',
            file=sys.stderr)
        for problem in problems:
            print(f'  {problem}', file=sys.stderr)
        sys.exit(1)

    meta = dict(
        converted_from=osp.abspath(args.src),
        source_format='mmpretrain' if args.from_mmpretrain else 'epsanet',
        arch=dict(type='EPSANet', depth=args.depth, **backbone_kwargs),
        mmepsa_version=mmepsa.__version__,
        time=time.strftime('%Y-%m-%d %H:%M:%S'))
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    torch.save(dict(state_dict=converted, meta=meta), args.dst)
    print(f'converted {len(converted)} tensors of EPSANet-{args.depth} '
          f'from {args.src} -> {args.dst}')


if __name__ == '__main__':
    main()
