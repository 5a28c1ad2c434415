# Copyright (c) mmepsa contributors. All rights reserved.
"""mmdet's FPN run in channels-last memory format, with contiguous outputs.

On CPU, oneDNN's convolutions are faster on channels-last (NHWC) features
than on NCHW ones, and EPSANet runs channels-last anyway. Its features used
to be copied to NCHW at the end of the backbone, and the FPN ran NCHW. With
``EPSANet(contiguous_outputs=False)`` and this neck, the FPN takes the
channels-last features as they are, runs channels-last and makes its own
outputs contiguous: five 256-channel maps (1.33x the elements of the finest
one) are copied instead of the backbone's four (1.875x), and the FPN's convs
run the faster format. The heads get contiguous NCHW features, as before, so
mmcv's CPU RoIAlign (which reads NCHW memory) and every other head work
unchanged. Where the fast path is off it is mmdet's FPN.

The parameters are mmdet's FPN's: checkpoints load either way.
"""
from typing import Optional, Tuple

import torch
from mmdet.models.necks import FPN

from .layout import check_channels_last, to_contiguous_nchw, use_channels_last
from .switch import on_for


class ChannelsLastFPN(FPN):
    """mmdet's :class:`~mmdet.models.necks.FPN`, run in channels-last memory
    format, returning contiguous NCHW features.

    Takes the arguments of mmdet's FPN (same names and meanings), and
    ``channels_last``. Inputs in either memory format are accepted; the
    outputs equal mmdet's FPN's within fp32 rounding (the convolutions run a
    different algorithm) and are contiguous NCHW, whatever the inputs were.

    Args:
        channels_last (bool, optional): Run in channels-last memory format.
            ``None`` (default) turns it on where measured to win, as
            :class:`mmepsa.models.EPSANet` does.
        **kwargs: mmdet FPN's arguments (``in_channels``, ``out_channels``,
            ``num_outs``, ``add_extra_convs``...).

    Example:
        >>> import torch
        >>> from mmepsa.models import ChannelsLastFPN, EPSANet
        >>> backbone = EPSANet(depth=50, contiguous_outputs=False).eval()
        >>> neck = ChannelsLastFPN(
        ...     in_channels=[256, 512, 1024, 2048], out_channels=256,
        ...     num_outs=5).eval()
        >>> outs = neck(backbone(torch.rand(1, 3, 64, 64)))
        >>> [tuple(out.shape) for out in outs]
        [(1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2), \
(1, 256, 1, 1)]
        >>> all(out.is_contiguous() for out in outs)
        True
    """

    def __init__(self,
                 *args,
                 channels_last: Optional[bool] = None,
                 **kwargs) -> None:
        check_channels_last('ChannelsLastFPN', channels_last)
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last

    def forward(self, inputs: Tuple[torch.Tensor,
                                    ...]) -> Tuple[torch.Tensor, ...]:
        """FPN's forward on channels-last copies of ``inputs`` (no copy for
        inputs already so) where ``channels_last`` says so; the outputs
        are contiguous NCHW either way."""
        if not on_for(inputs[0]):
            return super().forward(inputs)
        memory_format = (
            torch.channels_last if use_channels_last(
                self.channels_last, inputs[0]) else torch.contiguous_format)
        outs = super().forward(
            tuple(x.contiguous(memory_format=memory_format) for x in inputs))
        return tuple(to_contiguous_nchw(out) for out in outs)
