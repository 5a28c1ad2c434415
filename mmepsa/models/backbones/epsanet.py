# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet: ResNet with the bottleneck's 3x3 conv replaced by a PSA module.

Paper: "EPSANet: An Efficient Pyramid Squeeze Attention Block on
Convolutional Neural Network" (arXiv 2105.14447). EPSANet is a member of
mmdet's ResNet family: :class:`EPSABlock` subclasses mmdet's ``Bottleneck``
and :class:`EPSANet` its ``ResNet``, as mmdet's ResNeSt and Res2Net do, so
deep_stem, avg_down, plugins, frozen_stages and norm_eval are ResNet's.
Parameter names follow the authors' code (``conv1``/``bn1``,
``layerK.i.conv2.conv_1..conv_4``, ``conv2.se.fc1/fc2``, ``downsample.0/1``)
so their checkpoints load as they are. The weighted branches are
concatenated in the authors' order (branch 4 first), which checkpoints
trained with their code depend on.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmdet.utils import OptConfigType
from mmengine.model import BaseModule

from .. import fast
from .epsanet_args import (check_epsanet_args, check_pretrained,
                           resnet_arguments)


class SEWeightModule(BaseModule):
    """Squeeze-and-excitation weights of one PSA branch (the weights are
    shared by the four branches): global average pooling, 1x1 conv
    (``C -> C // ratio``, with bias), ReLU, 1x1 conv back to ``C``,
    sigmoid; ``(N, C, H, W)`` in, ``(N, C, 1, 1)`` out.

    Args:
        channels (int): Channels of one branch.
        ratio (int): Squeeze ratio. Defaults to 16.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Example:
        >>> import torch
        >>> se = SEWeightModule(64)
        >>> se(torch.rand(2, 64, 8, 8)).shape
        torch.Size([2, 64, 1, 1])
    """

    def __init__(self,
                 channels: int,
                 ratio: int = 16,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // ratio, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // ratio, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class PSAModule(BaseModule):
    """Pyramid Squeeze Attention: the EPSA block's replacement of a 3x3 conv.

    Four convs over the same input, each producing ``out_channels // 4``
    channels with its own kernel size and group count; one shared SE module
    turns each branch into channel attention, a softmax across the branches
    recalibrates it, and the weighted branches are concatenated, branch 4
    first (the authors' order).

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
                 conv_cfg: OptConfigType = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg)
        if len(conv_kernels) != 4 or len(conv_groups) != 4:
            raise ValueError('PSAModule needs 4 branches: got conv_kernels='
                             f'{tuple(conv_kernels)}, conv_groups='
                             f'{tuple(conv_groups)}')
        self.split_channels = out_channels // 4
        for i, (kernel, groups) in enumerate(zip(conv_kernels, conv_groups)):
            self.add_module(
                f'conv_{i + 1}',
                build_conv_layer(
                    conv_cfg,
                    in_channels,
                    self.split_channels,
                    kernel_size=kernel,
                    stride=stride,
                    padding=dilation * (kernel // 2),
                    dilation=dilation,
                    groups=groups,
                    bias=False))
        self.se = SEWeightModule(self.split_channels, se_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [
            self.conv_1(x),
            self.conv_2(x),
            self.conv_3(x),
            self.conv_4(x)
        ]
        # Channel attention of each branch, softmax across the branches.
        attention = torch.stack([self.se(f) for f in feats]).softmax(dim=0)
        # The weighted branches, concatenated branch 4 first (the authors'
        # order, which their checkpoints depend on).
        return torch.cat([feats[i] * attention[i] for i in (3, 2, 1, 0)],
                         dim=1)


class EPSABlock(Bottleneck):
    """Bottleneck block of EPSANet: 1x1 conv, PSA module, 1x1 conv.

    mmdet's ResNet ``Bottleneck`` with its 3x3 ``conv2`` replaced by a
    :class:`PSAModule`, as ResNeSt replaces it by split attention: the names
    (``conv1``, ``norm1``... ``downsample``) and the options (style,
    dilation, plugins, with_cp) are Bottleneck's. If style is "pytorch" the
    stride is on the PSA convs; if it is "caffe" it is on the first 1x1 conv.
    Deformable convs (``dcn``) are refused: there is no 3x3 conv to deform.

    Args:
        inplanes (int): Input channels.
        planes (int): Base width of the block; it outputs ``planes * 4``
            channels.
        conv_kernels (Sequence[int]): PSA kernel sizes.
        conv_groups (Sequence[int]): PSA group counts.
        se_ratio (int): SE squeeze ratio. Defaults to 16.
        widen_factor (int): Inner width ``planes * widen_factor`` (conv1's
            output, the PSA module, conv3's input), as in Wide-ResNet; the
            output stays ``planes * 4``. Defaults to 1.
        **kwargs: The other arguments of mmdet's ``Bottleneck``: stride,
            dilation, downsample, style, with_cp, conv_cfg, norm_cfg,
            plugins, init_cfg.

    Example:
        >>> import torch
        >>> block = EPSABlock(64, 16, conv_groups=(1, 2, 2, 4), se_ratio=4)
        >>> block(torch.rand(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """
    expansion = 4

    def __init__(self,
                 inplanes: int,
                 planes: int,
                 conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16),
                 se_ratio: int = 16,
                 widen_factor: int = 1,
                 **kwargs) -> None:
        if kwargs.get('dcn') is not None:
            raise ValueError('EPSABlock: dcn is not supported (conv2 is a '
                             f"PSA module), got dcn={kwargs['dcn']!r}")
        super().__init__(inplanes, planes, **kwargs)
        width = planes * widen_factor
        if width != planes:
            # Widen as mmdet's ResNeXt does: conv1, the norms after conv1 and
            # conv2, conv3's input and the plugins after conv1/conv2.
            self.norm1_name, norm1 = build_norm_layer(
                self.norm_cfg, width, postfix=1)
            self.norm2_name, norm2 = build_norm_layer(
                self.norm_cfg, width, postfix=2)
            self.conv1 = build_conv_layer(
                self.conv_cfg,
                inplanes,
                width,
                kernel_size=1,
                stride=self.conv1_stride,
                bias=False)
            self.add_module(self.norm1_name, norm1)
            self.add_module(self.norm2_name, norm2)
            self.conv3 = build_conv_layer(
                self.conv_cfg,
                width,
                planes * self.expansion,
                kernel_size=1,
                bias=False)
            if self.with_plugins:
                for name in (self.after_conv1_plugin_names +
                             self.after_conv2_plugin_names):
                    del self._modules[name]
                self.after_conv1_plugin_names = self.make_block_plugins(
                    width, self.after_conv1_plugins)
                self.after_conv2_plugin_names = self.make_block_plugins(
                    width, self.after_conv2_plugins)
        # Bottleneck's 3x3 conv2 is replaced: same name, same place.
        self.conv2 = PSAModule(
            width,
            width,
            conv_kernels=conv_kernels,
            conv_groups=conv_groups,
            stride=self.conv2_stride,
            dilation=self.dilation,
            se_ratio=se_ratio,
            conv_cfg=self.conv_cfg)


class EPSANet(ResNet):
    """EPSANet backbone: mmdet's ResNet built of :class:`EPSABlock`.

    A member of mmdet's ResNet family (as ResNeSt and Res2Net are): the
    stem, stages (``ResLayer``), freezing, ``norm_eval`` and the
    ``init_cfg``/``pretrained`` logic are ResNet's, and so are the
    arguments after ``contiguous_outputs``, with the same names, defaults
    and meanings (``stem_channels=None`` is ``base_channels``), except that
    deformable convs are refused: a PSA module is not a 3x3 conv
    (``dcn=None``, ``stage_with_dcn`` all False). ``plugins`` take the
    positions 'after_conv1', 'after_conv2' (after the PSA module) and
    'after_conv3'.

    On CPU, ``forward`` runs the model through the fast path
    (:mod:`mmepsa.models.fast`: same sums, same parameters), which
    ``mmepsa.models.fast.fast_path(False)`` or ``MMEPSA_FAST_PATH=0`` turn
    off; everywhere else it runs the plain modules.

    Args:
        depth (int): 50 or 101.
        variant (str): PSA setting by name. Only ``'small'`` (kernels
            (3, 5, 7, 9), groups (1, 4, 8, 16)) is shipped: the authors
            released no definition of 'large'.
        conv_kernels (Sequence[int], optional): The 4 PSA kernel sizes; given,
            they override ``variant``.
        conv_groups (Sequence[int], optional): The 4 PSA group counts; given,
            they override ``variant``.
        se_ratio (int): SE squeeze ratio. Defaults to 16.
        widen_factor (int): Inner width of each block = its base width x
            ``widen_factor`` (conv1, PSA, conv3's input); block outputs keep
            their width, as in Wide-ResNet. Defaults to 1.
        channels_last (bool, optional): Fast path only: run in channels-last
            memory format (NHWC). ``None`` (default): where measured to win
            (:func:`mmepsa.models.fast.switch.measured_win`).
        contiguous_outputs (bool): Fast path only: return the features
            contiguous NCHW (True, default), or in the memory format the
            network ran in (False), for a neck that takes channels-last
            features, as :class:`mmepsa.models.ChannelsLastFPN` does.
        **kwargs: mmdet ResNet's other arguments, with its defaults:
            in_channels, stem_channels, base_channels, num_stages, strides,
            dilations, out_indices, style, deep_stem, avg_down,
            frozen_stages, conv_cfg, norm_cfg, norm_eval, dcn,
            stage_with_dcn, plugins, with_cp, zero_init_residual,
            pretrained, init_cfg.

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
    plugin_positions = ('after_conv1', 'after_conv2', 'after_conv3')

    def __init__(self,
                 depth: int = 50,
                 variant: str = 'small',
                 conv_kernels: Optional[Sequence[int]] = None,
                 conv_groups: Optional[Sequence[int]] = None,
                 se_ratio: int = 16,
                 widen_factor: int = 1,
                 channels_last: Optional[bool] = None,
                 contiguous_outputs: bool = True,
                 **kwargs) -> None:
        # ResNet's arguments, its defaults filled in, all checked up front.
        resnet_args = resnet_arguments(depth=depth, **kwargs)
        conv_kernels, conv_groups = check_epsanet_args(
            type(self),
            variant=variant,
            conv_kernels=conv_kernels,
            conv_groups=conv_groups,
            se_ratio=se_ratio,
            widen_factor=widen_factor,
            channels_last=channels_last,
            contiguous_outputs=contiguous_outputs,
            **resnet_args)
        # What make_res_layer needs, set before ResNet builds the stages (as
        # mmdet's ResNeSt does).
        self.variant = variant
        self.conv_kernels = conv_kernels
        self.conv_groups = conv_groups
        self.se_ratio = se_ratio
        self.widen_factor = widen_factor
        # mmdet's ResNet zero-inits the last norm of its own Bottleneck only
        # (``block is Bottleneck``); make_res_layer does it for EPSABlock.
        self.zero_init_blocks = (
            resnet_args['zero_init_residual']
            and resnet_args['init_cfg'] is None
            and resnet_args['pretrained'] is None)
        super().__init__(**dict(
            resnet_args,
            strides=tuple(resnet_args['strides']),
            dilations=tuple(resnet_args['dilations']),
            out_indices=tuple(resnet_args['out_indices']),
            # checked all False; ResNet wants one per stage
            stage_with_dcn=(False, ) * resnet_args['num_stages']))
        self.in_channels = resnet_args['in_channels']
        self.channels_last = channels_last
        self.contiguous_outputs = contiguous_outputs

    def make_res_layer(self, **kwargs) -> ResLayer:
        """Pack a stage's EPSA blocks into a ``ResLayer``."""
        if self.zero_init_blocks:
            kwargs['init_cfg'] = dict(
                type='Constant', val=0, override=dict(name='norm3'))
        return ResLayer(
            conv_kernels=self.conv_kernels,
            conv_groups=self.conv_groups,
            se_ratio=self.se_ratio,
            widen_factor=self.widen_factor,
            **kwargs)

    def init_weights(self) -> None:
        """Initialize, first checking that a local ``Pretrained`` checkpoint
        exists, so a missing file fails with one message naming it."""
        check_pretrained(self.init_cfg)
        super().init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """ResNet's forward, after checking the input shape; on CPU through
        the fast path (:mod:`mmepsa.models.fast`), which computes the same
        sums."""
        if (x.dim() != 4 or x.shape[1] != self.in_channels
                or 0 in x.shape[2:]):
            raise ValueError(
                f'EPSANet expects input of shape (N, {self.in_channels}, H, '
                f'W) (in_channels={self.in_channels}, H and W >= 1), got '
                f'{tuple(x.shape)}')
        if fast.engaged(self, x):
            return fast.forward_resnet(self, x, psa_type=PSAModule)
        return super().forward(x)

    def train(self, mode: bool = True) -> 'EPSANet':
        """ResNet's train (frozen stages and, with ``norm_eval``, BN stay in
        eval mode), returning the module as ``nn.Module.train`` does."""
        super().train(mode)
        return self
