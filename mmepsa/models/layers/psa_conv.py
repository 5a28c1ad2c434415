# Copyright (c) mmepsa contributors. All rights reserved.
"""The PSA branch conv: an ``nn.Conv2d`` that picks its fastest exact form.

oneDNN runs grouped convolutions with few channels per group (EPSANet's
5x5/7x7/9x9 convs: 4 input and 1 output channel per group in stage 1) far
below the speed of dense ones, and which rewriting is fastest depends on the
shape, the memory format, the CPU and whether gradients are needed. So, like
``torch.backends.cudnn.benchmark``, :class:`PSAConv2d` times its exact forms
once per process on the real input and caches the fastest:

* ``grouped``: the grouped conv itself, in the input's memory format;
* ``other-format``: the same in the other memory format (NCHW <-> NHWC),
  converted back;
* ``regroup-R``: fewer groups (``groups // R``) with block-diagonal weights,
  the missing blocks zero, so that oneDNN gets more channels per group at
  up to R times the multiply-adds;
* ``depthwise``: a depthwise conv (``out / groups`` outputs per input
  channel) followed by a sum over the ``in / groups`` channels of each group.

All compute the same sums (the extra terms are exact zeros), so they agree
to float rounding; gradients flow through each by autograd. The parameter is
the plain ``weight`` (and ``bias``), so state dicts, checkpoints and
:func:`mmcv.cnn.fuse_conv_bn` see an ordinary conv.

Autotuning is on for CPU inference and off elsewhere: in training steps
(gradients needed) the chosen forms made the whole EPSANet-50 step slower
than the plain convs in our measurements, and GPUs were not measured. The
environment variable ``MMEPSA_PSA_AUTOTUNE`` overrides that (``0``: always
the plain conv, e.g. for bitwise reproducibility; ``1``: on for training
and every device too), and so does :func:`set_autotune`. Under ``torch.jit`` tracing or
scripting, ``torch.compile`` and ONNX export the plain conv runs.
"""
import math
import os
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Form = Tuple[str, int]  # (kind, regroup factor)

# (conv config, input key) -> chosen form; shared by all instances.
_CHOICES: Dict[tuple, Form] = {}
_AUTOTUNE: Optional[bool] = None  # None: the environment variable / device


def set_autotune(enabled: Optional[bool]) -> None:
    """Turn the autotuning of :class:`PSAConv2d` on (``True``), off
    (``False``: always the plain grouped conv) or back to the default
    (``None``: ``MMEPSA_PSA_AUTOTUNE``, else on for CPU inference only). The choices
    made so far are kept (:func:`clear_autotune_choices` forgets them)."""
    global _AUTOTUNE
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(
            f'set_autotune expects True, False or None, got {enabled!r}')
    _AUTOTUNE = enabled


def clear_autotune_choices() -> None:
    """Forget the choices made so far: the next calls time the forms
    again."""
    _CHOICES.clear()


def autotune_choices() -> Dict[tuple, Form]:
    """A copy of the choices made so far (for logs and tests)."""
    return dict(_CHOICES)


def _autotune_enabled(device: torch.device, backward: bool) -> bool:
    """Explicitly on or off, else on for CPU inference: in a training step
    (``backward``) the forms measured slower than the plain conv on the whole
    backbone (the choices are made per conv), so it is opt-in there."""
    if _AUTOTUNE is not None:
        return _AUTOTUNE
    env = os.environ.get('MMEPSA_PSA_AUTOTUNE', '').strip()
    if env in ('0', '1'):
        return env == '1'
    if env:
        raise ValueError(
            f"MMEPSA_PSA_AUTOTUNE must be '0' or '1', got {env!r}")
    return device.type == 'cpu' and not backward


def _compiling() -> bool:
    """``torch.compiler.is_compiling()`` (torch >= 2.3), else dynamo's."""
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling',
                           None)
    if is_compiling is None:  # torch 2.0 - 2.2
        from torch import _dynamo
        is_compiling = _dynamo.is_compiling
    return is_compiling()


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
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


def _exporting() -> bool:
    """Tracing, scripting, compiling or exporting: run the plain conv."""
    if torch.jit.is_scripting() or torch.jit.is_tracing():
        return True
    if _compiling():
        return True
    return torch.onnx.is_in_onnx_export()


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _other_format(fmt: torch.memory_format) -> torch.memory_format:
    return (torch.contiguous_format
            if fmt == torch.channels_last else torch.channels_last)


def _size_bucket(n: int) -> int:
    """log2 of ``n``, rounded: sizes within ~1.4x of each other share a
    choice, so that varied detection inputs do not each trigger a tuning."""
    return round(math.log2(max(n, 1)))


class PSAConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs the fastest of its exact forms (see the module
    docstring); arguments as ``nn.Conv2d``'s (``padding_mode='zeros'``)."""

    # A form may do at most this many times the conv's multiply-adds.
    max_flops_ratio = 4
    # Smaller convs (multiply-adds) run as they are, untimed.
    min_tuned_macs = 20_000_000
    # Timed runs per form, and the time ratio to the grouped conv under
    # which another form is chosen.
    timing_rounds = 3
    min_gain = 0.95

    def forms(self) -> List[Form]:
        """The exact forms this conv can run in."""
        forms = [('grouped', 1), ('other-format', 1)]
        if self.padding_mode != 'zeros' or self.groups == 1:
            return forms[:1] if self.padding_mode != 'zeros' else forms
        r = 2
        while r <= self.max_flops_ratio and self.groups % r == 0:
            forms.append(('regroup', r))
            r *= 2
        forms.append(('depthwise', 1))
        return forms

    # ---------------------------------------------------------- the forms

    def _form_weight(self, form: Form, weight: torch.Tensor,
                     fmt: torch.memory_format) -> torch.Tensor:
        kind, r = form
        out_ch, in_pg, kh, kw = weight.shape
        groups = self.groups
        if kind == 'regroup':
            # block-diagonal: W'[g, a*og + o, b*ig + i] = (a == b) w[g, a, o, i]
            og = out_ch // groups
            w = weight.view(groups // r, r, og, in_pg, kh, kw)
            eye = torch.eye(r, dtype=weight.dtype, device=weight.device)
            weight = torch.einsum('gaoikl,ab->gaobikl', w,
                                  eye).reshape(out_ch, r * in_pg, kh, kw)
        elif kind == 'depthwise':
            # input channel c = g*ig + i feeds outputs c*og + o: w[g*og+o, i]
            og = out_ch // groups
            weight = weight.view(groups, og, in_pg, kh,
                                 kw).transpose(1, 2).reshape(
                                     groups * in_pg * og, 1, kh, kw)
        if kind == 'other-format':
            fmt = _other_format(fmt)
        return weight.contiguous(memory_format=fmt)

    def _run_form(self, form: Form, x: torch.Tensor, weight: torch.Tensor,
                  fmt: torch.memory_format) -> torch.Tensor:
        kind, r = form
        if kind == 'other-format':
            x = x.contiguous(memory_format=_other_format(fmt))
        if kind == 'depthwise':
            y = F.conv2d(x, weight, None, self.stride, self.padding,
                         self.dilation, x.shape[1])
            groups, in_pg = self.groups, self.in_channels // self.groups
            y = y.unflatten(1,
                            (groups, in_pg, -1)).sum(2).flatten(1,
                                                                2).to(y.dtype)
            if self.bias is not None:
                y = y + self.bias.view(1, -1, 1, 1)
        else:
            groups = self.groups // r
            y = F.conv2d(x, weight, self.bias, self.stride, self.padding,
                         self.dilation, groups)
        return y.contiguous(memory_format=fmt)

    # --------------------------------------------------------- the choice

    def _key(self, x: torch.Tensor, fmt: torch.memory_format) -> tuple:
        n, c, h, w = x.shape
        grad = torch.is_grad_enabled()
        return (self.in_channels, self.out_channels, self.kernel_size,
                self.stride, self.padding, self.dilation, self.groups,
                self.bias is not None, c, _size_bucket(n * h * w),
                _size_bucket(h), _size_bucket(w), x.dtype, x.device.type, fmt,
                grad and x.requires_grad, grad and self.weight.requires_grad,
                _autocast_dtype(x.device.type))

    def _timer(self, form: Form, x: torch.Tensor, fmt: torch.memory_format,
               backward: bool):
        """A function that runs ``form`` once (forward, and backward if
        gradients are needed) on detached copies and returns its seconds."""
        x = x.detach().requires_grad_(backward and x.requires_grad)
        weight = self.weight.detach().requires_grad_(
            backward and self.weight.requires_grad)
        inputs = [t for t in (x, weight) if t.requires_grad]

        def run() -> float:
            start = time.perf_counter()
            y = self._run_form(form, x, self._form_weight(form, weight, fmt),
                               fmt)
            if inputs:
                torch.autograd.grad(y, inputs, torch.ones_like(y))
            return time.perf_counter() - start

        return run

    def _time_forms(self, forms: List[Form], x: torch.Tensor,
                    fmt: torch.memory_format, backward: bool) -> List[float]:
        """Seconds of each form: the best of :attr:`timing_rounds` runs after
        a warm-up run, the forms taking turns, so that a burst of load from
        other processes hits them alike and the minimum sees through it."""
        timers = [self._timer(f, x, fmt, backward) for f in forms]
        for timer in timers:
            timer()  # oneDNN builds its kernels on a first call
        best = [float('inf')] * len(forms)
        for _ in range(self.timing_rounds):
            for i, timer in enumerate(timers):
                best[i] = min(best[i], timer())
        return best

    def _choose(self, x: torch.Tensor, fmt: torch.memory_format) -> Form:
        n, _, h, w = x.shape
        macs = (n * h * w * self.out_channels * self.in_channels //
                self.groups * self.kernel_size[0] * self.kernel_size[1] //
                (self.stride[0] * self.stride[1]))
        if macs < self.min_tuned_macs:
            return ('grouped', 1)  # not worth timing
        key = self._key(x, fmt)
        form = _CHOICES.get(key)
        if form is None:
            backward = torch.is_grad_enabled() and (x.requires_grad or
                                                    self.weight.requires_grad)
            forms = self.forms()
            with torch.no_grad() if not backward else torch.enable_grad():
                times = self._time_forms(forms, x, fmt, backward)
            # another form only if clearly faster than the conv as it is
            best = min(range(len(forms)), key=times.__getitem__)
            form = forms[best] if times[best] < self.min_gain * times[0] \
                else forms[0]
            _CHOICES[key] = form
        return form

    def _cached_weight(self, form: Form,
                       fmt: torch.memory_format) -> torch.Tensor:
        """The form's weight, made once per weight version when no gradient
        is needed (inference)."""
        w = self.weight
        key = (form, fmt, w.data_ptr(), w._version, w.dtype, w.device)
        cache = self.__dict__.get('_weight_cache')
        if cache is None or cache[0] != key:
            cache = (key, self._form_weight(form, w.detach(), fmt))
            self.__dict__['_weight_cache'] = cache
        return cache[1]

    def forward_form(self, x: torch.Tensor, form: Form) -> torch.Tensor:
        """Run ``form`` (one of :meth:`forms`), autograd included, whatever
        the autotuning would choose."""
        if form not in self.forms():
            raise ValueError(f'PSAConv2d: form {form!r} is not one of '
                             f'{self.forms()}')
        fmt = _memory_format(x)
        return self._run_form(form, x,
                              self._form_weight(form, self.weight, fmt), fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backward = torch.is_grad_enabled() and (x.requires_grad
                                                or self.weight.requires_grad)
        if (x.dim() != 4 or _exporting()
                or not _autotune_enabled(x.device, backward)):
            return super().forward(x)
        fmt = _memory_format(x)
        form = self._choose(x, fmt)
        if form == ('grouped', 1) and fmt == torch.contiguous_format:
            return super().forward(x)
        if torch.is_grad_enabled() and self.weight.requires_grad:
            weight = self._form_weight(form, self.weight, fmt)
        else:
            weight = self._cached_weight(form, fmt)
        return self._run_form(form, x, weight, fmt)
