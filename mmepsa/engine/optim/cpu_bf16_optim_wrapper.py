# Copyright (c) mmepsa contributors. All rights reserved.
"""Mixed-precision training on CPU: bfloat16 autocast.

mmengine's ``AmpOptimWrapper`` asserts a CUDA, NPU or MLU device, so
``tools/train.py --amp`` cannot train on a CPU. On a CPU with native
bfloat16 arithmetic (AVX512-BF16 or AMX), :class:`CPUBF16OptimWrapper` runs
the forward pass and the loss under ``torch.autocast('cpu',
dtype=torch.bfloat16)``; the parameters, their gradients and the optimizer
state stay float32. bfloat16 has float32's exponent range, so no loss scaler
is needed. Configs can name it::

    optim_wrapper = dict(type='CPUBF16OptimWrapper', optimizer=...)
"""
from contextlib import contextmanager
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


def _torch_isa_checks() -> list:
    """torch's own CPUID checks for the instructions in ``_CPU_FLAGS``
    (``torch.cpu._is_avx512_bf16_supported`` and ``_is_amx_tile_supported``),
    those this torch has (older ones have neither)."""
    names = ('_is_avx512_bf16_supported', '_is_amx_tile_supported')
    return [getattr(torch.cpu, n) for n in names if hasattr(torch.cpu, n)]


def cpu_bf16_supported() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), by
    torch's CPUID checks where this torch has them, else by the flags in
    ``/proc/cpuinfo``.

    Not oneDNN's ``_is_mkldnn_bf16_supported``: it is true on any CPU with
    AVX-512, where oneDNN emulates bfloat16, slowly.
    """
    checks = _torch_isa_checks()
    if checks:
        return any(check() for check in checks)
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read().split()
    except OSError:  # pragma: no cover - not Linux
        return False
    return any(flag in flags for flag in _CPU_FLAGS)


def _to_float(outputs):
    """bfloat16 tensors in (nested tuples, lists, dicts of) ``outputs``
    back to float32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.dtype == torch.bfloat16 else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_to_float(o) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _to_float(v) for k, v in outputs.items()}
    return outputs


def _enter(module: nn.Module, ctx) -> None:
    """Enter the autocast context ``ctx`` for ``module``'s forward pass (a
    forward pre-hook's part); :func:`_exit` leaves it."""
    ctx.__enter__()
    module.__dict__.setdefault('_bf16_contexts', []).append(ctx)


def _exit(module: nn.Module) -> None:
    stack = module.__dict__.get('_bf16_contexts')
    if stack:
        stack.pop().__exit__(None, None, None)


def _hook(module: nn.Module, enter, leave) -> list:
    """Register ``enter`` as a forward pre-hook, after those already there,
    and ``leave`` as a forward hook before them, which runs even when the
    forward pass raises: hooks registered later nest inside the earlier
    ones. Their handles."""
    return [
        module.register_forward_pre_hook(enter),
        module.register_forward_hook(leave, prepend=True, always_call=True)
    ]


def _enter_autocast(module, args):
    _enter(module, torch.autocast('cpu', dtype=torch.bfloat16))


def _exit_autocast(module, args, outputs):
    _exit(module)
    return _to_float(outputs)


def _needs_float32(module: nn.Module) -> bool:
    """A trainable strided conv (kernel > 1), whose weight gradient oneDNN
    may get wrong in bfloat16 (see :func:`_enter_float32`)."""
    return (isinstance(module, nn.Conv2d) and module.weight.requires_grad
            and max(module.stride) > 1 and max(module.kernel_size) > 1)


def _enter_float32(module, args):
    """Run ``module`` (a conv of :func:`_needs_float32`) in float32 where its
    input is narrower than its stride. There oneDNN's bfloat16 weight
    gradient holds whatever was in memory: huge values, NaN or plausible
    ones, not the same from call to call (torch 2.1.2 and 2.14.1
    on a CPU without AVX512-BF16, where oneDNN emulates it; CPUs with it
    were not checked). RetinaNet's P7 conv (3x3, stride 2) meets a 1x1 map
    on a 64-px image, and training went NaN at its second or third step.
    Such maps are tiny, so float32 costs nothing."""
    x = args[0] if args else None
    if not (isinstance(x, torch.Tensor) and x.dim() == 4
            and any(size < stride
                    for size, stride in zip(x.shape[-2:], module.stride))):
        return None
    _enter(module, torch.autocast('cpu', enabled=False))
    return (x.float(), ) + tuple(args[1:])


def _exit_float32(module, args, outputs):
    _exit(module)


@OPTIM_WRAPPERS.register_module()
class CPUBF16OptimWrapper(OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` whose ``optim_context`` (the
    forward pass and the loss, in mmengine's ``train_step``) runs under CPU
    bfloat16 autocast.

    mmcv's CPU ops (NMS, RoIAlign...) take float32 only, so by default the
    autocast covers the model's ``backbone`` and ``neck`` (the convolutional
    bulk of a detector or segmentor), whose outputs go back to float32 for
    the heads; a model with neither runs its whole forward under autocast.
    A trainable strided conv whose input is narrower than its stride runs in
    float32: oneDNN's bfloat16 weight gradient is wrong there (see
    ``_enter_float32``).

    Args:
        *args, **kwargs: As :class:`~mmengine.optim.OptimWrapper`'s.
        autocast_modules (Sequence[str], optional): Names of the model's
            submodules that run under autocast; ``None`` or empty: the whole
            forward. Defaults to ``('backbone', 'neck')``.

    Raises:
        RuntimeError: the CPU has no native bfloat16 arithmetic (training
            would run, many times slower than float32).
    """

    def __init__(self,
                 *args,
                 autocast_modules: Optional[Sequence[str]] = ('backbone',
                                                              'neck'),
                 **kwargs) -> None:
        if not cpu_bf16_supported():
            raise RuntimeError(
                'CPUBF16OptimWrapper (--amp on CPU): this CPU has no native '
                'bfloat16 arithmetic (no avx512_bf16 or amx_bf16 flag in '
                '/proc/cpuinfo), so bfloat16 training would be slower than '
                'float32. Train without --amp.')
        super().__init__(*args, **kwargs)
        self.autocast_modules = tuple(autocast_modules or ())

    @contextmanager
    def optim_context(self, model: nn.Module):
        module = model.module if is_model_wrapper(model) else model
        targets = [
            getattr(module, name) for name in self.autocast_modules
            if isinstance(getattr(module, name, None), nn.Module)
        ]
        handles = []
        try:
            with super().optim_context(model):
                for target in targets:
                    handles += _hook(target, _enter_autocast, _exit_autocast)
                # after the targets' hooks: inside their autocast
                for target in targets or [module]:
                    for conv in filter(_needs_float32, target.modules()):
                        handles += _hook(conv, _enter_float32, _exit_float32)
                if targets:
                    yield
                    return
                with torch.autocast('cpu', dtype=torch.bfloat16):
                    yield
        finally:
            for handle in handles:
                handle.remove()


def use_amp(cfg) -> None:
    """What ``tools/train.py --amp`` does to ``cfg``: mmengine's
    ``AmpOptimWrapper`` with a dynamic loss scale where a CUDA, NPU, MLU or
    MUSA device is there, else :class:`CPUBF16OptimWrapper` (which raises
    when the CPU lacks bfloat16)."""
    from mmengine.device import get_device
    if get_device() != 'cpu':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
        return
    if not cpu_bf16_supported():
        raise RuntimeError(
            '--amp on CPU needs native bfloat16 arithmetic (avx512_bf16 or '
            'amx_bf16 in /proc/cpuinfo); this CPU has neither. Train '
            'without --amp.')
    cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    cfg.optim_wrapper.pop('loss_scale', None)
