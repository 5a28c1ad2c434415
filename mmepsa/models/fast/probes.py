# Copyright (c) mmepsa contributors. All rights reserved.
"""What the fast path asks of the run time before it engages: is the model
being exported, traced or compiled, what autocast is in force, what memory
format a tensor is in, and whether a module has hooks."""
from typing import Optional

import torch
import torch.nn as nn
from torch.nn.modules import module as _module


def compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3), else dynamo's."""
    is_compiling = getattr(
        getattr(torch, 'compiler', None), 'is_compiling', None)
    if is_compiling is None:  # torch 2.0 - 2.2
        from torch import _dynamo
        is_compiling = _dynamo.is_compiling
    return is_compiling()


def exporting() -> bool:
    """Tracing, scripting, compiling or exporting to ONNX."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if compiling():
        return True
    return torch.onnx.is_in_onnx_export()


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype in force on ``device_type``, or None."""
    if hasattr(torch, 'get_autocast_dtype'):  # torch >= 2.4
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    if device_type == 'cpu':
        enabled, dtype = (torch.is_autocast_cpu_enabled(),
                          torch.get_autocast_cpu_dtype())
    else:
        enabled, dtype = (torch.is_autocast_enabled(),
                          torch.get_autocast_gpu_dtype())
    return dtype if enabled else None


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a 4-d tensor laid out so (and not also
    contiguous), else ``torch.contiguous_format``."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def other_format(fmt: torch.memory_format) -> torch.memory_format:
    """NCHW for channels-last and the reverse."""
    return (torch.contiguous_format
            if fmt == torch.channels_last else torch.channels_last)


def global_hooks() -> bool:
    """Whether module hooks are registered globally."""
    return bool(_module._global_forward_hooks
                or _module._global_forward_pre_hooks
                or _module._global_backward_hooks)


def own_hooks(module: nn.Module) -> bool:
    """Whether ``module`` itself (not a module inside it) has a forward or
    backward hook."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, '_backward_pre_hooks', None))
