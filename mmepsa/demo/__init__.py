# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo ("main job" of ``tools/run_demo.py``) and its synthetic data.

* :mod:`.trainer`: train a demo config from scratch, evaluate, plot and
  summarise (:func:`load_demo_config`, :func:`run_demo`);
* :mod:`.data`: the synthetic shapes dataset, COCO format
  (:func:`make_demo_dataset`; ``python -m mmepsa.demo.data``);
* :mod:`.seg_data`: the same shapes for mmseg
  (:func:`make_demo_seg_dataset`; ``python -m mmepsa.demo.seg_data``).

Names are loaded lazily, so ``python -m mmepsa.demo.data`` runs without
importing the module twice, and the data generators need no mmengine.

Example:
    >>> from mmepsa.demo import make_demo_dataset
    >>> root = make_demo_dataset('data/demo_shapes')  # doctest: +SKIP
"""
import importlib

#: Each public name and the module of this package that defines it.
_SOURCES = {
    'DemoDataError': 'trainer',
    'DemoDiverged': 'trainer',
    'load_demo_config': 'trainer',
    'run_demo': 'trainer',
    'make_demo_dataset': 'data',
    'DEMO_CLASSES': 'data',
    'DEMO_PALETTE': 'data',
    'GENERATOR_VERSION': 'data',
    'make_demo_seg_dataset': 'seg_data',
    'SEG_CLASSES': 'seg_data',
    'SEG_PALETTE': 'seg_data',
    'SEG_GENERATOR_VERSION': 'seg_data',
}
__all__ = list(_SOURCES)


def __getattr__(name: str):
    if name in _SOURCES:
        module = importlib.import_module(f'{__name__}.{_SOURCES[name]}')
        return getattr(module, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
