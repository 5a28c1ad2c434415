# Copyright (c) mmepsa contributors. All rights reserved.
from .backbones import EPSABlock, EPSANet, PSAModule, SEWeightModule
from .fast import ChannelsLastFPN
from .registry import REGISTERED_IN, register_models

register_models()

__all__ = [
    'EPSANet', 'EPSABlock', 'PSAModule', 'SEWeightModule', 'ChannelsLastFPN',
    'REGISTERED_IN', 'register_models'
]
