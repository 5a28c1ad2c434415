# Copyright (c) mmepsa contributors. All rights reserved.
"""Safe loading of mmengine's own checkpoints under ``weights_only``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch
2.6 that means ``weights_only=True``, which refuses the message-hub state
that mmengine writes into every checkpoint (``HistoryBuffer`` holding numpy
arrays and scalars), so ``--resume`` fails (mmengine#1655). Instead of
turning the safe loader off, :func:`allow_mmengine_checkpoint_types` adds
exactly those data-only types to torch's allow-list. A pickle that would run
code (``os.system``, ``eval``, any other callable) is still refused.
"""
import pickle
from typing import Callable, List

import numpy as np
import torch


def _numpy_reconstruct():
    """numpy's array-unpickling helpers, wherever this numpy keeps them."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return [multiarray._reconstruct, multiarray.scalar]


def mmengine_checkpoint_types() -> List[type]:
    """The non-tensor types found in checkpoints that mmengine's Runner saves:
    ``HistoryBuffer`` and the numpy arrays, scalars and dtypes it holds."""
    from mmengine.logging import HistoryBuffer
    dtype_classes = [
        type(np.dtype(t)) for t in (np.bool_, np.int8, np.int16, np.int32,
                                    np.int64, np.uint8, np.uint16, np.uint32,
                                    np.uint64, np.float16, np.float32,
                                    np.float64)
    ]
    return [HistoryBuffer, np.ndarray, np.dtype, *dtype_classes,
            *_numpy_reconstruct()]


#: HistoryBuffer's built-in statistics methods.
DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_getattr(obj: type, name: str) -> Callable:
    """``getattr`` restricted to HistoryBuffer's statistics methods.

    A pickled ``HistoryBuffer`` refers to its statistics methods (``min``,
    ``max``, ``current``, ``mean`` and registered ones) as
    ``getattr(HistoryBuffer, name)``. The plain builtin would let a crafted
    pickle reach any attribute of any allow-listed object, so this stand-in
    answers only for those methods and refuses everything else.
    """
    from mmengine.logging import HistoryBuffer

    # mmengine fills _statistics_methods only when the first HistoryBuffer is
    # made, so a fresh process has it empty: allow the defaults explicitly.
    allowed = set(DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: '
        'only HistoryBuffer statistics methods may be referenced')


def allow_mmengine_checkpoint_types() -> None:
    """Add :func:`mmengine_checkpoint_types` to ``torch.load``'s
    ``weights_only`` allow-list, and :func:`history_buffer_getattr` in place
    of the builtin ``getattr``; ``weights_only`` itself stays on."""
    torch.serialization.add_safe_globals([
        *mmengine_checkpoint_types(),
        (history_buffer_getattr, 'builtins.getattr'),
        (history_buffer_getattr, '__builtin__.getattr'),
    ])
