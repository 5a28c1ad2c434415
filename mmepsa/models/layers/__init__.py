# Copyright (c) mmepsa contributors. All rights reserved.
from .fold_bn import bn_folding
from .layout import to_contiguous_nchw
from .psa_attention import psa_fusion
from .psa_conv import (PSAConv2d, autotune_choices, autotuning,
                       clear_autotune_choices, set_autotune)

__all__ = [
    'PSAConv2d', 'autotune_choices', 'autotuning', 'bn_folding',
    'clear_autotune_choices', 'psa_fusion', 'set_autotune',
    'to_contiguous_nchw'
]
