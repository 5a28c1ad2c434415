# Copyright (c) mmepsa contributors. All rights reserved.
from .hooks import EpochSeedHook, add_epoch_seed_hook
from .optim import CPUBF16OptimWrapper, cpu_bf16_supported, use_amp

__all__ = [
    'EpochSeedHook', 'add_epoch_seed_hook', 'CPUBF16OptimWrapper',
    'cpu_bf16_supported', 'use_amp'
]
