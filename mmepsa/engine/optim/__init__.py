# Copyright (c) mmepsa contributors. All rights reserved.
from .cpu_bf16_optim_wrapper import (CPUBF16OptimWrapper, cpu_bf16_supported,
                                     use_amp)

__all__ = ['CPUBF16OptimWrapper', 'cpu_bf16_supported', 'use_amp']
