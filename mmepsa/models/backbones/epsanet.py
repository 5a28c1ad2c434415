# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet: ResNet with the bottleneck's 3x3 conv replaced by a PSA module.

Paper: "EPSANet: An Efficient Pyramid Squeeze Attention Block on
Convolutional Neural Network" (arXiv 2105.14447). Parameter names follow the
authors' code (``conv1``/``bn1``, ``layerK.i.conv2.conv_1..conv_4``,
``conv2.se.fc1/fc2``, ``downsample.0/1``) so their checkpoints load as they
are. The weighted branches are concatenated in the authors' order (branch 4
first), which their published weights depend on.
"""
import inspect
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmengine.model import BaseModule, Sequential
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from ..layers.psa_conv import PSAConv2d, _exporting, _memory_format

ConfigType = Union[dict, None]


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


class SEWeightModule(BaseModule):
    """Squeeze-and-excitation weights shared by the four PSA branches.

    Takes globally pooled features of shape ``(N, C, 1, 1)`` and returns
    sigmoid attention of the same shape: 1x1 conv (``C -> C // ratio``, with
    bias), ReLU, 1x1 conv back to ``C``, sigmoid. The pooling lives in
    :class:`PSAModule` so that the four branches share one batched pass.

    Args:
        channels (int): Channels of one branch.
        ratio (int): Squeeze ratio. Defaults to 16.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 channels: int,
                 ratio: int = 16,
                 init_cfg: ConfigType = None) -> None:
        super().__init__(init_cfg)
        self.fc1 = nn.Conv2d(channels, channels // ratio, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // ratio, channels, kernel_size=1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(self.relu(self.fc1(pooled))))


class PSAModule(BaseModule):
    """Pyramid Squeeze Attention: the EPSA block's replacement of a 3x3 conv.

    Four convs over the same input, each producing ``out_channels // 4``
    channels with its own kernel size and group count; one shared SE module
    turns each branch into channel attention, a softmax across the branches
    recalibrates it, and the weighted branches are concatenated, branch 4
    first (the authors' order).

    The four SE passes of the original run here as one batched pass (the SE
    weights are shared), and the weighted branches go into the output in the
    authors' order by a single concatenation, with no intermediate
    concatenation of the raw branches; the result equals the authors'
    formulation (``mmepsa.testing.RefPSA``) to float rounding.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels, divisible by 4.
        conv_kernels (Sequence[int]): Kernel size of each of the 4 branches.
        conv_groups (Sequence[int]): Group count of each of the 4 branches.
        stride (int): Stride of the branch convs. Defaults to 1.
        dilation (int): Dilation of the branch convs. Defaults to 1.
        se_ratio (int): Squeeze ratio of the SE module. Defaults to 16.
        conv_cfg (dict, optional): Config of the conv layers.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Example:
        >>> import torch
        >>> psa = PSAModule(64, 64, (3, 5, 7, 9), (1, 4, 8, 16), stride=2)
        >>> psa(torch.rand(2, 64, 32, 32)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16),
                 stride: int = 1,
                 dilation: int = 1,
                 se_ratio: int = 16,
                 conv_cfg: ConfigType = None,
                 init_cfg: ConfigType = None) -> None:
        super().__init__(init_cfg)
        if len(conv_kernels) != 4 or len(conv_groups) != 4:
            raise ValueError('PSAModule needs 4 branches: got conv_kernels='
                             f'{tuple(conv_kernels)}, conv_groups='
                             f'{tuple(conv_groups)}')
        self.split_channels = out_channels // 4
        # A plain conv becomes a PSAConv2d (same parameters, the fastest of
        # its exact forms); other conv types are built as configured.
        plain = conv_cfg is None or conv_cfg.get('type') in ('Conv', 'Conv2d')
        for i, (kernel, groups) in enumerate(zip(conv_kernels, conv_groups)):
            kwargs = dict(
                kernel_size=kernel,
                stride=stride,
                padding=dilation * (kernel // 2),
                dilation=dilation,
                groups=groups,
                bias=False)
            self.add_module(
                f'conv_{i + 1}',
                PSAConv2d(in_channels, self.split_channels, **kwargs)
                if plain else build_conv_layer(
                    conv_cfg, in_channels, self.split_channels, **kwargs))
        self.se = SEWeightModule(self.split_channels, se_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [
            self.conv_1(x),
            self.conv_2(x),
            self.conv_3(x),
            self.conv_4(x)
        ]
        # One SE pass over the 4 branches: stack their pooled vectors on the
        # batch axis, then a softmax across the branches, per channel.
        pooled = torch.cat([f.mean((2, 3), keepdim=True) for f in feats])
        attention = self.se(pooled).unflatten(0, (4, x.shape[0])).softmax(0)
        if (torch.is_grad_enabled() and attention.requires_grad) or \
                _exporting():
            return torch.cat([feats[i] * attention[i] for i in (3, 2, 1, 0)],
                             1)
        # Inference: write each weighted branch straight into its slice of
        # the output (one pass instead of a product and a concatenation).
        first = feats[0]
        out = torch.empty(
            (first.shape[0], 4 * self.split_channels) + first.shape[2:],
            dtype=torch.promote_types(first.dtype, attention.dtype),
            device=first.device,
            memory_format=_memory_format(first))
        for i, j in enumerate((3, 2, 1, 0)):
            torch.mul(feats[j], attention[j],
                      out=out[:, i * self.split_channels:(i + 1) *
                              self.split_channels])
        return out


class EPSABlock(BaseModule):
    """Bottleneck block of EPSANet: 1x1 conv, PSA module, 1x1 conv.

    Same structure and names as mmdet's ResNet ``Bottleneck`` (``conv1``,
    ``norm1``... ``downsample``), with ``conv2`` a :class:`PSAModule`.
    If style is "pytorch" the stride is on the PSA convs; if it is "caffe" it
    is on the first 1x1 conv.

    Args:
        inplanes (int): Input channels.
        planes (int): Width of the block; it outputs ``planes * 4`` channels.
        stride (int): Stride of the block. Defaults to 1.
        dilation (int): Dilation of the PSA convs. Defaults to 1.
        downsample (nn.Module, optional): Shortcut projection.
        style (str): "pytorch" or "caffe". Defaults to "pytorch".
        conv_kernels (Sequence[int]): PSA kernel sizes.
        conv_groups (Sequence[int]): PSA group counts.
        se_ratio (int): SE squeeze ratio. Defaults to 16.
        with_cp (bool): Use checkpointing to save memory. Defaults to False.
        conv_cfg (dict, optional): Config of conv layers.
        norm_cfg (dict): Config of norm layers. Defaults to BN.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """
    expansion = 4

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 stride: int = 1,
                 dilation: int = 1,
                 downsample: Optional[nn.Module] = None,
                 style: str = 'pytorch',
                 conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16),
                 se_ratio: int = 16,
                 with_cp: bool = False,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 init_cfg: ConfigType = None) -> None:
        super().__init__(init_cfg)
        self.inplanes = inplanes
        self.planes = planes
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        if style == 'pytorch':
            conv1_stride, conv2_stride = 1, stride
        else:
            conv1_stride, conv2_stride = stride, 1

        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, postfix=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, postfix=2)
        self.norm3_name, norm3 = build_norm_layer(
            norm_cfg, planes * self.expansion, postfix=3)

        self.conv1 = build_conv_layer(
            conv_cfg,
            inplanes,
            planes,
            kernel_size=1,
            stride=conv1_stride,
            bias=False)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = PSAModule(
            planes,
            planes,
            conv_kernels=conv_kernels,
            conv_groups=conv_groups,
            stride=conv2_stride,
            dilation=dilation,
            se_ratio=se_ratio,
            conv_cfg=conv_cfg)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = build_conv_layer(
            conv_cfg, planes, planes * self.expansion, kernel_size=1,
            bias=False)
        self.add_module(self.norm3_name, norm3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    @property
    def norm3(self) -> nn.Module:
        return getattr(self, self.norm3_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.relu(self.norm2(self.conv2(out)))
            out = self.norm3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


class EPSANet(BaseModule):
    """EPSANet backbone, with mmdet ResNet's arguments and their meanings.

    Args:
        depth (int): 50 or 101.
        variant (str): PSA setting by name. Only ``'small'`` (kernels
            (3, 5, 7, 9), groups (1, 4, 8, 16)) is shipped: the authors
            released no code for 'large', and no definition we could source
            reproduces their 'large' figures (see the README). Pass
            ``conv_kernels``/``conv_groups`` for other settings.
        conv_kernels (Sequence[int], optional): The 4 PSA kernel sizes; given,
            they override ``variant``.
        conv_groups (Sequence[int], optional): The 4 PSA group counts; given,
            they override ``variant``.
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int): Channels of the 7x7 stem conv. Defaults to 64.
        base_channels (int): Width of the first stage. Defaults to 64.
        num_stages (int): Stages used, 1 to 4. Defaults to 4.
        strides (Sequence[int]): Stride of each stage.
        dilations (Sequence[int]): Dilation of each stage's PSA convs.
        out_indices (Sequence[int]): Stages whose outputs are returned.
        style (str): "pytorch" (stride on the PSA convs) or "caffe" (stride on
            the first 1x1 conv). Defaults to "pytorch".
        frozen_stages (int): Stages to freeze (stop grad and eval mode);
            -1 freezes nothing, 0 the stem, k the stem and stages 1..k.
        se_ratio (int): SE squeeze ratio. Defaults to 16.
        conv_cfg (dict, optional): Config of conv layers.
        norm_cfg (dict): Config of norm layers (BN, SyncBN, GN...).
        norm_eval (bool): Keep BN layers in eval mode while training.
            Defaults to True.
        with_cp (bool): Checkpoint each block to save memory.
        channels_last (bool, optional): Run the network in channels-last
            memory format (NHWC), where oneDNN's grouped 5x5/7x7/9x9
            convolutions are much faster. ``None`` (default) turns it on for
            CPU inputs and off for others (not measured on GPU; set True to
            try). The input is converted on entry and the returned features
            are made contiguous NCHW again, so callers see no difference;
            parameters and checkpoints are unaffected.
        zero_init_residual (bool): Zero-init the last norm of each block.
        pretrained (str, optional): Deprecated, use ``init_cfg``.
        init_cfg (dict or list[dict], optional): Initialization config.

    Example:
        >>> import torch
        >>> from mmepsa.models import EPSANet
        >>> model = EPSANet(depth=50, out_indices=(0, 1, 2, 3)).eval()
        >>> outputs = model(torch.rand(1, 3, 64, 64))
        >>> [tuple(out.shape) for out in outputs]
        [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4), (1, 2048, 2, 2)]
    """

    arch_settings = {
        50: (EPSABlock, (3, 4, 6, 3)),
        101: (EPSABlock, (3, 4, 23, 3)),
    }
    variant_settings = {
        'small': dict(conv_kernels=(3, 5, 7, 9), conv_groups=(1, 4, 8, 16)),
    }

    def __init__(self,
                 depth: int = 50,
                 variant: str = 'small',
                 conv_kernels: Optional[Sequence[int]] = None,
                 conv_groups: Optional[Sequence[int]] = None,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch',
                 frozen_stages: int = -1,
                 se_ratio: int = 16,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True,
                 with_cp: bool = False,
                 channels_last: Optional[bool] = None,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'EPSANet: invalid depth {depth!r}, allowed: '
                           f'{sorted(self.arch_settings)}')
        if variant not in self.variant_settings:
            raise KeyError(
                f'EPSANet: invalid variant {variant!r}, allowed: '
                f'{sorted(self.variant_settings)} (or give conv_kernels and '
                'conv_groups explicitly)')
        for name, value in (('in_channels', in_channels),
                            ('stem_channels', stem_channels),
                            ('base_channels', base_channels),
                            ('se_ratio', se_ratio)):
            if not _is_int(value) or value < 1:
                raise ValueError(
                    f'EPSANet: {name} must be a positive int, got {value!r}')
        if conv_kernels is None:
            conv_kernels = self.variant_settings[variant]['conv_kernels']
        if conv_groups is None:
            conv_groups = self.variant_settings[variant]['conv_groups']
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
                raise ValueError(
                    f'EPSANet: {name} needs one entry per stage '
                    f'(num_stages={num_stages}), got {values!r}')
            if not _is_ints(values, 1):
                raise ValueError(f'EPSANet: {name} must be positive ints, '
                                 f'got {tuple(values)}')
        if not _is_ints(out_indices, 0) or not out_indices or any(
                i >= num_stages for i in out_indices) or len(
                    set(out_indices)) != len(out_indices):
            raise ValueError(
                f'EPSANet: out_indices must be a non-empty subset of '
                f'{tuple(range(num_stages))}, each index once, got '
                f'{out_indices!r}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"EPSANet: invalid style {style!r}, allowed: "
                             "'pytorch', 'caffe'")
        if not _is_int(frozen_stages) or \
                not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'EPSANet: frozen_stages must be in '
                             f'[-1, {num_stages}], got {frozen_stages!r}')
        for name, value in (('norm_eval', norm_eval), ('with_cp', with_cp),
                            ('zero_init_residual', zero_init_residual)):
            if not isinstance(value, bool):
                raise ValueError(
                    f'EPSANet: {name} must be True or False, got {value!r}')
        _check_layer_cfg('norm_cfg', norm_cfg,
                         (_BatchNorm, _InstanceNorm, nn.GroupNorm,
                          nn.LayerNorm))
        if conv_cfg is not None:
            _check_layer_cfg('conv_cfg', conv_cfg, (_ConvNd, ))
        if not (init_cfg is None or isinstance(init_cfg, dict) or
                (isinstance(init_cfg, list)
                 and all(isinstance(c, dict) for c in init_cfg))):
            raise TypeError(
                'EPSANet: init_cfg must be None, a dict or a list of dicts, '
                "e.g. dict(type='Pretrained', checkpoint=PATH), got "
                f'{init_cfg!r}')
        for i in range(num_stages):
            planes = base_channels * 2**i
            split = planes // 4
            if planes % 4 or any(planes % g or split % g
                                 for g in conv_groups):
                raise ValueError(
                    f'EPSANet: stage {i + 1} has {planes} channels '
                    f'(base_channels={base_channels}); they must split into '
                    f'4 branches of {planes}/4 channels, each divisible by '
                    f'its conv_groups {conv_groups}')
            if split < se_ratio:
                raise ValueError(
                    f'EPSANet: stage {i + 1} has {split} channels per '
                    f'branch, fewer than se_ratio={se_ratio}; raise '
                    'base_channels or lower se_ratio')

        if channels_last is not None and not isinstance(channels_last, bool):
            raise ValueError('EPSANet: channels_last must be None (auto: on '
                             f'for CPU inputs), True or False, got '
                             f'{channels_last!r}')
        if init_cfg is not None and pretrained is not None:
            raise ValueError('EPSANet: init_cfg and pretrained cannot be '
                             'specified at the same time')
        block_init_cfg = None
        if isinstance(pretrained, str):
            warnings.warn('DeprecationWarning: pretrained is deprecated, '
                          'please use "init_cfg" instead')
            self.init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif pretrained is not None:
            raise TypeError('EPSANet: pretrained must be a str or None, got '
                            f'{type(pretrained).__name__}')
        elif init_cfg is None:
            self.init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(
                    type='Constant',
                    val=1,
                    layer=['_BatchNorm', 'GroupNorm'])
            ]
            if zero_init_residual:
                block_init_cfg = dict(
                    type='Constant', val=0, override=dict(name='norm3'))

        self.depth = depth
        self.variant = variant
        self.conv_kernels = conv_kernels
        self.conv_groups = conv_groups
        self.in_channels = in_channels
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.num_stages = num_stages
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.out_indices = tuple(out_indices)
        self.style = style
        self.frozen_stages = frozen_stages
        self.se_ratio = se_ratio
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.zero_init_residual = zero_init_residual
        self.block, stage_blocks = self.arch_settings[depth]
        self.stage_blocks = stage_blocks[:num_stages]

        self._make_stem_layer(in_channels, stem_channels)
        self.inplanes = stem_channels
        self.res_layers = []
        for i, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**i
            res_layer = self.make_res_layer(
                inplanes=self.inplanes,
                planes=planes,
                num_blocks=num_blocks,
                stride=self.strides[i],
                dilation=self.dilations[i],
                init_cfg=block_init_cfg)
            self.inplanes = planes * self.block.expansion
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, res_layer)
            self.res_layers.append(layer_name)
        self.feat_dim = self.inplanes
        self._freeze_stages()

    def make_res_layer(self, inplanes: int, planes: int, num_blocks: int,
                       stride: int, dilation: int,
                       init_cfg: ConfigType) -> Sequential:
        """Stack ``num_blocks`` EPSA blocks; the first one may downsample."""
        downsample = None
        if stride != 1 or inplanes != planes * self.block.expansion:
            downsample = nn.Sequential(
                build_conv_layer(
                    self.conv_cfg,
                    inplanes,
                    planes * self.block.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False),
                build_norm_layer(self.norm_cfg,
                                 planes * self.block.expansion)[1])
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                self.block(
                    inplanes=inplanes if i == 0 else planes *
                    self.block.expansion,
                    planes=planes,
                    stride=stride if i == 0 else 1,
                    dilation=dilation,
                    downsample=downsample if i == 0 else None,
                    style=self.style,
                    conv_kernels=self.conv_kernels,
                    conv_groups=self.conv_groups,
                    se_ratio=self.se_ratio,
                    with_cp=self.with_cp,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    init_cfg=init_cfg))
        return Sequential(*blocks)

    def _make_stem_layer(self, in_channels: int, stem_channels: int) -> None:
        self.conv1 = build_conv_layer(
            self.conv_cfg,
            in_channels,
            stem_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False)
        self.norm1_name, norm1 = build_norm_layer(
            self.norm_cfg, stem_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.norm1.eval()
            for m in (self.conv1, self.norm1):
                for param in m.parameters():
                    param.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            m = getattr(self, f'layer{i}')
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def init_weights(self) -> None:
        """Initialize, first checking that a local ``Pretrained`` checkpoint
        exists, so a missing file fails with one message naming it."""
        cfgs = self.init_cfg if isinstance(self.init_cfg,
                                           list) else [self.init_cfg]
        for cfg in cfgs:
            if not isinstance(cfg, dict) or cfg.get('type') != 'Pretrained':
                continue
            path = osp.expanduser(str(cfg.get('checkpoint', '')))
            if '://' not in path and not osp.isfile(path):
                raise FileNotFoundError(
                    f'EPSANet: pretrained checkpoint {path!r} not found '
                    f'(init_cfg.checkpoint, resolved to {osp.abspath(path)!r}'
                    '). Put the ImageNet weights there: '
                    'convert the authors\' EPSANet checkpoint or an mmpretrain '
                    'one with tools/model_converters/epsanet_to_mmdet.py, or '
                    'set init_cfg=None to train from scratch.')
        super().init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if (x.dim() != 4 or x.shape[1] != self.in_channels
                or 0 in x.shape[2:]):
            raise ValueError(
                f'EPSANet expects input of shape (N, {self.in_channels}, H, '
                f'W) (in_channels={self.in_channels}, H and W >= 1), got '
                f'{tuple(x.shape)}')
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = x.device.type == 'cpu'
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x.contiguous() if channels_last else x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'EPSANet':
        """Set train mode, keeping frozen stages (and BN, if ``norm_eval``)
        in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
