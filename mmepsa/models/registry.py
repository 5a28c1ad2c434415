# Copyright (c) mmepsa contributors. All rights reserved.
"""Put mmepsa's models into the ``MODELS`` registry of each OpenMMLab
codebase that is installed (mmdet, mmpretrain, mmseg), so that
``backbone=dict(type='EPSANet', ...)`` works in their configs, and
``neck=dict(type='ChannelsLastFPN', ...)`` in mmdet's (it extends mmdet's
FPN)."""
import importlib
from typing import List

from .backbones import EPSANet
from .fast import ChannelsLastFPN

#: Codebases whose ``MODELS`` registry may receive mmepsa's models. mmdet is
#: a runtime requirement; mmpretrain and mmseg are optional.
CODEBASES = ('mmdet', 'mmpretrain', 'mmseg')

#: The codebases EPSANet was registered in by :func:`register_models`.
REGISTERED_IN: List[str] = []


def register_models() -> List[str]:
    """Register :class:`EPSANet` in every importable codebase's ``MODELS``,
    and :class:`ChannelsLastFPN` in mmdet's.

    Returns:
        list[str]: The codebases it is registered in.
    """
    for scope in CODEBASES:
        if scope in REGISTERED_IN:
            continue
        try:
            registry = importlib.import_module(f'{scope}.registry').MODELS
        except ImportError:
            continue
        registry.register_module(module=EPSANet)
        if scope == 'mmdet':
            registry.register_module(module=ChannelsLastFPN)
        REGISTERED_IN.append(scope)
    return list(REGISTERED_IN)
