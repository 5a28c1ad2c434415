# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet's CPU fast path: the plain model's sums, computed faster.

``EPSANet.forward`` hands its input here in one place
(:func:`~.backbone.engaged`, :func:`~.backbone.forward_resnet`). The pieces:
BN folding (:mod:`.fold`), the fused PSA weighting (:mod:`.weighting`), the
PSA convs' exact forms and their autotuner (:mod:`.conv_forms`), the
channels-last layout (:mod:`.layout`) and the :class:`ChannelsLastFPN` neck
(:mod:`.fpn`). One switch turns it off: :func:`fast_path` or the environment
variable ``MMEPSA_FAST_PATH`` (:mod:`.switch`).
"""
from .backbone import engaged, forward_resnet
from .conv_forms import TunedConv, choices, clear_choices
from .fpn import ChannelsLastFPN
from .layout import to_contiguous_nchw
from .switch import fast_path, settings

__all__ = [
    'fast_path', 'settings', 'engaged', 'forward_resnet', 'TunedConv',
    'choices', 'clear_choices', 'ChannelsLastFPN', 'to_contiguous_nchw'
]
