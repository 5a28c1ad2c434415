# Copyright (c) mmepsa contributors. All rights reserved.
"""Deprecated alias of :mod:`mmepsa.demo.trainer` (warns on import)."""
from mmepsa.demo._aliases import forward, warn_moved

warn_moved('mmepsa.apis.demo', 'mmepsa.demo.trainer')
__getattr__ = forward('mmepsa.apis.demo', 'mmepsa.demo.trainer')
