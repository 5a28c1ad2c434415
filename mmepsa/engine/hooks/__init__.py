# Copyright (c) mmepsa contributors. All rights reserved.
from .epoch_seed_hook import EpochSeedHook, add_epoch_seed_hook

__all__ = ['EpochSeedHook', 'add_epoch_seed_hook']
