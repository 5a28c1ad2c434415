# Copyright (c) mmepsa contributors. All rights reserved.
"""The benchmark's pieces: its backbone training step computes what it says
(the gradients of ``sum(mean(out * w))``, handed to the outputs in their own
memory format), and its record of the forms the autotuner chose says which
form each conv's parts run in (the tool itself:
tests/test_tools/test_compare_speed.py)."""
import pytest
import torch
import torch.nn as nn

from mmepsa.analysis.compare_speed import backbone_step, forms_summary
from mmepsa.models import EPSANet
from mmepsa.models.fast import TunedConv, fast_path
from mmepsa.models.fast.conv_forms import chosen_forms, clear_choices
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


def test_chosen_forms_name_each_conv_and_part(monkeypatch):
    """conv_forms.chosen_forms (what the benchmark stores per case): each
    conv with the input it was tuned on, and for each part it computes
    (forward; input and weight gradients where needed) the form chosen;
    forms_summary counts them in one line; clear_choices forgets them."""
    fastest = dict(
        forward=('depthwise', 1),
        input=('regroup', 2),
        weight=('polyphase', 1))
    monkeypatch.setattr(TunedConv, 'min_tuned_macs', 0)
    monkeypatch.setattr(
        TunedConv, '_time_part', lambda self, x, fmt, part: {
            form: 0.5 if form == fastest[part] else 1.0
            for form in self._part_forms(part)
        })
    conv = nn.Conv2d(32, 8, 5, padding=2, groups=8, bias=False)
    x = torch.randn(2, 32, 12, 10)
    clear_choices()
    try:
        with fast_path(True, autotune=True):
            with torch.no_grad():
                TunedConv(conv)(x)
            TunedConv(conv)(x.contiguous(memory_format=CL).requires_grad_())
            conv.weight.requires_grad_(False)
            TunedConv(conv)(x.clone().requires_grad_())
        chosen = chosen_forms()
        conv_name = '5x5 conv 32->8 g8 s1 on 2x32x12x10'
        assert chosen == {
            f'{conv_name} nchw float32':
            dict(forward='depthwise'),
            f'{conv_name} nhwc float32 grad x+w':
            dict(forward='depthwise', input='regroup-2', weight='polyphase'),
            f'{conv_name} nchw float32 grad x':
            dict(forward='depthwise', input='regroup-2'),
        }
        assert forms_summary(chosen) == (
            '3 convs timed; forward: depthwise 3; input gradient: regroup-2 '
            '2; weight gradient: polyphase 1')
    finally:
        clear_choices()
    assert chosen_forms() == {}
    assert forms_summary({}).startswith('no conv timed')
