# Copyright (c) mmepsa contributors. All rights reserved.
"""The peak memory of one step, measured in a fresh interpreter.

A step is made by a function named ``'module:function'``, which takes a
JSON-able spec (holding at least ``device``) and returns the step, a
callable; :func:`measure_memory` runs ``python -m mmepsa.analysis.memory_probe
FACTORY SPEC [THREADS]``, which prints ``{"peak_mib": ...}``. The speed
comparison's factory is :func:`mmepsa.analysis.compare_speed.step_from_spec`.
"""
import importlib
import json
import os
import subprocess
import sys
from typing import Callable, Optional

import torch

from .benchmark import read_memory, reset_peak_memory

MIB = 1024 * 1024


def load_factory(name: str) -> Callable[[dict], Callable]:
    """The function ``'module:function'`` names."""
    module, sep, function = name.partition(':')
    if not sep or not module or not function:
        raise ValueError(f"factory must be 'module:function', got {name!r}")
    return getattr(importlib.import_module(module), function)


def measure_memory_here(factory: str, spec: dict) -> float:
    """Peak memory (MiB) one step adds to a steady state, in this process.

    CPU: the resident-set high-water mark (reset through
    ``/proc/self/clear_refs`` after a warm-up step) minus the resident set
    before the step; glibc is told (by :func:`measure_memory`) to return
    every large block to the OS, so freed memory is not reused invisibly.
    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before
    the step.

    Example (the peak of a training step of mmepsa's EPSANet-50)::

        measure_memory_here(
            'mmepsa.analysis.compare_speed:step_from_spec',
            dict(kind='backbone', model='mmepsa', depth=50, mode='train',
                 shape=[1, 3, 224, 224], precision='fp32', device='cpu'))
    """
    device = torch.device(spec['device'])
    step = load_factory(factory)(spec)
    step()  # warm-up: lazy buffers, oneDNN primitives
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    reset_peak_memory()
    before = read_memory()['rss_mib']
    step()
    return read_memory()['peak_rss_mib'] - before


def measure_memory(factory: str, spec: dict,
                   threads: Optional[int]) -> Optional[float]:
    """:func:`measure_memory_here` in a fresh interpreter (``threads``: its
    ``torch.set_num_threads``); None if it failed (its error is printed)."""
    env = dict(os.environ)
    env['MALLOC_MMAP_THRESHOLD_'] = '65536'  # large blocks back to the OS
    cmd = [sys.executable, '-m', __name__, factory, json.dumps(spec)]
    if threads:
        cmd.append(str(threads))
    proc = subprocess.run(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith('{"peak_mib"'):
            return json.loads(line)['peak_mib']
    print(
        f'memory measurement failed for {spec}:\n{proc.stderr[-2000:]}',
        file=sys.stderr)
    return None


if __name__ == '__main__':
    if len(sys.argv) > 3:
        torch.set_num_threads(int(sys.argv[3]))
    print(
        json.dumps(
            dict(
                peak_mib=measure_memory_here(sys.argv[1],
                                             json.loads(sys.argv[2])))))
