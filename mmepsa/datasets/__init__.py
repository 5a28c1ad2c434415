# Copyright (c) mmepsa contributors. All rights reserved.
"""Deprecated: the demo's data generators moved to :mod:`mmepsa.demo`
(:mod:`mmepsa.demo.data`, :mod:`mmepsa.demo.seg_data`). The old names still
import from here, with a DeprecationWarning."""
from mmepsa.demo._aliases import forward

__all__ = [
    'make_demo_dataset', 'DEMO_CLASSES', 'DEMO_PALETTE', 'GENERATOR_VERSION'
]
__getattr__ = forward(__name__, 'mmepsa.demo.data', __all__)
