# Copyright (c) mmepsa contributors. All rights reserved.
"""The PSA module's attention and weighting, fused.

The plain ``PSAModule`` runs its SE module on each branch, a softmax across
the branches, multiplies each branch by its attention and concatenates the
products in the authors' order, branch 4 first. Here the four branches are
pooled into one batch for a single SE pass, whose 1x1 convs on 1x1 maps run
as matrix products (:func:`se_attention`), and :func:`weighted_concat`
writes each weighted branch straight into its slice of the output; its
backward computes each branch's gradients from its slice of the output's
gradient: no product tensors and no concatenation, in training as in
inference. Outputs and gradients equal the plain module's to float
rounding.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .probes import memory_format


def se_attention(se: nn.Module, feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """The softmax across branches of the SE attention of each branch, of
    shape ``(4, N, C, 1, 1)``, in one batched SE pass. ``se`` is the PSA
    module's ``SEWeightModule`` (``fc1``, ``relu``, ``fc2``)."""
    n, _, h, w = feats[0].shape
    # The mean as sum / (H * W): a sum's gradient is an expanded view,
    # which autograd adds to the branch's gradient in place.
    pooled = torch.cat([f.sum((2, 3)) for f in feats]) / (h * w)
    if type(se.fc1) is nn.Conv2d and type(se.fc2) is nn.Conv2d:
        # a 1x1 conv of a 1x1 map is a matrix product
        hidden = F.linear(pooled, se.fc1.weight.flatten(1),
                          se.fc1.bias).relu_()
        weights = torch.sigmoid(
            F.linear(hidden, se.fc2.weight.flatten(1), se.fc2.bias))
    else:
        weights = torch.sigmoid(
            se.fc2(se.relu(se.fc1(pooled[..., None, None]))))
    return weights.view(4, n, -1, 1, 1).softmax(0)


class _WeightedConcat(torch.autograd.Function):
    """:func:`weighted_concat` as one autograd node. Its backward is made of
    differentiable ops, so double backward works."""

    @staticmethod
    def forward(ctx, attention: torch.Tensor, shift: Optional[torch.Tensor],
                *feats: torch.Tensor) -> torch.Tensor:
        first, channels = feats[0], feats[0].shape[1]
        out = torch.empty(
            (first.shape[0], 4 * channels) + first.shape[2:],
            dtype=torch.promote_types(first.dtype, attention.dtype),
            device=first.device,
            memory_format=memory_format(first))
        for i, j in enumerate((3, 2, 1, 0)):
            part = out[:, i * channels:(i + 1) * channels]
            if shift is None:
                torch.mul(feats[j], attention[j], out=part)
            else:
                torch.addcmul(shift[j], feats[j], attention[j], out=part)
        ctx.save_for_backward(attention, *feats)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple:
        attention, *feats = ctx.saved_tensors
        # parts[j]: the gradient of branch j's slice (branch 4 comes first)
        parts = grad.split(feats[0].shape[1], 1)[::-1]
        needs = ctx.needs_input_grad
        grad_attention = grad_shift = None
        if needs[0]:
            grad_attention = torch.stack([(part * feat).sum((2, 3),
                                                            keepdim=True)
                                          for part, feat in zip(parts, feats)])
        if needs[1]:  # False where shift is None
            grad_shift = torch.stack(
                [part.sum((0, 2, 3), keepdim=True) for part in parts])
        grad_feats = [
            part * attention[j] if needs[2 + j] else None
            for j, part in enumerate(parts)
        ]
        return (grad_attention, grad_shift, *grad_feats)


def weighted_concat(feats: Sequence[torch.Tensor],
                    attention: torch.Tensor,
                    shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``cat([feats[j] * attention[j] (+ shift[j]) for j in (3, 2, 1, 0)],
    1)``: the four ``(N, C, H, W)`` branches weighted by ``attention`` of
    shape ``(4, N, C, 1, 1)``, plus ``shift`` of shape ``(4, 1, C, 1, 1)``
    if given, concatenated branch 4 first, in the branches' memory format,
    in one pass (:class:`_WeightedConcat`)."""
    return _WeightedConcat.apply(attention, shift, *feats)
