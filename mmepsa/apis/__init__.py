# Copyright (c) mmepsa contributors. All rights reserved.
"""Deprecated: the demo trainer moved to :mod:`mmepsa.demo`
(:mod:`mmepsa.demo.trainer`). The old names still import from here, with a
DeprecationWarning."""
from mmepsa.demo._aliases import forward

__all__ = ['DemoDataError', 'DemoDiverged', 'load_demo_config', 'run_demo']
__getattr__ = forward(__name__, 'mmepsa.demo.trainer', __all__)
