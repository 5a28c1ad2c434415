# Copyright (c) mmepsa contributors. All rights reserved.
"""Measuring mmepsa: timing and memory helpers (``benchmark``), the
side-by-side speed comparison (``compare_speed``:
``tools/analysis_tools/compare_speed.py``), the peak memory of a step in a
fresh process (``memory_probe``), the fast path check (``fast_path_check``:
``tools/analysis_tools/fast_path_check.py``) and the inference load test
(``load_test``: ``tools/analysis_tools/load_test.py``). The tools parse their
arguments and call these modules."""
