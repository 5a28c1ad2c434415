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
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_conv_layer, build_norm_layer
from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.models.layers import ResLayer
from mmengine.model import BaseModule

from ..layers.fold_bn import (_has_hooks, conv_bn, eval_bn_affine, foldable,
                              run_folded)
from ..layers.layout import to_contiguous_nchw, use_channels_last
from ..layers.psa_attention import fusing, weighted_concat
from ..layers.psa_conv import PSAConv2d
from .epsanet_args import check_epsanet_args

ConfigType = Union[dict, None]


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
        layers = (self.fc1, self.relu, self.fc2)
        if (pooled.dim() != 4 or pooled.shape[2:] != (1, 1) or not fusing()
                or _has_hooks(*layers)
                or type(self.fc1) is not nn.Conv2d
                or type(self.fc2) is not nn.Conv2d):
            return torch.sigmoid(self.fc2(self.relu(self.fc1(pooled))))
        # A 1x1 conv of a 1x1 map is a matrix product, and runs faster as
        # one (docs/performance.md); with hooks (a FLOPs counter's), under
        # export or with psa_fusion(False), the convs run.
        hidden = F.linear(
            pooled.flatten(1), self.fc1.weight.flatten(1),
            self.fc1.bias).relu_()
        return torch.sigmoid(
            F.linear(hidden, self.fc2.weight.flatten(1),
                     self.fc2.bias)).view(pooled.shape[0], -1, 1, 1)


class PSAModule(BaseModule):
    """Pyramid Squeeze Attention: the EPSA block's replacement of a 3x3 conv.

    Four convs over the same input, each producing ``out_channels // 4``
    channels with its own kernel size and group count; one shared SE module
    turns each branch into channel attention, a softmax across the branches
    recalibrates it, and the weighted branches are concatenated, branch 4
    first (the authors' order).

    The four SE passes of the original run here as one batched pass (the SE
    weights are shared), and each weighted branch is written straight into
    its slice of the output, in the authors' order, with no intermediate
    concatenation of the raw branches (``mmepsa.models.layers.psa_fusion``);
    the result equals the authors' formulation (``mmepsa.testing.RefPSA``)
    to float rounding.

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

    def forward(self,
                x: torch.Tensor,
                norm: Optional[nn.Module] = None) -> torch.Tensor:
        """The PSA output, or ``norm`` of it if ``norm`` is given (the
        block's ``norm2``): an eval-mode BN is then folded into the
        weighting of the branches (``mmepsa.models.layers.fold_bn``), which
        saves its pass over the output."""
        feats = [
            self.conv_1(x),
            self.conv_2(x),
            self.conv_3(x),
            self.conv_4(x)
        ]
        # One SE pass over the 4 branches: stack their pooled vectors on the
        # batch axis, then a softmax across the branches, per channel. The
        # mean is taken as sum / (H * W): a sum's gradient is an expanded
        # view, which autograd adds to the branch's gradient in place.
        area = feats[0].shape[2] * feats[0].shape[3]
        pooled = torch.cat([f.sum((2, 3), keepdim=True) for f in feats]) / area
        attention = self.se(pooled).unflatten(0, (4, x.shape[0])).softmax(0)
        shift = None
        if norm is not None and foldable(norm):
            # norm(branch * attention) = branch * (attention * scale) + shift
            scale, shift = (t.view(4, 1, -1, 1, 1).flip(0)
                            for t in eval_bn_affine(norm))
            attention = attention * scale
            norm = None  # applied
        # Each weighted branch straight into its slice of the output
        # (mmepsa.models.layers.psa_attention).
        out = weighted_concat(feats, attention, shift)
        return out if norm is None else norm(out)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck's forward, with eval-mode BN folded into the conv or
        PSA module before it (``mmepsa.models.layers.fold_bn``); ``with_cp``
        checkpoints with ``use_reentrant=False``."""

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            out = self.relu(conv_bn(self.conv1, self.norm1, x))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv1_plugin_names)
            if isinstance(self.conv2, PSAModule):
                out = self.relu(self.conv2(out, self.norm2))
            else:  # a replaced conv2 (e.g. the authors' PSA, in tests)
                out = self.relu(self.norm2(self.conv2(out)))
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = conv_bn(self.conv3, self.norm3, out)
            if self.with_plugins:
                out = self.forward_plugin(out, self.after_conv3_plugin_names)
            identity = x if self.downsample is None else run_folded(
                self.downsample, x)
            out += identity  # in place, as mmdet's Bottleneck
            return out

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x, use_reentrant=False)
        else:
            out = _inner_forward(x)
        return self.relu(out)


class EPSANet(ResNet):
    """EPSANet backbone: mmdet's ResNet built of :class:`EPSABlock`.

    A member of mmdet's ResNet family (as ResNeSt and Res2Net are): the
    stem, stages (``ResLayer``), freezing, ``norm_eval`` and the
    ``init_cfg``/``pretrained`` logic are ResNet's, with ResNet's argument
    names and meanings. Its own arguments come first below.

    A BN layer in eval mode (in inference, in frozen stages, and throughout
    with ``norm_eval=True``) is folded into the conv before it at run time,
    which saves its pass over the features; the parameters stay as they are
    (``mmepsa.models.layers.fold_bn``; ``with bn_folding(False):`` turns it
    off).

    Args:
        depth (int): 50 or 101.
        variant (str): PSA setting by name. Only ``'small'`` (kernels
            (3, 5, 7, 9), groups (1, 4, 8, 16)) is shipped: the authors
            released no definition of 'large' (see the docs for a
            reconstruction from the paper's counts). Pass
            ``conv_kernels``/``conv_groups`` for other settings.
        conv_kernels (Sequence[int], optional): The 4 PSA kernel sizes; given,
            they override ``variant``.
        conv_groups (Sequence[int], optional): The 4 PSA group counts; given,
            they override ``variant``.
        se_ratio (int): SE squeeze ratio. Defaults to 16.
        widen_factor (int): Inner width of each block = its base width x
            ``widen_factor`` (conv1, PSA, conv3's input); block outputs keep
            their width, as in Wide-ResNet. Defaults to 1.
        channels_last (bool, optional): Run the network in channels-last
            memory format (NHWC), where oneDNN's grouped 5x5/7x7/9x9
            convolutions are much faster. ``None`` (default) turns it on for
            CPU inputs and off for others (not measured on GPU; set True to
            try). The input is converted on entry; parameters and
            checkpoints are unaffected.
        contiguous_outputs (bool): Return the features contiguous NCHW, as
            an NCHW run would (True, default: copied from channels-last by
            tiles), so that any neck or head can take them. False returns
            them in the memory format the network ran in, for a neck that
            takes channels-last features and converts its own outputs, as
            :class:`mmepsa.models.ChannelsLastFPN` does (mmepsa's COCO
            detection configs); torch's ops accept either, but mmcv's CPU
            RoIAlign reads NCHW memory and must not get them.
        in_channels (int): Input image channels. Defaults to 3.
        stem_channels (int): Channels of the stem. Defaults to 64.
        base_channels (int): Base width of the first stage. Defaults to 64.
        num_stages (int): Stages used, 1 to 4. Defaults to 4.
        strides (Sequence[int]): Stride of each stage.
        dilations (Sequence[int]): Dilation of each stage's PSA convs.
        out_indices (Sequence[int]): Stages whose outputs are returned.
        style (str): "pytorch" (stride on the PSA convs) or "caffe" (stride on
            the first 1x1 conv). Defaults to "pytorch".
        deep_stem (bool): Three 3x3 convs instead of the 7x7 stem conv
            (``stem.0``...), as in ResNetV1c/V1d. Defaults to False.
        avg_down (bool): Downsample shortcuts by a 2x2 average pool and a
            stride-1 1x1 conv, as in ResNetV1d (their conv and norm become
            ``downsample.1``/``.2``). Defaults to False.
        frozen_stages (int): Stages to freeze (stop grad and eval mode);
            -1 freezes nothing, 0 the stem, k the stem and stages 1..k.
        conv_cfg (dict, optional): Config of conv layers.
        norm_cfg (dict): Config of norm layers (BN, SyncBN, GN...).
        norm_eval (bool): Keep BN layers in eval mode while training.
            Defaults to True.
        dcn (dict, optional): Not supported (the PSA convs are not
            deformable): must be None.
        stage_with_dcn (Sequence[bool]): Must be all False.
        plugins (list[dict], optional): mmdet ResNet's plugins (e.g. a
            ContextBlock), each ``dict(cfg=..., position=..., stages=...)``
            with position 'after_conv1', 'after_conv2' (after the PSA
            module) or 'after_conv3'.
        with_cp (bool): Checkpoint each block to save memory.
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
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 style: str = 'pytorch',
                 deep_stem: bool = False,
                 avg_down: bool = False,
                 frozen_stages: int = -1,
                 conv_cfg: ConfigType = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True,
                 dcn: ConfigType = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 plugins: Optional[List[dict]] = None,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 pretrained: Optional[str] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        # ResNet's own arguments, passed on as they are once checked.
        resnet_args = dict(
            depth=depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=base_channels,
            num_stages=num_stages,
            strides=strides,
            dilations=dilations,
            out_indices=out_indices,
            style=style,
            deep_stem=deep_stem,
            avg_down=avg_down,
            frozen_stages=frozen_stages,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            dcn=dcn,
            stage_with_dcn=stage_with_dcn,
            plugins=plugins,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            pretrained=pretrained,
            init_cfg=init_cfg)
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
            zero_init_residual and init_cfg is None and pretrained is None)
        super().__init__(**dict(
            resnet_args,
            strides=tuple(strides),
            dilations=tuple(dilations),
            out_indices=tuple(out_indices),
            # checked all False; ResNet wants one per stage
            stage_with_dcn=(False, ) * num_stages))
        self.in_channels = in_channels
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
                    '). Put ImageNet weights there (the authors published '
                    'none: train them with configs/epsanet, or convert yours '
                    'or an mmpretrain one with '
                    'tools/model_converters/epsanet_to_mmdet.py; see '
                    'docs/checkpoints.md), or set init_cfg=None to train from '
                    'scratch.')
        super().init_weights()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """ResNet's forward, after checking the input shape, in channels-last
        memory format where ``channels_last`` says so, the outputs in the
        format ``contiguous_outputs`` says. A BN in eval mode is
        folded into the conv before it (``mmepsa.models.layers.fold_bn``)."""
        if (x.dim() != 4 or x.shape[1] != self.in_channels
                or 0 in x.shape[2:]):
            raise ValueError(
                f'EPSANet expects input of shape (N, {self.in_channels}, H, '
                f'W) (in_channels={self.in_channels}, H and W >= 1), got '
                f'{tuple(x.shape)}')
        if not use_channels_last(self.channels_last, x):
            return self._forward_stages(x)
        x = x.contiguous(memory_format=torch.channels_last)
        outs = self._forward_stages(x)
        if not self.contiguous_outputs:
            return outs
        # Contiguous NCHW features, as from an NCHW run (copied by tiles:
        # torch's own copy was up to 4x slower on CPU).
        return tuple(to_contiguous_nchw(out) for out in outs)

    def _forward_stages(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """ResNet's forward, with eval-mode BN folded into the stem conv
        (``mmepsa.models.layers.fold_bn``), as the blocks fold theirs."""
        if self.deep_stem:
            x = run_folded(self.stem, x)
        else:
            x = self.relu(conv_bn(self.conv1, self.norm1, x))
        x = self.maxpool(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'EPSANet':
        """ResNet's train (frozen stages and, with ``norm_eval``, BN stay in
        eval mode), returning the module as ``nn.Module.train`` does."""
        super().train(mode)
        return self
