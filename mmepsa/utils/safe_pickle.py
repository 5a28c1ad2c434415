# Copyright (c) mmepsa contributors. All rights reserved.
"""A ``pickle`` module for ``torch.load(..., pickle_module=safe_pickle)``
that admits only an allow-list of globals, on every torch version.

``torch.load`` unpickles through ``pickle_module.Unpickler`` (and, for the
legacy format, ``pickle_module.load``). :class:`Unpickler` resolves a global
(a class or function named in the file) only when its ``module.name`` is in
:func:`allowed_globals`: torch's own ``weights_only`` allow-list (tensors,
storages, dtypes, ``OrderedDict``...), and the data-only types that
mmengine's Runner writes into every checkpoint (``HistoryBuffer`` and the
numpy arrays, scalars and dtypes it holds). Anything else (``os.system``,
``builtins.eval``, any other callable) raises
:class:`pickle.UnpicklingError` before it is called, so a crafted file runs
nothing. This is the "restricting globals" recipe of Python's ``pickle``
documentation; it is the same on torch 2.0 (whose ``weights_only`` loader
has no way to extend its allow-list) and on the newest torch, and no
environment variable changes it.
"""
import codecs
import collections
import io
import os
import pickle
import sys
from functools import lru_cache
from typing import Any, Callable, Dict

import _compat_pickle
import numpy as np
import torch

UnpicklingError = pickle.UnpicklingError

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
    raise UnpicklingError(
        f'refused getattr({obj!r}, {name!r}) while loading a checkpoint: '
        'only HistoryBuffer statistics methods may be referenced')


def _numpy_globals() -> Dict[str, Any]:
    """numpy's array-unpickling helpers and dtype classes, under the module
    names that numpy 1.x (``numpy.core``) and 2.x (``numpy._core``) write,
    so a checkpoint saved beside either loads beside either."""
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    found = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        found[f'{module}._reconstruct'] = multiarray._reconstruct
        found[f'{module}.scalar'] = multiarray.scalar
    for t in (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
              np.uint16, np.uint32, np.uint64, np.float16, np.float32,
              np.float64):
        dtype_class = type(np.dtype(t))  # numpy >= 1.25: numpy.dtypes.*
        found[f'{dtype_class.__module__}.{dtype_class.__qualname__}'] = \
            dtype_class
    return found


@lru_cache(maxsize=None)
def allowed_globals() -> Dict[str, Any]:
    """``'module.name' -> object`` for every global :class:`Unpickler`
    resolves: torch's built-in ``weights_only`` allow-list (not the globals
    that other code registered with ``add_safe_globals``), mmengine's
    ``HistoryBuffer``, numpy arrays, scalars and dtypes, and
    :func:`history_buffer_getattr` in place of the builtin ``getattr``."""
    from mmengine.logging import HistoryBuffer
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = dict(_get_allowed_globals())
    # The data-only builtins of newer torch's list, which torch 2.1's lacks:
    # codecs.encode is how a protocol-2 pickle (torch.save's default) writes
    # bytes, e.g. inside a numpy array; mmengine's checkpoints hold Counters.
    allowed.update({
        '_codecs.encode': codecs.encode,
        'builtins.bytearray': bytearray,
        'builtins.complex': complex,
        'builtins.set': set,
        'collections.Counter': collections.Counter,
        'collections.OrderedDict': collections.OrderedDict,
    })
    allowed.update(_numpy_globals())
    allowed['mmengine.logging.history_buffer.HistoryBuffer'] = HistoryBuffer
    allowed['builtins.getattr'] = history_buffer_getattr
    allowed['__builtin__.getattr'] = history_buffer_getattr
    return allowed


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :func:`allowed_globals`."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol 2 (torch.save's default) writes Python 2 module names
        # (__builtin__.set); pickle's own find_class maps them, so do we
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = allowed_globals().get(f'{module}.{name}')
        if found is None:
            raise UnpicklingError(
                f'GLOBAL {module}.{name} is not allowed: only tensors and '
                'the training state mmengine saves may be loaded')
        return found


def load(file, **kwargs) -> Any:
    """``pickle.load`` through :class:`Unpickler`."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs) -> Any:
    """``pickle.loads`` through :class:`Unpickler`."""
    return load(io.BytesIO(data), **kwargs)


def torch_load(file, map_location=None) -> Any:
    """``torch.load`` through this module on any torch version.

    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` makes torch refuse any
    ``pickle_module``; then torch's own ``weights_only`` loader is used, as
    the variable asks. It is at least as strict; on torch >= 2.4 it reads
    mmengine's types too (``import mmepsa`` adds them to its allow-list), on
    older torch it refuses checkpoints that hold them (plain state dicts
    load)."""
    forced = os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD',
                       '0').lower() in ('1', 'y', 'yes', 'true')
    if forced:
        return torch.load(file, map_location=map_location, weights_only=True)
    return torch.load(
        file,
        map_location=map_location,
        pickle_module=sys.modules[__name__],
        weights_only=False)
