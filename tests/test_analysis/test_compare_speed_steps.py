# Copyright (c) mmepsa contributors. All rights reserved.
"""The benchmark's backbone training step computes what it says: the
gradients of ``sum(mean(out * w))``, handed to the outputs in their own
memory format (the tool itself: tests/test_tools/test_compare_speed.py)."""
import pytest
import torch
import torch.nn as nn

from mmepsa.analysis.compare_speed import backbone_step
from mmepsa.models import EPSANet
from tests.utils import TINY_BACKBONE as TINY

CL = torch.channels_last


class RecordGrads(nn.Module):
    """The backbone, recording the memory format of each output's
    gradient."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.formats = []

    def forward(self, x):
        outs = self.backbone(x)
        for o in outs:
            if o.requires_grad:
                o.register_hook(lambda g: self.formats.append(
                    g.is_contiguous(memory_format=CL) and not g.is_contiguous(
                    )))
        return outs


@pytest.mark.parametrize('contiguous_outputs', [True, False])
def test_train_step_gradients_of_the_projection_loss(contiguous_outputs):
    torch.manual_seed(0)
    backbone = EPSANet(
        50,
        frozen_stages=1,
        channels_last=True,  # on every stack (auto: where measured to win)
        contiguous_outputs=(contiguous_outputs),
        init_cfg=None,
        **TINY).double().train()
    x = torch.randn(2, 3, 64, 48, dtype=torch.float64)
    model = RecordGrads(backbone)
    outs = backbone_step(model, x, True, 'fp32')()
    # stage 1 is frozen: three outputs take gradients, each in its format
    assert model.formats == [not contiguous_outputs] * 3
    got = {
        n: p.grad.clone()
        for n, p in backbone.named_parameters() if p.grad is not None
    }
    # the same w: the closure draws them from a generator seeded with 0
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o.shape, generator=g).double() for o in outs]
    backbone.zero_grad(set_to_none=True)
    outs = backbone(x)
    sum((o * w).mean() for o, w in zip(outs, weights)).backward()
    expected = {
        n: p.grad
        for n, p in backbone.named_parameters() if p.grad is not None
    }
    assert set(got) == set(expected) and got
    assert not any(n.startswith(('conv1.', 'bn1.', 'layer1.')) for n in got)
    for name in expected:
        torch.testing.assert_close(
            got[name], expected[name], rtol=1e-9, atol=1e-12, msg=name)
