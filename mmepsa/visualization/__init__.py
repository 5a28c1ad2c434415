# Copyright (c) mmepsa contributors. All rights reserved.
from .curves import find_scalars_json, load_scalars, plot_curves

__all__ = ['find_scalars_json', 'load_scalars', 'plot_curves']
