# Copyright (c) mmepsa contributors. All rights reserved.
from .demo import DemoDataError, DemoDiverged, load_demo_config, run_demo

__all__ = ['DemoDataError', 'DemoDiverged', 'load_demo_config', 'run_demo']
