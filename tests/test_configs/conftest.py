# Copyright (c) mmepsa contributors. All rights reserved.
"""Fixtures of the config tests that train on the demo data; the helpers
behind them are in ``utils.py``."""
import pytest
import torch

from mmepsa.demo.trainer import ensure_data
from tests.test_configs.utils import demo_cfg
from tests.utils import DEMO_MASK_RCNN


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    """The demo shapes data set (3 classes), 2 training and 2 validation
    images of 64 px, generated once per module."""
    root = str(tmp_path_factory.mktemp('demo_shapes') / 'data')
    ensure_data(demo_cfg(DEMO_MASK_RCNN, root))
    return root


@pytest.fixture
def keep_determinism():
    """The Runner's ``randomness=dict(deterministic=True)`` switches torch's
    deterministic algorithms on for the process: switch them back."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)
