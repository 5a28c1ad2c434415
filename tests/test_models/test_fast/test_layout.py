# Copyright (c) mmepsa contributors. All rights reserved.
"""to_contiguous_nchw copies a channels-last tensor into contiguous NCHW
bit for bit, tile by tile, and sends gradients back in channels-last."""
import pytest
import torch

from mmepsa.models.fast import layout
from mmepsa.models.fast.layout import to_contiguous_nchw

CL = torch.channels_last


@pytest.mark.parametrize('shape', [(1, 256, 7, 9), (3, 5, 11, 13),
                                   (2, 2048, 3, 2), (1, 1, 1, 1)])
def test_equals_contiguous_bit_for_bit(shape, monkeypatch):
    # small tiles, so that every shape spans several, the last one partial
    monkeypatch.setattr(layout, 'TILE_ELEMENTS', 64 * 5)
    x = torch.randn(shape).contiguous(memory_format=CL)
    out = to_contiguous_nchw(x)
    assert out.is_contiguous()
    assert torch.equal(out, x.contiguous())
    if not x.is_contiguous():  # (1, 1, 1, 1) is NCHW already: as it is
        assert out.data_ptr() != x.data_ptr()


def test_small_images_are_copied_by_torch_in_one_call(monkeypatch):
    # an image under 2 * TILE_ELEMENTS elements: torch's own copy, which was
    # the faster there; larger ones by tiles
    def tiles(x):
        raise AssertionError('copied by tiles')

    monkeypatch.setattr(layout, '_tiled_nchw', tiles)
    monkeypatch.setattr(layout, 'TILE_ELEMENTS', 1000)
    x = torch.randn(4, 16, 11, 11).contiguous(memory_format=CL)  # 1936
    assert torch.equal(to_contiguous_nchw(x), x.contiguous())
    with pytest.raises(AssertionError, match='copied by tiles'):
        to_contiguous_nchw(
            torch.randn(1, 16, 11, 12).contiguous(memory_format=CL))  # 2112
    empty = torch.randn(0, 16, 11, 11).contiguous(memory_format=CL)
    assert to_contiguous_nchw(empty).shape == (0, 16, 11, 11)


def test_gradient_comes_back_channels_last():
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=CL)
    x.requires_grad_()
    out = to_contiguous_nchw(x)
    assert type(out.grad_fn).__name__ == '_ToNCHWBackward'
    g = torch.randn_like(out)
    grad, = torch.autograd.grad(out, x, g)
    assert grad.is_contiguous(memory_format=CL)
    assert torch.equal(grad, g)


@pytest.mark.parametrize(
    'x',
    [
        torch.randn(2, 8, 5, 6),  # already NCHW: returned as it is
        torch.randn(2, 8, 5, 6).permute(0, 1, 3, 2),  # neither: .contiguous()
        torch.randn(4, 5),
    ])
def test_other_tensors_are_made_contiguous_by_torch(x):
    out = to_contiguous_nchw(x)
    assert out.is_contiguous() and torch.equal(out, x)
    if x.is_contiguous():
        assert out is x


def test_tracing_uses_the_plain_copy():
    x = torch.randn(1, 4, 3, 3).contiguous(memory_format=CL)
    traced = torch.jit.trace(to_contiguous_nchw, (x, ))
    assert 'aten::contiguous' in str(traced.graph)
    assert torch.equal(traced(x), x.contiguous())
