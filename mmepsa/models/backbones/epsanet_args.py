# Copyright (c) mmepsa contributors. All rights reserved.
"""The argument checks of :class:`~mmepsa.models.EPSANet`, in one place.

mmdet's ResNet asserts, or fails deep inside mmcv, with messages that name
neither the argument nor the value; EPSANet checks every argument up front
and names the bad field and what is allowed.
"""
import inspect
import os.path as osp
from typing import Tuple

import torch.nn as nn
from mmdet.models.backbones.resnet import ResNet
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from ..fast.layout import check_channels_last


def resnet_arguments(**kwargs) -> dict:
    """mmdet ResNet's arguments: ``kwargs`` over ResNet's own defaults,
    ``stem_channels=None`` read as ``base_channels`` (as ResNet reads it).
    A name ResNet does not take fails here, with the allowed names."""
    params = inspect.signature(ResNet.__init__).parameters
    allowed = [name for name in params if name != 'self']
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(
            f'EPSANet: unknown argument(s) {unknown}; allowed: variant, '
            'conv_kernels, conv_groups, se_ratio, widen_factor, '
            f"channels_last, contiguous_outputs and mmdet ResNet's {allowed}")
    args = {name: params[name].default for name in allowed}
    args.update(kwargs)
    if args['stem_channels'] is None:
        args['stem_channels'] = args['base_channels']
    return args


def check_pretrained(init_cfg) -> None:
    """Raise FileNotFoundError naming the path if ``init_cfg`` asks for a
    local ``Pretrained`` checkpoint that does not exist."""
    cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    for cfg in cfgs:
        if not isinstance(cfg, dict) or cfg.get('type') != 'Pretrained':
            continue
        path = osp.expanduser(str(cfg.get('checkpoint', '')))
        if '://' not in path and not osp.isfile(path):
            raise FileNotFoundError(
                f'EPSANet: pretrained checkpoint {path!r} not found '
                f'(init_cfg.checkpoint, resolved to {osp.abspath(path)!r}). '
                'Put ImageNet weights there (the authors published none: '
                'train them with configs/epsanet, or convert yours or an '
                'mmpretrain one with tools/model_converters/'
                'epsanet_to_mmdet.py; see docs/checkpoints.md), or set '
                'init_cfg=None to train from scratch (configs/scratch: the '
                'recipe for detection).')


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ints(values, low: int) -> bool:
    """Whether ``values`` is a list or tuple of ints >= ``low``."""
    return isinstance(values, (list, tuple)) and all(
        _is_int(v) and v >= low for v in values)


def _check_layer_cfg(name: str, cfg, kinds: tuple) -> None:
    """Raise unless ``cfg`` is a dict whose ``type`` is a registered layer
    (mmcv's ``build_norm_layer``/``build_conv_layer`` fail later, with
    messages that name neither the argument nor the value)."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"EPSANet: {name} must be a dict with a 'type' key, "
                        f'got {cfg!r}')
    layer_type = cfg['type']
    with MODELS.switch_scope_and_registry(None) as registry:
        found = inspect.isclass(layer_type) or registry.get(layer_type)
    if not found:
        allowed = sorted(k for k, v in MODELS.module_dict.items()
                         if inspect.isclass(v) and issubclass(v, kinds))
        raise KeyError(f'EPSANet: invalid {name} type {layer_type!r}, '
                       f'registered: {allowed}')
    if layer_type == 'GN' and 'num_groups' not in cfg:
        raise ValueError(f"EPSANet: {name} of type 'GN' needs num_groups, "
                         f"e.g. dict(type='GN', num_groups=32), got {cfg!r}")


def check_epsanet_args(cls: type, *, depth, variant, conv_kernels, conv_groups,
                       se_ratio, widen_factor, channels_last,
                       contiguous_outputs, in_channels, stem_channels,
                       base_channels, num_stages, strides, dilations,
                       out_indices, style, deep_stem, avg_down, frozen_stages,
                       conv_cfg, norm_cfg, norm_eval, dcn, stage_with_dcn,
                       plugins, with_cp, zero_init_residual, pretrained,
                       init_cfg) -> Tuple[tuple, tuple]:
    """Check every argument of ``cls`` (EPSANet: its ``arch_settings``,
    ``variant_settings`` and ``plugin_positions``) up front, so that a bad
    value fails with a message naming it.

    Returns:
        tuple: ``conv_kernels`` and ``conv_groups``, ``variant``'s where
        not given.
    """
    if depth not in cls.arch_settings:
        raise KeyError(f'EPSANet: invalid depth {depth!r}, allowed: '
                       f'{sorted(cls.arch_settings)} (a PSA module replaces '
                       "the 3x3 conv of a Bottleneck; ResNet-18/34's "
                       'BasicBlocks have none)')
    if variant not in cls.variant_settings:
        raise KeyError(
            f'EPSANet: invalid variant {variant!r}, allowed: '
            f'{sorted(cls.variant_settings)} (or give conv_kernels and '
            'conv_groups explicitly)')
    for name, value in (('in_channels', in_channels),
                        ('stem_channels', stem_channels), ('base_channels',
                                                           base_channels),
                        ('se_ratio', se_ratio), ('widen_factor',
                                                 widen_factor)):
        if not _is_int(value) or value < 1:
            raise ValueError(
                f'EPSANet: {name} must be a positive int, got {value!r}')
    if conv_kernels is None:
        conv_kernels = cls.variant_settings[variant]['conv_kernels']
    if conv_groups is None:
        conv_groups = cls.variant_settings[variant]['conv_groups']
    for name, values in (('conv_kernels', conv_kernels), ('conv_groups',
                                                          conv_groups)):
        if not _is_ints(values, 1) or len(values) != 4:
            raise ValueError(f'EPSANet: {name} must be 4 positive ints, '
                             f'one per PSA branch, got {values!r}')
    if not all(k % 2 for k in conv_kernels):
        raise ValueError('EPSANet: conv_kernels must be odd (padding '
                         'k // 2 keeps the 4 branches the same size), '
                         f'got {tuple(conv_kernels)}')
    conv_kernels, conv_groups = tuple(conv_kernels), tuple(conv_groups)
    if not _is_int(num_stages) or not 1 <= num_stages <= 4:
        raise ValueError(
            f'EPSANet: num_stages must be in [1, 4], got {num_stages!r}')
    for name, values in (('strides', strides), ('dilations', dilations)):
        if not isinstance(values, (list, tuple)) or \
                len(values) != num_stages:
            raise ValueError(f'EPSANet: {name} needs one entry per stage '
                             f'(num_stages={num_stages}), got {values!r}')
        if not _is_ints(values, 1):
            raise ValueError(f'EPSANet: {name} must be positive ints, '
                             f'got {tuple(values)}')
    if not _is_ints(out_indices, 0) or not out_indices or any(
            i >= num_stages
            for i in out_indices) or len(set(out_indices)) != len(out_indices):
        raise ValueError(f'EPSANet: out_indices must be a non-empty subset of '
                         f'{tuple(range(num_stages))}, each index once, got '
                         f'{out_indices!r}')
    if style not in ('pytorch', 'caffe'):
        raise ValueError(f'EPSANet: invalid style {style!r}, allowed: '
                         "'pytorch', 'caffe'")
    if not _is_int(frozen_stages) or \
            not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'EPSANet: frozen_stages must be in '
                         f'[-1, {num_stages}], got {frozen_stages!r}')
    for name, value in (('norm_eval', norm_eval), ('with_cp', with_cp),
                        ('zero_init_residual', zero_init_residual),
                        ('deep_stem', deep_stem), ('avg_down', avg_down)):
        if not isinstance(value, bool):
            raise ValueError(
                f'EPSANet: {name} must be True or False, got {value!r}')
    if deep_stem and stem_channels % 2:
        raise ValueError(
            'EPSANet: deep_stem needs an even stem_channels (its first '
            f'two convs have stem_channels // 2), got {stem_channels}')
    _check_layer_cfg('norm_cfg', norm_cfg,
                     (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm))
    if conv_cfg is not None:
        _check_layer_cfg('conv_cfg', conv_cfg, (_ConvNd, ))
    if dcn is not None or not isinstance(stage_with_dcn,
                                         (list, tuple)) or any(stage_with_dcn):
        raise ValueError(
            'EPSANet: deformable convs are not supported (conv2 of each '
            'block is a PSA module, not a 3x3 conv), allowed: dcn=None '
            f'and stage_with_dcn all False, got dcn={dcn!r}, '
            f'stage_with_dcn={stage_with_dcn!r}')
    _check_plugins(cls, plugins, num_stages)
    if not (init_cfg is None or isinstance(init_cfg, dict) or
            (isinstance(init_cfg, list)
             and all(isinstance(c, dict) for c in init_cfg))):
        raise TypeError(
            'EPSANet: init_cfg must be None, a dict or a list of dicts, '
            "e.g. dict(type='Pretrained', checkpoint=PATH), got "
            f'{init_cfg!r}')
    for i in range(num_stages):
        width = base_channels * 2**i * widen_factor
        split = width // 4
        if width % 4 or any(width % g or split % g for g in conv_groups):
            widen = (f', widen_factor={widen_factor}'
                     if widen_factor != 1 else '')
            raise ValueError(
                f'EPSANet: stage {i + 1} has {width} channels '
                f'(base_channels={base_channels}{widen}); they must '
                f'split into 4 branches of {width}/4 channels, each '
                f'divisible by its conv_groups {conv_groups}')
        if split < se_ratio:
            raise ValueError(
                f'EPSANet: stage {i + 1} has {split} channels per '
                f'branch, fewer than se_ratio={se_ratio}; raise '
                'base_channels or lower se_ratio')
    check_channels_last('EPSANet', channels_last)
    if not isinstance(contiguous_outputs, bool):
        raise ValueError('EPSANet: contiguous_outputs must be True or False, '
                         f'got {contiguous_outputs!r}')
    if init_cfg is not None and pretrained is not None:
        raise ValueError('EPSANet: init_cfg and pretrained cannot be '
                         'specified at the same time')
    if pretrained is not None and not isinstance(pretrained, str):
        raise TypeError('EPSANet: pretrained must be a str or None, got '
                        f'{type(pretrained).__name__}')
    return conv_kernels, conv_groups


def _check_plugins(cls, plugins, num_stages: int) -> None:
    if plugins is None:
        return
    example = ("e.g. [dict(cfg=dict(type='ContextBlock', ratio=1 / 16), "
               "position='after_conv3', stages=(False, True, True, "
               'True))]')
    if not isinstance(plugins, list):
        raise TypeError(f'EPSANet: plugins must be None or a list of '
                        f'dicts, {example}, got {plugins!r}')
    for plugin in plugins:
        if not isinstance(plugin, dict) or not isinstance(
                plugin.get('cfg'), dict):
            raise TypeError('EPSANet: each plugin must be a dict with a '
                            f"'cfg' dict, {example}, got {plugin!r}")
        if plugin.get('position') not in cls.plugin_positions:
            raise ValueError(f'EPSANet: invalid plugin position '
                             f"{plugin.get('position')!r}, allowed: "
                             f'{cls.plugin_positions}')
        stages = plugin.get('stages')
        if stages is not None and (not isinstance(stages, (list, tuple))
                                   or len(stages) != num_stages):
            raise ValueError('EPSANet: plugin stages needs one bool per stage '
                             f'(num_stages={num_stages}), got {stages!r}')
