# Copyright (c) mmepsa contributors. All rights reserved.
"""Batch norm in eval mode folded into the conv before it, on the fly.

A BN layer in eval mode is a fixed per-channel affine map, ``y = x * scale +
shift`` with ``scale = weight / sqrt(running_var + eps)`` and ``shift =
bias - running_mean * scale``. After a conv it folds into the conv's weight
and bias (what :func:`mmcv.cnn.fuse_conv_bn` does once, in place, for
deployment), which saves the BN pass over the feature map. The fast path
does this whenever a BN is in eval mode: at inference, and in training with
``norm_eval=True`` (mmdet's detection configs) or in frozen stages.

* The parameters and buffers are untouched: the folded weight is computed
  from them. With gradients needed it is computed every call, so they flow
  to the conv weight and to the BN's weight and bias as through the BN;
  otherwise it is cached until one of them changes (their version counters,
  which optimizers and ``load_state_dict`` bump, and for a train-mode BN
  pass, the version of ``num_batches_tracked``).
* The result equals ``norm(conv(x))`` to float rounding.
* Only a plain ``nn.Conv2d`` followed by a batch norm in eval mode with
  running statistics is folded (``nn.BatchNorm2d``, ``nn.SyncBatchNorm``,
  or any batch norm that runs ``_BatchNorm.forward``, such as the BN that
  mmengine's ``revert_sync_batchnorm`` makes); anything else runs as
  ``norm(conv(x))``.
"""
from typing import Tuple

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from .probes import own_hooks

_BN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward)
_CACHE = '_mmepsa_fold_cache'


def _is_bn(module: nn.Module) -> bool:
    return (isinstance(module, _BatchNorm)
            and type(module).forward in _BN_FORWARDS)


def foldable(norm: nn.Module) -> bool:
    """Whether ``norm`` is a BN in eval mode that may be folded."""
    return (_is_bn(norm) and not norm.training
            and norm.running_var is not None)


def eval_bn_affine(norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BN: ``norm(x)`` is ``x * scale +
    shift`` per channel. Computed with autograd from its weight and bias."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return scale, shift


def _state_key(tensors) -> tuple:
    return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype,
                                         t.device) for t in tensors)


def _folded(conv: nn.Conv2d, norm: nn.Module):
    scale, shift = eval_bn_affine(norm)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias


def conv_bn(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, with ``norm`` folded into ``conv`` where it is an
    eval-mode BN after a plain ``nn.Conv2d`` without hooks (see the module
    docstring); a conv with hooks runs as itself, so that they fire."""
    if (type(conv) is not nn.Conv2d or own_hooks(conv) or not foldable(norm)):
        return norm(conv(x))
    # a train-mode pass updates the running statistics without bumping
    # their version counters, but it bumps num_batches_tracked's
    tensors = (conv.weight, conv.bias, norm.weight, norm.bias,
               norm.running_mean, norm.running_var, norm.num_batches_tracked)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in tensors):
        weight, bias = _folded(conv, norm)
    else:
        key = (_state_key(tensors), norm.eps,
               torch.is_inference_mode_enabled())
        cache = conv.__dict__.get(_CACHE)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                cache = (key, ) + _folded(conv, norm)
            conv.__dict__[_CACHE] = cache
        weight, bias = cache[1:]
    return conv._conv_forward(x, weight, bias)


def run_folded(seq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``seq``; if it is an ``nn.Sequential``, with each conv followed
    by a BN run by :func:`conv_bn`."""
    if not isinstance(seq, nn.Sequential):
        return seq(x)
    modules = list(seq)
    i = 0
    while i < len(modules):
        if i + 1 < len(modules) and _is_bn(modules[i + 1]):
            x = conv_bn(modules[i], modules[i + 1], x)
            i += 2
        else:
            x = modules[i](x)
            i += 1
    return x
