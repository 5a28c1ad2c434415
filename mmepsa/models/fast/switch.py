# Copyright (c) mmepsa contributors. All rights reserved.
"""The one switch of the fast path, and where its pieces are engaged.

``with fast_path(False):`` runs the plain model; ``fast_path(True,
autotune=False)`` keeps the fast path but never times the PSA convs' forms.
Outside any ``with`` block the environment variable ``MMEPSA_FAST_PATH``
decides: ``1`` (or unset) on, ``0`` off, ``untuned`` on without autotuning.

BN folding and the fused PSA weighting run wherever the fast path does. The
channels-last layout (``EPSANet(channels_last=None)``) and the autotuner are
engaged by default only where they were measured to win: torch >= 2.14 on a
CPU with AVX-512 (docs/performance.md; on the classic torch 2.1 stack
oneDNN's channels-last grouped convolutions lose to NCHW ones).
"""
import contextlib
import functools
import os
from typing import Iterator, NamedTuple, Optional

import torch
from mmengine.utils import digit_version

from .probes import exporting

ENV = 'MMEPSA_FAST_PATH'
ENV_VALUES = {
    '1': (True, None),
    '0': (False, None),
    'untuned': (True, False),
}
#: The oldest torch and the CPU capabilities (``torch.backends.cpu.
#: get_cpu_capability()``) on which the channels-last layout and the
#: autotuner were measured to win.
MEASURED_TORCH = '2.14.0'
MEASURED_CPU = ('AVX512', )


class Settings(NamedTuple):
    """The switch's state: whether the fast path runs, and whether it
    autotunes (None: where measured to win)."""
    enabled: bool
    autotune: Optional[bool]


_SETTINGS: Optional[Settings] = None  # None: the environment variable


@contextlib.contextmanager
def fast_path(enabled: bool = True,
              autotune: Optional[bool] = None) -> Iterator[None]:
    """Run EPSANet's CPU fast path (``enabled=True``) or the plain model
    (``False``) inside a ``with`` block, then go back to what was in force.

    Args:
        enabled (bool): Run the fast path. Defaults to True.
        autotune (bool, optional): Time the PSA convs' exact forms and run
            the fastest (True), never (False), or where measured to win and
            not in deterministic mode (None, default).

    Example:
        >>> import torch
        >>> from mmepsa.models import EPSANet
        >>> from mmepsa.models.fast import fast_path
        >>> model = EPSANet(depth=50).eval()
        >>> with torch.no_grad(), fast_path(False):
        ...     plain = model(torch.rand(1, 3, 64, 64))
    """
    global _SETTINGS
    if not isinstance(enabled, bool):
        raise TypeError(
            f'fast_path: enabled must be True or False, got {enabled!r}')
    if autotune is not None and not isinstance(autotune, bool):
        raise TypeError('fast_path: autotune must be True, False or None, '
                        f'got {autotune!r}')
    previous, _SETTINGS = _SETTINGS, Settings(enabled, autotune)
    try:
        yield
    finally:
        _SETTINGS = previous


def settings() -> Settings:
    """The switch in force: the innermost :func:`fast_path`, else
    ``MMEPSA_FAST_PATH``."""
    if _SETTINGS is not None:
        return _SETTINGS
    value = os.environ.get(ENV, '1').strip() or '1'
    if value not in ENV_VALUES:
        raise ValueError(f'{ENV} must be one of {sorted(ENV_VALUES)}, got '
                         f'{value!r}')
    return Settings(*ENV_VALUES[value])


def on_for(x: torch.Tensor) -> bool:
    """Whether the fast path may run on ``x``: a CPU tensor, outside
    tracing, scripting, ``torch.compile`` and ONNX export, with the switch
    on. (Export is asked first: under ``torch.compile`` the switch is then
    not traced.)"""
    return (x.device.type == 'cpu' and not exporting() and settings().enabled)


@functools.lru_cache(maxsize=None)
def _measured_here() -> bool:
    capability = getattr(torch.backends.cpu, 'get_cpu_capability',
                         lambda: 'unknown')()
    return (digit_version(torch.__version__) >= digit_version(MEASURED_TORCH)
            and capability in MEASURED_CPU)


def measured_win(device: torch.device) -> bool:
    """Whether the channels-last layout and the autotuner were measured to
    win on this torch and CPU (see the module docstring)."""
    return device.type == 'cpu' and _measured_here()


def autotuning(device: torch.device) -> bool:
    """Whether the PSA convs time their forms now: as the switch says, by
    default where measured to win and not in deterministic mode (as
    mmengine turns ``cudnn.benchmark`` off for
    ``randomness=dict(deterministic=True)``)."""
    tune = settings().autotune
    if tune is not None:
        return tune
    return (measured_win(device)
            and not torch.are_deterministic_algorithms_enabled())
