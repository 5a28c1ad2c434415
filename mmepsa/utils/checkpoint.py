# Copyright (c) mmepsa contributors. All rights reserved.
"""Safe loading of mmengine's own checkpoints under ``weights_only``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch
2.6 that means ``weights_only=True``, which refuses the message-hub state
that mmengine writes into every checkpoint (``HistoryBuffer`` holding numpy
arrays and scalars), so ``--resume`` fails (mmengine#1655). Instead of
turning the safe loader off, :func:`allow_mmengine_checkpoint_types` adds
exactly those data-only types to torch's allow-list. A pickle that would run
code (``os.system``, ``eval``, any other callable) is still refused.

:func:`register_safe_checkpoint_loaders` replaces mmengine's loaders for
local files and ``http(s)://`` URLs (what ``load_checkpoint``,
``init_cfg=dict(type='Pretrained')``, ``load_from`` and ``resume`` use) with
ones that pass ``weights_only=True`` explicitly (an environment variable
cannot turn it off, and ``torch.hub`` defaults to ``False``) and whose errors
name the file: a missing, truncated, damaged or refused checkpoint says
which one it is.
"""
import os
import os.path as osp
import pickle
from typing import Callable, List, Optional
from urllib.parse import urlparse

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
    of the builtin ``getattr``; ``weights_only`` itself stays on. Then
    :func:`register_safe_checkpoint_loaders` (``import mmepsa`` calls this
    function, and so sets up both)."""
    torch.serialization.add_safe_globals([
        *mmengine_checkpoint_types(),
        (history_buffer_getattr, 'builtins.getattr'),
        (history_buffer_getattr, '__builtin__.getattr'),
    ])
    register_safe_checkpoint_loaders()


def _load_error(source: str, error: Exception) -> Exception:
    """The error to raise when ``torch.load`` fails on ``source``: the same
    message, led by the file (or URL) it came from."""
    if isinstance(error, pickle.UnpicklingError):
        return pickle.UnpicklingError(
            f'refused to load checkpoint {source}: torch.load(weights_only='
            'True) found objects other than tensors and the training state '
            'mmengine saves (loading them could run code, so nothing in the '
            'file was run), or the file is damaged. If it is yours, load it '
            'in a trusted session and save only its state_dict. torch says: '
            f'{error}')
    reason = f'{type(error).__name__}: {error}'.strip()
    if isinstance(error, (EOFError, KeyError)):
        # torch.load's errors on a truncated legacy-format file, or on a file
        # that is no checkpoint at all (e.g. an HTML error page)
        reason += ' (the file is truncated, or not a PyTorch checkpoint)'
    return RuntimeError(f'cannot load checkpoint {source}: {reason}')


def load_from_local(filename: str, map_location=None):
    """mmengine's loader for local checkpoint files, safe and explicit.

    As mmengine's own ``load_from_local``, but ``torch.load`` is called with
    ``weights_only=True`` explicitly (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    cannot turn it off), and a missing, truncated, damaged or refused file
    fails with its path in the message.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint {filename} not found (resolved to '
            f'{osp.abspath(filename)})')
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except OSError:  # e.g. permission denied: names the file already
        raise
    except Exception as e:
        raise _load_error(filename, e) from e


def load_from_http(filename: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = os.isatty(0)):
    """mmengine's loader for ``http://``/``https://`` checkpoints, with
    ``weights_only=True`` (``torch.hub.load_state_dict_from_url``, which
    mmengine calls, defaults to ``weights_only=False``).

    As mmengine's: in a distributed run rank 0 downloads first; the file is
    cached in ``model_dir`` (default ``<torch hub dir>/checkpoints``).
    """
    from mmengine.dist import get_dist_info

    def load():
        try:
            return torch.hub.load_state_dict_from_url(
                filename,
                model_dir=model_dir,
                map_location=map_location,
                progress=progress,
                weights_only=True)
        except Exception as e:
            cache = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
            name = osp.basename(urlparse(filename).path)
            raise _load_error(
                f'{filename} (cached as {osp.join(cache, name)})', e) from e

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = load()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load()
    return checkpoint


def register_safe_checkpoint_loaders() -> None:
    """Make mmengine load local and ``http(s)://`` checkpoints with
    :func:`load_from_local` and :func:`load_from_http` (used by
    ``load_checkpoint``, ``init_cfg=dict(type='Pretrained')``, ``load_from``
    and ``resume``)."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'),
                                     load_from_http,
                                     force=True)
