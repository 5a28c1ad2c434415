# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast forward of an EPSANet: the plain model's sums, run faster on CPU.

:func:`engaged` says whether it runs; :func:`forward_resnet` runs it. It
reads the backbone's own modules and parameters and walks them as mmdet's
``ResNet.forward`` and ``Bottleneck.forward`` do, with:

* eval-mode BN folded into the conv before it (:mod:`.fold`), and the BN
  after each PSA module folded into its weighting;
* the PSA module's SE pass batched over its branches, and the weighted
  branches written straight into the output (:mod:`.weighting`);
* the PSA branch convs in the fastest of their exact forms where the switch
  autotunes (:mod:`.conv_forms`);
* channels-last execution where ``channels_last`` says so (:mod:`.layout`).

A module it does not know (a block or PSA module of another type, a conv or
norm not folded) runs as the module itself, and so does a conv with hooks
(such as those :class:`~mmepsa.engine.CPUBF16OptimWrapper` puts on strided
convs), so that they fire.
"""
import time
from typing import Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import Bottleneck
from mmengine.logging import print_log

from . import conv_forms
from .conv_forms import TunedConv
from .fold import conv_bn, eval_bn_affine, foldable, run_folded
from .layout import to_contiguous_nchw, use_channels_last
from .probes import global_hooks, own_hooks
from .switch import on_for
from .weighting import se_attention, weighted_concat


def _hooks_missed(backbone: nn.Module) -> bool:
    """Whether the fast path would skip a hooked module's call: global
    hooks, or hooks on a module inside ``backbone`` other than a conv
    outside the SE modules (the fast path runs such a conv as itself when
    it has hooks). The backbone's own hooks run around its forward."""
    if global_hooks():
        return True
    hooked = [
        m for m in backbone.modules() if m is not backbone and own_hooks(m)
    ]
    if not hooked:  # the usual case: one walk of the modules
        return False
    in_se = {
        id(m)
        for psa in backbone.modules()
        if isinstance(getattr(psa, 'se', None), nn.Module)
        for m in psa.se.modules()
    }
    return any(not isinstance(m, nn.Conv2d) or id(m) in in_se for m in hooked)


def engaged(backbone: nn.Module, x: torch.Tensor) -> bool:
    """Whether the fast path runs ``backbone`` on ``x``: the switch is on,
    ``x`` is a CPU tensor, and no tracing, scripting, ``torch.compile``,
    ONNX export or module hook (a FLOPs counter's) would miss its modules
    being called; hooks on the backbone itself and on its convs (outside
    the SE modules: the bf16 optimizer wrapper's) do not stop it."""
    return on_for(x) and not _hooks_missed(backbone)


def _branch_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A PSA branch conv, autotuned; a conv with hooks runs as itself
    (where the fast path runs, only convs outside the SE modules may have
    hooks: :func:`engaged`)."""
    if type(conv) is nn.Conv2d and not own_hooks(conv):
        return TunedConv(conv)(x)
    return conv(x)


def psa_forward(psa: nn.Module, x: torch.Tensor,
                norm: nn.Module) -> torch.Tensor:
    """``norm(psa(x))`` for a ``PSAModule``; an eval-mode BN ``norm`` is
    folded into the weighting of the branches (``norm(branch * a) =
    branch * (a * scale) + shift``)."""
    feats = [
        _branch_conv(conv, x)
        for conv in (psa.conv_1, psa.conv_2, psa.conv_3, psa.conv_4)
    ]
    attention = se_attention(psa.se, feats)
    if not foldable(norm):
        return norm(weighted_concat(feats, attention))
    # the output holds branch 4 first: the BN's channels in that order
    scale, shift = (
        t.view(4, 1, -1, 1, 1).flip(0) for t in eval_bn_affine(norm))
    return weighted_concat(feats, attention * scale, shift)


def block_forward(block: nn.Module, x: torch.Tensor,
                  psa_type: type) -> torch.Tensor:
    """mmdet's ``Bottleneck.forward`` for an EPSA block, fast; a block that
    overrides it, or whose ``conv2`` is not a plain ``psa_type``, runs as
    itself."""
    if (type(block).forward is not Bottleneck.forward
            or type(block.conv2) is not psa_type):
        return block(x)

    def inner(x: torch.Tensor) -> torch.Tensor:
        out = block.relu(conv_bn(block.conv1, block.norm1, x))
        if block.with_plugins:
            out = block.forward_plugin(out, block.after_conv1_plugin_names)
        out = block.relu(psa_forward(block.conv2, out, block.norm2))
        if block.with_plugins:
            out = block.forward_plugin(out, block.after_conv2_plugin_names)
        out = conv_bn(block.conv3, block.norm3, out)
        if block.with_plugins:
            out = block.forward_plugin(out, block.after_conv3_plugin_names)
        identity = x if block.downsample is None else run_folded(
            block.downsample, x)
        out += identity  # in place, as mmdet's Bottleneck
        return out

    if block.with_cp and x.requires_grad:
        out = cp.checkpoint(inner, x, use_reentrant=False)
    else:
        out = inner(x)
    return block.relu(out)


def _stages(backbone: nn.Module, x: torch.Tensor,
            psa_type: type) -> Tuple[torch.Tensor, ...]:
    """mmdet's ``ResNet.forward``, with the fast stem and blocks."""
    if backbone.deep_stem:
        x = run_folded(backbone.stem, x)
    else:
        x = backbone.relu(conv_bn(backbone.conv1, backbone.norm1, x))
    x = backbone.maxpool(x)
    outs = []
    for i, layer_name in enumerate(backbone.res_layers):
        for block in getattr(backbone, layer_name):
            x = block_forward(block, x, psa_type)
        if i in backbone.out_indices:
            outs.append(x)
    return tuple(outs)


def forward_resnet(backbone: nn.Module, x: torch.Tensor,
                   psa_type: type) -> Tuple[torch.Tensor, ...]:
    """The fast forward of an EPSANet ``backbone`` whose PSA modules are
    ``psa_type``: its ``out_indices`` stage outputs, contiguous NCHW unless
    it ran channels-last with ``contiguous_outputs=False``."""
    start, tuned = time.perf_counter(), len(conv_forms.choices())
    conv_forms.announce(
        'mmepsa fast path: timing the PSA convs\' exact forms for input '
        f'{tuple(x.shape)} (once per input size; MMEPSA_FAST_PATH=untuned '
        'turns it off)')
    channels_last = use_channels_last(backbone.channels_last, x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    outs = _stages(backbone, x, psa_type)
    if channels_last and backbone.contiguous_outputs:
        # copied by tiles: torch's own copy is slow on CPU
        outs = tuple(to_contiguous_nchw(out) for out in outs)
    conv_forms.announce(None)
    tuned = len(conv_forms.choices()) - tuned
    if tuned:
        print_log(
            f'mmepsa fast path: chose the forms of {tuned} PSA convs in '
            f'{time.perf_counter() - start:.1f} s',
            logger='current')
    return outs
