# Copyright (c) mmepsa contributors. All rights reserved.
"""The suite's one change to a library: mmengine's lookup of a config's
``package::`` bases, memoized per process.

mmengine 0.10.7 resolves each ``mmdet::_base_/...`` base by parsing every
metafile mmdet's model-index lists (about 100 YAML files, 0.15 s), then,
``_base_`` files being in none of them, falls back to the base's path. Our
configs have four such bases, and the suite parses configs hundreds of
times: about 15% of its CPU time went there. The memo returns what
mmengine's own function returned (or raised) for the same arguments; the
metafiles do not change during a session. Set up by ``tests/conftest.py``
(the test processes) and ``tests/warm_launcher.py`` (the tools it runs); a
fresh interpreter runs mmengine's lookup unchanged.
"""
import copy
import functools


def memoize_base_lookup() -> None:
    """Memoize ``mmengine.config.utils._get_cfg_metainfo`` in this process
    (once; a second call changes nothing)."""
    from mmengine.config import utils
    lookup = utils._get_cfg_metainfo
    if hasattr(lookup, 'cache'):
        return
    cache = {}

    @functools.wraps(lookup)
    def memoized(package_path: str, cfg_path: str) -> dict:
        key = (package_path, cfg_path)
        if key not in cache:
            try:
                cache[key] = (lookup(package_path, cfg_path), None)
            except ValueError as e:
                cache[key] = (None, e.args)
        found, error = cache[key]
        if error is not None:
            raise ValueError(*error)
        return copy.deepcopy(found)

    memoized.cache = cache
    utils._get_cfg_metainfo = memoized
