# Copyright (c) mmepsa contributors. All rights reserved.
"""Yardsticks for tests and benchmarks: the authors' EPSANet formulation."""
from .reference_epsanet import RefEPSANet, RefPSA, randomize_

__all__ = ['RefEPSANet', 'RefPSA', 'randomize_']
