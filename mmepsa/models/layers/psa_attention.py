# Copyright (c) mmepsa contributors. All rights reserved.
"""The weighting of the PSA module's branches, fused.

``PSAModule`` multiplies each of its four branches by its attention (and,
with an eval-mode BN folded in, adds the BN's shift) and concatenates the
results in the authors' order, branch 4 first. :func:`weighted_concat` does
that in one pass that writes each weighted branch straight into its slice
of the output, and its backward computes each branch's gradients from its
slice of the output's gradient: no product tensors and no concatenation,
in training as in inference. The SE module runs its 1x1 convs (on 1x1
maps) as matrix products where this fusion is on.

On by default; ``with psa_fusion(False):`` runs the authors' operations
(products, then ``torch.cat``; the SE module's convs), as tracing,
scripting, ``torch.compile`` and ONNX export always do. Both give the same
outputs and gradients to float rounding (tests compare them in float64).
"""
import contextlib
from typing import Iterator, Optional, Sequence

import torch

from .psa_conv import _exporting, _memory_format

_FUSION = True


@contextlib.contextmanager
def psa_fusion(enabled: bool) -> Iterator[None]:
    """Turn the fused PSA weighting (and the SE module's matrix products)
    on or off for a ``with`` block (it is on by default), then back to what
    it was."""
    global _FUSION
    if not isinstance(enabled, bool):
        raise TypeError(f'psa_fusion expects True or False, got {enabled!r}')
    previous, _FUSION = _FUSION, enabled
    try:
        yield
    finally:
        _FUSION = previous


def fusing() -> bool:
    """Whether the fused forms run now: on, and not tracing, scripting,
    compiling or exporting."""
    return _FUSION and not _exporting()


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
            memory_format=_memory_format(first))
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
            grad_attention = torch.stack([(part * feat).sum(
                (2, 3), keepdim=True) for part, feat in zip(parts, feats)])
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
    if given, concatenated branch 4 first, in the branches' memory format.
    Fused (:class:`_WeightedConcat`) where :func:`fusing` says so."""
    if fusing():
        return _WeightedConcat.apply(attention, shift, *feats)
    return torch.cat([
        feats[j] * attention[j] if shift is None else torch.addcmul(
            shift[j], feats[j], attention[j]) for j in (3, 2, 1, 0)
    ], 1)
