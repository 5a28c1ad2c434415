# Copyright (c) mmepsa contributors. All rights reserved.
"""Resuming an interrupted training run so that it ends as if it never was.

mmengine 0.10.7 restores the model, optimizer, schedulers, message hub, epoch
and iteration from a checkpoint, and the data order too (``DefaultSampler``
shuffles with ``seed + epoch``, and ``DistSamplerSeedHook`` sets the epoch).
It does not restore the global random number generators (``random``,
``numpy.random``, ``torch``), which draw the random augmentation (e.g.
``RandomFlip``), the proposal sampling of two-stage detectors and the data
loader's base seed: a resumed run starts them from the seed, right after
building the model, while the uninterrupted run had drawn from them for
every earlier epoch, so the two runs diverge at the first random draw after
the resume point.

:class:`EpochSeedHook` makes the generators' state at the start of each
training epoch a function of (seed, epoch) only (and rank, with
``randomness.diff_rank_seed``), so whatever was drawn before (earlier epochs,
validation, weight initialisation) does not matter and a run resumed from
``epoch_N.pth`` draws what the uninterrupted run drew. ``tools/train.py``
adds it to every config (:func:`add_epoch_seed_hook`); with mmdet's own
``train.py``, list it in ``custom_hooks``::

    custom_hooks = [dict(type='EpochSeedHook')]
"""
import random

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seed ``random``, ``numpy.random`` and ``torch`` at the start of every
    training epoch from ``(runner.seed, epoch)``, and the rank when
    ``randomness.diff_rank_seed`` is set.

    It runs before the epoch's data loader iterator is made (which draws the
    loader's base seed from ``torch``), so everything drawn in the epoch is
    reproduced by a run resumed from the previous epoch's checkpoint. Exact
    for epoch-based loops with ``num_workers=0`` or non-persistent workers
    (mmengine seeds those the same way every epoch); persistent workers keep
    their own generators across epochs, which a resumed run cannot restore.
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner) -> None:
        randomness = runner.cfg.get('randomness') or {}
        words = [int(runner.seed), int(runner.epoch)]
        if randomness.get('diff_rank_seed', False):
            words.append(get_rank())
        seed = int(np.random.SeedSequence(words).generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # all CUDA devices too


def add_epoch_seed_hook(cfg: Config) -> None:
    """Append ``EpochSeedHook`` to ``cfg.custom_hooks`` unless it is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(
            isinstance(h, dict) and h.get('type') in ('EpochSeedHook',
                                                      EpochSeedHook)
            for h in hooks):
        hooks.append(dict(type='EpochSeedHook'))
    cfg.custom_hooks = hooks
