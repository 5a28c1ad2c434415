# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa.analysis.memory_probe: the peak memory of one step (in a fresh
interpreter, as the benchmark's with_cp comparison measures it:
tests/test_tools/test_compare_speed.py)."""
import pytest
import torch

from mmepsa.analysis.memory_probe import load_factory, measure_memory

FACTORY = f'{__name__}:allocation_step'


def allocation_step(spec: dict):
    """A step that makes a tensor of ``spec['mib']`` MiB (glibc maps blocks
    over 32 MiB afresh and gives them back when freed)."""

    def run():
        return torch.ones(spec['mib'] * 2**18, device=spec['device'])

    return run


def test_measure_memory_sees_a_known_allocation():
    """In a fresh interpreter, as the benchmark measures: in a test worker
    that has run other tests, freed memory that the allocator keeps may
    serve the step, and the peak reads 0 (seen on torch 2.1)."""
    peak = measure_memory(FACTORY, dict(mib=64, device='cpu'), threads=1)
    assert 63 < peak < 70


def test_bad_factory_name():
    with pytest.raises(
            ValueError, match="factory must be 'module:function', got 'x'"):
        load_factory('x')
