# Copyright (c) mmepsa contributors. All rights reserved.
"""The fast path's memory format: channels-last where it wins, and a fast
channels-last to contiguous NCHW copy, with autograd.

``x.contiguous()`` of a channels-last CPU tensor is a transposition of an
``(H*W, C)`` matrix per image; torch copies it element by element across
the whole image, so with C = 256 and a 200x304 map (an 800x1216 input's
first stage) every source cache line is reloaded C times. Copying the
transposition in tiles of a few hundred rows keeps each tile in cache. An
image under ``2 * TILE_ELEMENTS`` elements fits in cache whole, and there
torch's own copy, in one call for the whole batch, is used. The values are
copied, not computed: the result equals ``x.contiguous()`` bit for bit.
The gradient goes back to channels-last with torch's own copy.
"""
from typing import Optional

import torch

from .probes import exporting
from .switch import measured_win

# Elements of the source tile copied at once (512 KiB of float32): a tile of
# TILE_ELEMENTS // C rows of the (H*W, C) matrix.
TILE_ELEMENTS = 1 << 17


def check_channels_last(owner: str, value) -> None:
    """The check of a ``channels_last`` argument (EPSANet's, the neck's):
    None (auto), True or False, else a ValueError naming ``owner``."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f'{owner}: channels_last must be None (auto: on '
                         'where measured to win), True or False, got '
                         f'{value!r}')


def use_channels_last(setting: Optional[bool], x: torch.Tensor) -> bool:
    """Whether to run channels-last: ``setting``, or for None (auto)
    whether it was measured to win for ``x``'s device here
    (:func:`mmepsa.models.fast.switch.measured_win`)."""
    return measured_win(x.device) if setting is None else setting


def _tiled_nchw(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    src = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: x is NHWC
    dst = out.view(n, c, h * w)
    rows = max(64, TILE_ELEMENTS // max(c, 1))
    for i in range(n):
        for start in range(0, h * w, rows):
            dst[i, :, start:start + rows].copy_(src[i, start:start + rows].t())
    return out


class _ToNCHW(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        if c * h * w < 2 * TILE_ELEMENTS:  # an image fits in cache
            return x.contiguous()
        return _tiled_nchw(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=torch.channels_last)


def to_contiguous_nchw(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()``, by tiles when ``x`` is a channels-last CPU tensor
    (see the module docstring); gradients flow back in channels-last."""
    if (x.dim() != 4 or x.device.type != 'cpu' or x.is_contiguous()
            or not x.is_contiguous(memory_format=torch.channels_last)
            or exporting()):
        return x.contiguous()
    return _ToNCHW.apply(x)
