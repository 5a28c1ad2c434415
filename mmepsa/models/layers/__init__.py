# Copyright (c) mmepsa contributors. All rights reserved.
from .psa_conv import (PSAConv2d, autotune_choices, clear_autotune_choices,
                       set_autotune)

__all__ = [
    'PSAConv2d', 'autotune_choices', 'clear_autotune_choices', 'set_autotune'
]
