# Copyright (c) mmepsa contributors. All rights reserved.
"""Measuring mmepsa: timing and memory helpers, the side-by-side speed
comparison (``tools/analysis_tools/compare_speed.py``) and the inference
load test (``tools/analysis_tools/load_test.py``). The tools parse their
arguments and call these modules."""
