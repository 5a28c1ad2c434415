# Copyright (c) mmepsa contributors. All rights reserved.
"""Channels-last to contiguous NCHW, fast on CPU, with autograd.

``x.contiguous()`` of a channels-last CPU tensor is a transposition of an
``(H*W, C)`` matrix per image; torch copies it element by element across
the whole image, so with C = 256 and a 200x304 map (an 800x1216 input's
first stage) every source cache line is reloaded C times. Copying the
transposition in tiles of a few hundred rows keeps each tile in cache and
was 1.5-4x faster on this project's 2-core machine (docs/performance.md).
An image under ``2 * TILE_ELEMENTS`` elements fits in cache whole, and there
torch's own copy, in one call for the whole batch, was the faster (0.47
against 1.31 ms for 8x2048x7x7, 1.1 against 1.5-1.9 ms for 8x1024x14x14
and 8x256x28x28 on the Intel Xeon of docs/performance.md): it is used
there. The values are copied, not computed: the result equals
``x.contiguous()`` bit for bit. The gradient goes back to channels-last
with torch's own copy, which is fast in that direction.
"""
from typing import Optional

import torch

from .psa_conv import _exporting

# Elements of the source tile copied at once (512 KiB of float32): a tile of
# TILE_ELEMENTS // C rows of the (H*W, C) matrix.
TILE_ELEMENTS = 1 << 17


def _tiled_nchw(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    out = torch.empty((n, c, h, w), dtype=x.dtype, device=x.device)
    src = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view: x is NHWC
    dst = out.view(n, c, h * w)
    rows = max(64, TILE_ELEMENTS // max(c, 1))
    for i in range(n):
        for start in range(0, h * w, rows):
            dst[i, :, start:start + rows].copy_(src[i, start:start +
                                                    rows].t())
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
            or _exporting()):
        return x.contiguous()
    return _ToNCHW.apply(x)


def check_channels_last(owner: str, value) -> None:
    """The check of a ``channels_last`` argument (EPSANet's, the neck's):
    None (auto), True or False, else a ValueError naming ``owner``."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f'{owner}: channels_last must be None (auto: on for '
                         f'CPU inputs), True or False, got {value!r}')


def use_channels_last(setting: Optional[bool], x: torch.Tensor) -> bool:
    """Whether to run channels-last: ``setting``, or for None (auto)
    whether ``x`` is a CPU tensor."""
    return x.device.type == 'cpu' if setting is None else setting
