# Copyright (c) mmepsa contributors. All rights reserved.
"""Safe loading of checkpoints, with the same guarantees on every torch.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``: on torch
>= 2.6 that means torch's ``weights_only`` loader, which refuses the
message-hub state mmengine writes into every checkpoint (``HistoryBuffer``
holding numpy arrays and scalars), so ``--resume`` fails (mmengine#1655); on
older torch it means an unrestricted pickle, which runs whatever a crafted
file asks for. torch < 2.4 has no way to extend ``weights_only``'s
allow-list at all.

:func:`replace_mmengine_checkpoint_loaders` therefore replaces mmengine's
loaders for local files and ``http(s)://`` URLs (what ``load_checkpoint``,
``init_cfg=dict(type='Pretrained')``, ``load_from`` and ``resume`` use) with
:func:`load_from_local` and :func:`load_from_http`, which unpickle through
:mod:`mmepsa.utils.safe_pickle`: one allow-list (torch's tensors plus
mmengine's data-only types), the same on torch 2.0 and on the newest torch,
that no environment variable turns off; their errors name the file when it
is missing, truncated, damaged or refused.

:func:`allow_mmengine_checkpoint_types` also adds mmengine's types to
torch's own ``weights_only`` allow-list where torch has one (>= 2.4), so
code that calls ``torch.load(path, weights_only=True)`` itself can read
mmengine checkpoints too.
"""
import os
import os.path as osp
import pickle
from typing import List, Optional
from urllib.parse import urlparse

import torch

from . import safe_pickle
from .safe_pickle import history_buffer_getattr


def mmengine_checkpoint_types() -> List[type]:
    """The non-tensor types found in checkpoints that mmengine's Runner saves:
    ``HistoryBuffer`` and the numpy arrays, scalars and dtypes it holds."""
    from mmengine.logging import HistoryBuffer

    # numpy 1.x and 2.x module names lead to the same objects: list each once
    numpy_types = {id(o): o for o in safe_pickle._numpy_globals().values()}
    return [HistoryBuffer, *numpy_types.values()]


def allow_mmengine_checkpoint_types() -> bool:
    """Add :func:`mmengine_checkpoint_types` to ``torch.load``'s own
    ``weights_only`` allow-list, with :func:`history_buffer_getattr` in
    place of the builtin ``getattr``, where torch has such a list (>= 2.4).
    Returns whether it did. mmepsa's own loaders do not depend on it."""
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    add_safe_globals([
        *mmengine_checkpoint_types(),
        (history_buffer_getattr, 'builtins.getattr'),
        (history_buffer_getattr, '__builtin__.getattr'),
    ])
    return True


def _load_error(source: str, error: Exception) -> Exception:
    """The error to raise when ``torch.load`` fails on ``source``: the same
    message, led by the file (or URL) it came from."""
    if isinstance(error, pickle.UnpicklingError):
        return pickle.UnpicklingError(
            f'refused to load checkpoint {source}: it holds objects other '
            'than tensors and the training state mmengine saves (loading '
            'them could run code, so nothing in the file was run), or it is '
            'damaged. If it is yours, load it in a trusted session and save '
            f'only its state_dict. The unpickler says: {error}')
    reason = f'{type(error).__name__}: {error}'.strip()
    if isinstance(error, (EOFError, KeyError)):
        # torch.load's errors on a truncated legacy-format file, or on a file
        # that is no checkpoint at all (e.g. an HTML error page)
        reason += ' (the file is truncated, or not a PyTorch checkpoint)'
    return RuntimeError(f'cannot load checkpoint {source}: {reason}')


def load_from_local(filename: str, map_location=None):
    """mmengine's loader for local checkpoint files, made safe.

    As mmengine's own ``load_from_local``, but the file is unpickled through
    :mod:`mmepsa.utils.safe_pickle` (on every torch version, whatever
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says), and a missing, truncated,
    damaged or refused file fails with its path in the message.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'checkpoint {filename} not found (resolved to '
            f'{osp.abspath(filename)})')
    try:
        return safe_pickle.torch_load(filename, map_location=map_location)
    except OSError:  # e.g. permission denied: names the file already
        raise
    except Exception as e:
        raise _load_error(filename, e) from e


def load_from_http(filename: str,
                   map_location=None,
                   model_dir: Optional[str] = None,
                   progress: bool = os.isatty(0)):
    """mmengine's loader for ``http://``/``https://`` checkpoints, made safe
    (``torch.hub.load_state_dict_from_url``, which mmengine calls, unpickles
    without restriction by default).

    As mmengine's: the file is cached in ``model_dir`` (default
    ``<torch hub dir>/checkpoints``) and not downloaded again; in a
    distributed run rank 0 downloads while the others wait. The cached file
    is loaded as :func:`load_from_local` loads.
    """
    from mmengine.dist import get_dist_info

    cache = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    cached = osp.join(cache, osp.basename(urlparse(filename).path))
    source = f'{filename} (cached as {cached})'

    def download() -> None:
        if osp.isfile(cached):
            return
        os.makedirs(cache, exist_ok=True)
        try:
            torch.hub.download_url_to_file(filename, cached, progress=progress)
        except Exception as e:
            raise RuntimeError(f'cannot download checkpoint {source}: '
                               f'{type(e).__name__}: {e}') from e

    rank, world_size = get_dist_info()
    if rank == 0:
        download()
    if world_size > 1:
        torch.distributed.barrier()
    try:
        return safe_pickle.torch_load(cached, map_location=map_location)
    except OSError:
        raise
    except Exception as e:
        raise _load_error(source, e) from e


def replace_mmengine_checkpoint_loaders() -> None:
    """Make mmengine load local and ``http(s)://`` checkpoints with
    :func:`load_from_local` and :func:`load_from_http` (used by
    ``load_checkpoint``, ``init_cfg=dict(type='Pretrained')``, ``load_from``
    and ``resume``). ``import mmepsa`` calls it."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme('', load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'),
                                     load_from_http,
                                     force=True)
