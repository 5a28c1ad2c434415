# Copyright (c) mmepsa contributors. All rights reserved.
from .epsanet import EPSABlock, EPSANet, PSAModule, SEWeightModule

__all__ = ['EPSANet', 'EPSABlock', 'PSAModule', 'SEWeightModule']
