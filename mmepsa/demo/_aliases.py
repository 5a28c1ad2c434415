# Copyright (c) mmepsa contributors. All rights reserved.
"""The deprecated module paths of the demo (``mmepsa.apis``,
``mmepsa.datasets``), kept as aliases of :mod:`mmepsa.demo` that warn.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter('always')
    ...     from mmepsa.apis import run_demo
    >>> str(caught[0].message).split(':')[0]
    'mmepsa.apis.run_demo moved to mmepsa.demo.trainer'
"""
import importlib
import warnings
from typing import Callable, Optional, Sequence


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """Emit the DeprecationWarning of a name or module ``old`` that moved to
    the module ``new``."""
    warnings.warn(
        f'{old} moved to {new}: import it from there ({old} is a '
        'deprecated alias and will be removed)',
        DeprecationWarning,
        stacklevel=stacklevel)


def forward(old: str,
            new: str,
            names: Optional[Sequence[str]] = None) -> Callable[[str], object]:
    """A module ``__getattr__`` for the deprecated module ``old``: the
    attribute of the module ``new`` of that name. With ``names`` (a
    package's public names) only those are forwarded, each with a
    DeprecationWarning; without (a module that warned on import) every
    name is, silently."""

    def __getattr__(name: str):
        if names is not None and name not in names:
            raise AttributeError(f'module {old!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(new), name)
        if names is not None:
            warn_moved(f'{old}.{name}', new)
        return value

    return __getattr__
