# Copyright (c) mmepsa contributors. All rights reserved.
from .hooks import EpochSeedHook, add_epoch_seed_hook

__all__ = ['EpochSeedHook', 'add_epoch_seed_hook']
