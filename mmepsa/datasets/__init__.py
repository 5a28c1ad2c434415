# Copyright (c) mmepsa contributors. All rights reserved.
"""Datasets of mmepsa: the synthetic shapes dataset of the demo.

Names are loaded lazily, so ``python -m mmepsa.datasets.demo_data`` runs
without importing the module twice.
"""
__all__ = [
    'make_demo_dataset', 'DEMO_CLASSES', 'DEMO_PALETTE', 'GENERATOR_VERSION'
]


def __getattr__(name):
    if name in __all__:
        from . import demo_data
        return getattr(demo_data, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
