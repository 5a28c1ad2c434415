# Copyright (c) mmepsa contributors. All rights reserved.
"""Fixtures of the fast path's tests."""
import pytest

from mmepsa.models.fast import backbone as fast_backbone


@pytest.fixture
def ran(monkeypatch):
    """The inputs the fast path ran on (empty: the plain model ran)."""
    seen = []
    stages = fast_backbone._stages

    def spy(backbone, x, psa_type):
        seen.append(x)
        return stages(backbone, x, psa_type)

    monkeypatch.setattr(fast_backbone, '_stages', spy)
    return seen
