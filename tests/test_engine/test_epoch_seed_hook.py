# Copyright (c) mmepsa contributors. All rights reserved.
"""EpochSeedHook: registered in mmengine's HOOKS (so mmdet's train.py finds
it by name), added once by add_epoch_seed_hook, and seeding the generators
from (seed, epoch[, rank]) only. (Kill-and-resume end to end:
test_resume.py.)"""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmepsa  # noqa: F401  (registers the hook)
from mmepsa.engine.hooks import EpochSeedHook, add_epoch_seed_hook


def test_registered_in_mmengine_and_seen_from_mmdet():
    from mmdet.registry import HOOKS as MMDET_HOOKS
    from mmengine.registry import HOOKS
    assert HOOKS.get('EpochSeedHook') is EpochSeedHook
    assert isinstance(
        MMDET_HOOKS.build(dict(type='EpochSeedHook')), EpochSeedHook)


@pytest.mark.parametrize('custom_hooks,expected', [
    (None, ['EpochSeedHook']),
    ([], ['EpochSeedHook']),
    ([dict(type='EMAHook')], ['EMAHook', 'EpochSeedHook']),
    ([dict(type='EpochSeedHook')], ['EpochSeedHook']),
    ([dict(type=EpochSeedHook)], [EpochSeedHook]),
])
def test_add_epoch_seed_hook_once(custom_hooks, expected):
    cfg = Config(dict(custom_hooks=custom_hooks))
    add_epoch_seed_hook(cfg)
    add_epoch_seed_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == expected


def _draws(seed, epoch):
    runner = SimpleNamespace(
        seed=seed, epoch=epoch, cfg=Config(dict(randomness=dict())))
    random.random(), np.random.rand(), torch.rand(1)  # earlier draws
    EpochSeedHook().before_train_epoch(runner)
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seeds_from_seed_and_epoch_only():
    first = _draws(0, 1)
    assert _draws(0, 1) == first  # whatever was drawn before
    assert _draws(0, 2) != first
    assert _draws(1, 1) != first
