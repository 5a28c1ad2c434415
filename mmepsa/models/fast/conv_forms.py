# Copyright (c) mmepsa contributors. All rights reserved.
"""The PSA branch convs' exact forms, and the autotuner that picks one.

oneDNN runs grouped convolutions with few channels per group (EPSANet's
5x5/7x7/9x9 convs: 4 input and 1 output channel per group in stage 1) far
below the speed of dense ones, and which rewriting is fastest depends on the
shape, the memory format, the CPU and whether gradients are needed. So, like
``torch.backends.cudnn.benchmark``, :class:`TunedConv` times a conv's exact
forms once per process and input size on the real input and caches the
fastest:

* ``grouped``: the grouped conv itself, in the input's memory format;
* ``other-format``: the same in the other memory format (NCHW <-> NHWC),
  converted back;
* ``regroup-R``: fewer groups (``groups // R``) with block-diagonal weights,
  the missing blocks zero, so that oneDNN gets more channels per group at
  up to R times the multiply-adds;
* ``depthwise``: a depthwise conv (``out / groups`` outputs per input
  channel, one depthwise conv per output of a channel) followed by a sum
  over the ``in / groups`` channels of each group (a matrix product with a
  0/1 matrix over the channels);
* ``polyphase`` (stride 1 or 2, odd kernel, padding ``k // 2``): the conv
  on the four 2x2 phases of its input, each a channel of a half-size image,
  with a kernel of ``k // 2 + 1`` taps; at stride 1 its output has four
  phases too, interleaved back into the output.

All compute the same sums (the extra terms are exact zeros), so they agree
to float rounding. In a training step the forward pass, the input gradient
and the weight gradient are timed and chosen separately, each among the
forms that the benchmark's record of chosen forms (``compare_speed.py``;
AMD EPYC with AVX512-BF16, 2 threads; 8x224x224 and 1x800x1216, inference
and detection training) chose for it somewhere: every form for the forward
pass; ``grouped``, ``other-format`` and ``regroup-2`` for the input
gradient; every form but ``depthwise`` for the weight gradient
(``polyphase`` not in half precision). The conv's own ``weight`` and
``bias`` are used, so state dicts and checkpoints see an ordinary conv.

The timing of one input size is bounded: each part stops timing forms once
it has spent :attr:`TunedConv.max_tuning_cost` times the grouped conv's
time, and a form that ran more than :attr:`TunedConv.hopeless` times slower
than the grouped conv is not timed again in this process for that part,
memory format, dtype and input size (a verdict at one size says little of
another: a form hopeless at 224x224 can win at 800x1216). Whether it runs
at all is the switch's (:func:`mmepsa.models.fast.switch.autotuning`).
"""
import contextlib
import functools
import itertools
import math
import time
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from .probes import autocast_dtype, memory_format, other_format
from .switch import autotuning

Form = Tuple[str, int]  # (kind, regroup factor)
# A training step's forms: forward, input gradient, weight gradient.
Plan = Tuple[Form, Form, Form]

# (conv config, input key) -> chosen form (inference) or plan (training);
# shared by all convs.
_CHOICES: Dict[tuple, Union[Form, Plan]] = {}
# The same keys -> the shape of the input the choice was made on (for
# chosen_forms; sizes within a bucket share the choice).
_CHOSEN_ON: Dict[tuple, Tuple[int, ...]] = {}
# (form, part, memory format, dtype, input size bucket) found hopeless in
# this process.
_HOPELESS: Set[tuple] = set()
# A log line to print before the next timing (see announce).
_ANNOUNCEMENT: List[str] = []


def announce(message: Optional[str]) -> None:
    """Log ``message`` before the next conv is timed, if one is (the
    caller knows the input size; only a timing knows it is slow); None
    withdraws it."""
    _ANNOUNCEMENT[:] = [] if message is None else [message]


def clear_choices() -> None:
    """Forget the choices made so far (and the forms found hopeless): the
    next calls time the forms again."""
    _CHOICES.clear()
    _CHOSEN_ON.clear()
    _HOPELESS.clear()


def choices() -> Dict[tuple, Union[Form, Plan]]:
    """A copy of the choices made so far (for logs and tests)."""
    return dict(_CHOICES)


#: The parts of a training step, in a plan's order.
PARTS = ('forward', 'input', 'weight')

# The forms each gradient is computed in, where the conv has them: those
# the benchmark's record chose for it somewhere (see the module docstring).
# The forward pass runs in any form of TunedConv.forms.
_GRADIENT_FORMS: Dict[str, Tuple[Form, ...]] = dict(
    input=(('grouped', 1), ('other-format', 1), ('regroup', 2)),
    weight=(('grouped', 1), ('other-format', 1), ('regroup', 2),
            ('regroup', 4), ('polyphase', 1)))


def form_name(form: Form) -> str:
    """A form as the module docstring names it: ``('regroup', 2)`` is
    ``'regroup-2'``, ``('depthwise', 1)`` is ``'depthwise'``."""
    kind, r = form
    return f'{kind}-{r}' if kind == 'regroup' else kind


def _describe(key: tuple, shape: Tuple[int, ...]) -> str:
    """A choice's key, readable: the conv, the input it was chosen on and
    what else the key holds where it is not the usual."""
    (cin, cout, (kh, kw), stride, padding, dilation, groups, bias, _, _, _, _,
     dtype, device, fmt, x_grad, w_grad, amp) = key
    step = stride[0] if stride[0] == stride[1] else 'x'.join(map(str, stride))
    text = (f'{kh}x{kw} conv {cin}->{cout} g{groups} s{step} on '
            f"{'x'.join(map(str, shape))} "
            f"{'nhwc' if fmt == torch.channels_last else 'nchw'} "
            f"{str(dtype).replace('torch.', '')}")
    if padding != (kh // 2, kw // 2):
        text += f' pad {padding[0]}x{padding[1]}'
    if dilation != (1, 1):
        text += f' dilation {dilation[0]}x{dilation[1]}'
    if bias:
        text += ' bias'
    grads = [n for n, needed in (('x', x_grad), ('w', w_grad)) if needed]
    if grads:
        text += f" grad {'+'.join(grads)}"
    if amp is not None:
        text += f" autocast {str(amp).replace('torch.', '')}"
    return text if device == 'cpu' else f'{text} {device}'


def chosen_forms() -> Dict[str, Dict[str, str]]:
    """The forms chosen so far (since :func:`clear_choices`), readable:
    ``{conv: {part: form}}`` with each conv as its shape and the input it
    was chosen on (convs of the same shape and input share a choice), and
    for each part computed (``'forward'``; in training, ``'input'`` and
    ``'weight'`` where that gradient is needed) the name of its form
    (:func:`form_name`). Convs too small to time run grouped and are not
    listed.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> from mmepsa.models.fast import fast_path
        >>> clear_choices()
        >>> conv = nn.Conv2d(128, 32, 9, padding=4, groups=16, bias=False)
        >>> with torch.no_grad(), fast_path(True, autotune=True):
        ...     _ = TunedConv(conv)(torch.rand(4, 128, 32, 32))
        >>> forms = chosen_forms()
        >>> list(forms)
        ['9x9 conv 128->32 g16 s1 on 4x128x32x32 nchw float32']
        >>> list(forms['9x9 conv 128->32 g16 s1 on 4x128x32x32 nchw float32'])
        ['forward']
    """
    record = {}
    for key, choice in _CHOICES.items():
        if isinstance(choice[0], str):  # inference: one form
            parts = dict(forward=form_name(choice))
        else:
            *_, x_grad, w_grad, _ = key  # as _describe unpacks _key
            needed = (True, x_grad, w_grad)
            parts = {
                part: form_name(form)
                for part, form, need in zip(PARTS, choice, needed) if need
            }
        record[_describe(key, _CHOSEN_ON[key])] = parts
    return record


def _size_bucket(n: int) -> int:
    """log2 of ``n``, rounded: sizes within ~1.4x of each other share a
    choice, so that varied detection inputs do not each trigger a tuning."""
    return round(math.log2(max(n, 1)))


@functools.lru_cache(maxsize=None)
def _phase_taps(kh: int, kw: int) -> torch.Tensor:
    """The polyphase form's weight as an index into the conv's ``kh x kw``
    kernel with a zero row and column appended (flattened), of shape (ry,
    rx, sy, sx, ty, tx): the tap that output phase (ry, rx) applies to
    input phase (sy, sx) at phase-grid tap (ty, tx). In one dimension an
    output pixel ``2Y + r`` reads the padded input at ``2Y + r + a`` for
    tap ``a``, which is phase ``s`` of phase pixel ``Y + t`` where
    ``2t + s = r + a``; no such ``a``: the zero."""

    def table(k: int) -> torch.Tensor:
        taps = torch.full((2, 2, k // 2 + 1), k, dtype=torch.long)
        for r, s, t in itertools.product(
                range(2), range(2), range(k // 2 + 1)):
            if 0 <= 2 * t + s - r < k:
                taps[r, s, t] = 2 * t + s - r
        return taps

    rows = table(kh).view(2, 1, 2, 1, -1, 1)  # (ry, sy, ty)
    cols = table(kw).view(1, 2, 1, 2, 1, -1)
    return rows * (kw + 1) + cols


def _phase_rows(phase: int, offset: int, size: int) -> Tuple[int, int, int]:
    """Where the pixels ``0..size-1`` of an image placed at ``offset`` in a
    frame fall in one phase of that frame: the first such pixel, its row in
    the phase image and how many there are."""
    first = (phase - offset) % 2
    return first, (first + offset - phase) // 2, len(range(first, size, 2))


def _phase_pairs(image: torch.Tensor, phases: torch.Tensor, offset: Tuple[int,
                                                                          int]
                 ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """For each of the 2x2 phases of a frame holding ``image`` at
    ``offset``: the image's pixels in that phase and where they lie in
    ``phases`` (channel ``4c + 2ry + rx``, pixel ``(Y, X)`` = frame pixel
    ``(2Y + ry, 2X + rx)`` of channel ``c``), as views of the two."""
    h, w = image.shape[-2:]
    by_phase = phases.unflatten(1, (image.shape[1], 2, 2))
    for ry, rx in itertools.product(range(2), range(2)):
        y0, row, rows = _phase_rows(ry, offset[0], h)
        x0, col, cols = _phase_rows(rx, offset[1], w)
        yield (image[:, :, y0::2,
                     x0::2], by_phase[:, :, ry, rx, row:row + rows,
                                      col:col + cols])


def _to_phases(x: torch.Tensor, offset: Tuple[int, int], frame: Tuple[int,
                                                                      int],
               fmt: torch.memory_format) -> torch.Tensor:
    """``x`` placed at ``offset`` in a zero frame of ``2 * frame`` pixels,
    as the frame's 2x2 phases (see :func:`_phase_pairs`), in memory format
    ``fmt``. Differentiable."""
    out = torch.empty(
        x.shape[:1] + (4 * x.shape[1], ) + tuple(frame),
        dtype=x.dtype,
        device=x.device,
        memory_format=fmt).zero_()
    for pixels, slot in _phase_pairs(x, out, offset):
        slot.copy_(pixels)
    return out


def _from_phases(z: torch.Tensor, offset: Tuple[int, int], size: Tuple[int,
                                                                       int],
                 fmt: torch.memory_format) -> torch.Tensor:
    """The inverse of :func:`_to_phases`: the ``size`` pixels at ``offset``
    of the frame whose phases ``z`` holds. Differentiable."""
    out = torch.empty(
        z.shape[:1] + (z.shape[1] // 4, ) + tuple(size),
        dtype=z.dtype,
        device=z.device,
        memory_format=fmt)
    for pixels, slot in _phase_pairs(out, z, offset):
        pixels.copy_(slot)
    return out


class TunedConv:
    """A plain ``nn.Conv2d`` run in the fastest of its exact forms (see the
    module docstring). It reads the conv's attributes and parameters; the
    fast path wraps a PSA branch conv in it for a call.

    Args:
        conv (nn.Conv2d): The conv (``padding_mode='zeros'`` for forms other
            than the grouped conv in either memory format).

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> conv = nn.Conv2d(64, 16, 9, padding=4, groups=16, bias=False)
        >>> x = torch.rand(1, 64, 32, 32)
        >>> y = TunedConv(conv).forward_form(x, ('depthwise', 1))
        >>> torch.allclose(y, conv(x), atol=1e-5)
        True
    """

    # A form may do at most this many times the conv's multiply-adds.
    max_flops_ratio = 4
    # Smaller convs (multiply-adds) run as they are, untimed.
    min_tuned_macs = 20_000_000
    # Timed runs per form, the time ratio to the grouped conv under which
    # another form is chosen, and the ratio to the fastest form over which
    # a form is not timed again.
    timing_rounds = 3
    min_gain = 0.95
    max_slowdown = 2.0

    # The time spent timing one part of a step, in grouped-conv runs, and
    # the slowdown past which a form is not timed again in this process.
    max_tuning_cost = 8
    hopeless = 4.0

    def __init__(self, conv: nn.Conv2d) -> None:
        self.conv = conv

    def __getattr__(self, name: str):
        # the conv's attributes and parameters (weight, groups, stride...)
        return getattr(self.__dict__['conv'], name)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

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
        kh, kw = self.kernel_size
        taps = 4 * (kh // 2 + 1) * (kw // 2 + 1)
        if (self.stride in ((1, 1), (2, 2)) and self.dilation == (1, 1)
                and kh % 2 == kw % 2 == 1 and min(kh, kw) > 1
                and self.padding == (kh // 2, kw // 2)
                and taps <= self.max_flops_ratio * kh * kw):
            forms.append(('polyphase', 1))
        return forms

    # ---------------------------------------------------------- the forms

    def _form_weight(self, form: Form, weight: torch.Tensor,
                     fmt: torch.memory_format) -> torch.Tensor:
        kind, r = form
        out_ch, in_pg, kh, kw = weight.shape
        groups = self.groups
        if kind == 'regroup':
            # block-diagonal: W'[g, a*og + o, b*ig + i] = (a == b) w[g,a,o,i]
            og = out_ch // groups
            w = weight.view(groups // r, r, og, in_pg, kh, kw)
            blocks = weight.new_zeros(groups // r, r, og, r, in_pg, kh, kw)
            blocks.diagonal(dim1=1, dim2=3).copy_(w.permute(0, 2, 3, 4, 5, 1))
            weight = blocks.view(out_ch, r * in_pg, kh, kw)
        elif kind == 'depthwise':
            # input channel c = g*ig + i feeds outputs c*og + o: w[g*og+o, i]
            og = out_ch // groups
            weight = weight.view(groups, og, in_pg, kh,
                                 kw).transpose(1, 2).reshape(
                                     groups * in_pg * og, 1, kh, kw)
        elif kind == 'polyphase':
            # W'[4o + 2ry + rx, 4i + 2sy + sx, ty, tx] (stride 1) or
            # W'[o, 4i + 2sy + sx, ty, tx] (stride 2): see _phase_taps
            taps = self._polyphase_index()
            weight = F.pad(weight, (0, 1, 0, 1)).flatten(2)[:, :, taps]
            weight = weight.permute(0, 2, 3, 1, 4, 5, 6,
                                    7).reshape(-1, in_pg * 4, *taps.shape[-2:])
        if kind == 'other-format':
            fmt = other_format(fmt)
        return weight.contiguous(memory_format=fmt)

    def _run_form(self,
                  form: Form,
                  x: torch.Tensor,
                  weight: torch.Tensor,
                  fmt: torch.memory_format,
                  bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        kind, r = form
        if kind == 'other-format':
            x = x.contiguous(memory_format=other_format(fmt))
        if kind == 'depthwise':
            y = None
            for w, matrix in self._depthwise_parts(weight, x):
                part = self._channel_product(
                    F.conv2d(x, w, None, self.stride, self.padding,
                             self.dilation, x.shape[1]), matrix, fmt)
                y = part if y is None else y.add_(part)
        elif kind == 'polyphase':
            y = F.conv2d(
                self._input_phases(x, fmt), weight, None, 1, 0, 1, self.groups)
            if self.stride == (1, 1):  # interleave the output phases
                y = _from_phases(y, (0, 0), x.shape[-2:], fmt)
        else:
            groups = self.groups // r
            return F.conv2d(x, weight, bias, self.stride, self.padding,
                            self.dilation,
                            groups).contiguous(memory_format=fmt)
        if bias is not None:
            y = y + bias.view(1, -1, 1, 1)
        return y.contiguous(memory_format=fmt)

    def _polyphase_index(self) -> torch.Tensor:
        """:func:`_phase_taps` for this conv's kernel and stride (at
        stride 2 only the output phase (0, 0) exists)."""
        taps = _phase_taps(*self.kernel_size).to(self.weight.device)
        return taps if self.stride == (1, 1) else taps[:1, :1]

    def _phase_sizes(self, x: torch.Tensor
                     ) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The polyphase form's output size on the phase grid and the
        frame of input phases its taps read."""
        # padding k // 2: the output is ceil(size / 2) pixels at stride 2;
        # at stride 1 it is size pixels, ceil(size / 2) on the phase grid
        out = tuple((size + 1) // 2 for size in x.shape[-2:])
        return out, tuple(o + k // 2 for o, k in zip(out, self.kernel_size))

    def _input_phases(self, x: torch.Tensor,
                      fmt: torch.memory_format) -> torch.Tensor:
        """The polyphase form's input: ``x`` padded as the conv pads it,
        as the 2x2 phases of a frame that the phase kernel's taps cover."""
        return _to_phases(x, self.padding, self._phase_sizes(x)[1], fmt)

    def _sum_matrix(self, like: torch.Tensor) -> torch.Tensor:
        """The 0/1 matrix ``S`` (depthwise outputs x conv outputs) whose
        product sums, for each output, the depthwise outputs of its group's
        in/g input channels: depthwise channel ``(g*ig + i)*og + o`` goes
        to output ``g*og + o``."""
        groups, in_pg = self.groups, self.in_channels // self.groups
        og = self.out_channels // groups
        eye = torch.eye(groups * og, device=like.device)  # float32: torch
        # 2.1 has no bfloat16 eye
        return eye.view(groups, 1, og, groups *
                        og).expand(-1, in_pg, -1,
                                   -1).reshape(-1, groups * og).to(like.dtype)

    @staticmethod
    def _channel_product(t: torch.Tensor, matrix: torch.Tensor,
                         fmt: torch.memory_format) -> torch.Tensor:
        """``t`` with its channel vector at each pixel multiplied by
        ``matrix`` (channels in x channels out), in memory format ``fmt``
        (torch's sum over a strided channel axis is slower on CPU
        than this product)."""
        n, c, h, w = t.shape
        if fmt == torch.channels_last:
            return (t.permute(0, 2, 3, 1).reshape(-1, c) @ matrix).view(
                n, h, w, -1).permute(0, 3, 1, 2)
        return (matrix.t() @ t.reshape(n, c, h * w)).view(n, -1, h, w)

    def _depthwise_parts(self, weight: torch.Tensor, like: torch.Tensor
                         ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """The depthwise form split by output of an input channel: for each
        ``o < out / groups``, the depthwise weight of output ``o`` of every
        input channel (one output per input channel) and the rows of
        :meth:`_sum_matrix` that sum those outputs into the conv's."""
        og = self.out_channels // self.groups
        weights = weight.view(-1, og, *weight.shape[1:]).unbind(1)
        matrices = self._sum_matrix(like).view(-1, og,
                                               self.out_channels).unbind(1)
        return list(zip(weights, matrices))

    def _form_grad(self, form: Form, part: str, x: torch.Tensor,
                   weight: torch.Tensor, grad: torch.Tensor,
                   fmt: torch.memory_format) -> torch.Tensor:
        """The gradient of the input (``part='input'``) or of the weight
        (``'weight'``, in the weight's own layout) computed through
        ``form`` (one of :meth:`_part_forms` for that part), given the
        gradient of the output."""
        kind, r = form
        groups = self.groups
        if kind == 'polyphase':  # the weight gradient only
            return self._polyphase_weight_grad(x, weight, grad, fmt)
        if kind == 'other-format':
            x = x.contiguous(memory_format=other_format(fmt))
            grad = grad.contiguous(memory_format=other_format(fmt))
        else:
            grad = grad.contiguous(memory_format=fmt)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, x, self._form_weight(form, weight, fmt), None, self.stride,
            self.padding, self.dilation, False, (0, 0), groups // r,
            [part == 'input', part == 'weight', False])
        if part == 'input':
            return grad_x.contiguous(memory_format=fmt)
        out_ch, in_pg, kh, kw = weight.shape
        og = out_ch // groups
        if kind == 'regroup':  # the diagonal blocks of the block-diagonal
            grad_w = grad_w.view(groups // r, r, og, r, in_pg, kh,
                                 kw).diagonal(
                                     dim1=1, dim2=3)
            grad_w = grad_w.permute(0, 5, 1, 2, 3, 4)
        return grad_w.reshape(weight.shape).contiguous()

    def _polyphase_weight_grad(self, x: torch.Tensor, weight: torch.Tensor,
                               grad: torch.Tensor,
                               fmt: torch.memory_format) -> torch.Tensor:
        """The weight gradient of the polyphase form: the conv's weight
        gradient on the phases, each tap's four uses summed."""
        form_weight = self._form_weight(('polyphase', 1), weight, fmt)
        if self.stride == (1, 1):
            grad = _to_phases(grad, (0, 0), self._phase_sizes(x)[0], fmt)
        grad_w = torch.ops.aten.convolution_backward(
            grad.contiguous(memory_format=fmt), self._input_phases(x, fmt),
            form_weight, None, (1, 1), (0, 0), (1, 1), False, (0, 0),
            self.groups, [False, True, False])[1]
        out_ch, in_pg, kh, kw = weight.shape
        index = self._polyphase_index()
        grad_w = grad_w.view(out_ch, *index.shape[:2], in_pg,
                             *index.shape[2:]).permute(0, 3, 1, 2, 4, 5, 6,
                                                       7).reshape(
                                                           out_ch, in_pg, -1)
        full = grad_w.new_zeros(out_ch, in_pg, (kh + 1) * (kw + 1))
        full.index_add_(2, index.flatten(), grad_w)
        return full.view(out_ch, in_pg, kh + 1, kw + 1)[:, :, :kh, :kw] \
            .contiguous()

    # --------------------------------------------------------- the choice

    def _key(self, x: torch.Tensor, fmt: torch.memory_format) -> tuple:
        n, c, h, w = x.shape
        grad = torch.is_grad_enabled()
        return (self.in_channels, self.out_channels, self.kernel_size,
                self.stride, self.padding, self.dilation, self.groups,
                self.bias is not None, c, _size_bucket(n * h * w),
                _size_bucket(h), _size_bucket(w), x.dtype, x.device.type, fmt,
                grad and x.requires_grad, grad and self.weight.requires_grad,
                autocast_dtype(x.device.type))

    def _timer(self, form: Form, part: str, x: torch.Tensor,
               fmt: torch.memory_format):
        """A function that runs one part of a step through ``form`` once
        (``'forward'``, the ``'input'`` or the ``'weight'`` gradient) on
        detached copies and returns its seconds."""
        x = x.detach()
        weight = self.weight.detach().to(x.dtype)
        grad = None
        if part != 'forward':
            grad = torch.randn_like(
                self._run_form(('grouped', 1), x, weight, fmt))

        def run() -> float:
            start = time.perf_counter()
            if part == 'forward':
                self._run_form(form, x, self._form_weight(form, weight, fmt),
                               fmt)
            else:
                self._form_grad(form, part, x, weight, grad, fmt)
            return time.perf_counter() - start

        return run

    def _time_forms(self,
                    forms: List[Form],
                    x: torch.Tensor,
                    fmt: torch.memory_format,
                    part: str = 'forward') -> List[float]:
        """Seconds of ``part`` in each form (``forms[0]`` is the grouped
        conv): the best of :attr:`timing_rounds` runs after a warm-up run,
        the forms taking turns, so that a burst of load from other
        processes hits them alike and the minimum sees through it. A form
        more than :attr:`max_slowdown` times slower than the fastest so far
        is not run again (its time stays what it was). Timing stops when it
        has cost :attr:`max_tuning_cost` grouped-conv runs; a form not run
        counts as infinitely slow, and one over :attr:`hopeless` times the
        grouped conv is skipped from then on in this process, for inputs of
        this size, dtype and memory format."""
        inf = float('inf')
        with torch.no_grad():
            timers = [self._timer(f, part, x, fmt) for f in forms]
            # oneDNN builds its kernels on a first call: a warm-up run,
            # which only drops the hopeless forms
            warm = [timers[0]()] + [inf] * (len(forms) - 1)
            budget = self.max_tuning_cost * warm[0]
            spent = warm[0]
            for i in range(1, len(forms)):
                key = (forms[i], part, fmt, x.dtype,
                       _size_bucket(x.shape[0] * x.shape[2] * x.shape[3]))
                if key in _HOPELESS or spent > budget:
                    continue
                warm[i] = timers[i]()
                spent += warm[i]
                if warm[i] > self.hopeless * warm[0]:
                    _HOPELESS.add(key)
            best = [inf] * len(forms)
            for _ in range(self.timing_rounds):
                fastest = min(min(best), min(warm))
                for i, timer in enumerate(timers):
                    if spent > budget:
                        break
                    if min(best[i], warm[i]) <= self.max_slowdown * fastest:
                        seconds = timer()
                        best[i] = min(best[i], seconds)
                        spent += seconds
            return [b if b < inf else w for b, w in zip(best, warm)]

    def time_forms(self,
                   x: torch.Tensor,
                   part: str = 'forward') -> Dict[Form, float]:
        """Seconds of one part of a step (``'forward'``, the ``'input'``
        gradient or the ``'weight'`` gradient) in each form that computes
        it (see the module docstring) on input ``x``, measured as the
        autotuning measures them (best of
        :attr:`timing_rounds` runs; a form over :attr:`max_slowdown` times
        the fastest keeps its first time). For a look at what it would
        choose on this machine::

            conv = TunedConv(nn.Conv2d(128, 32, 9, padding=4, groups=16,
                                       bias=False))
            x = torch.randn(8, 128, 28, 28).contiguous(
                memory_format=torch.channels_last)
            conv.time_forms(x, 'weight')
        """
        if part not in PARTS:
            raise ValueError(f'TunedConv.time_forms: part must be one of '
                             f'{PARTS}, got {part!r}')
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'TunedConv.time_forms: x must have shape (N, '
                f'{self.in_channels}, H, W), got {tuple(x.shape)}')
        return self._time_part(x, memory_format(x), part)

    def _time_part(self, x: torch.Tensor, fmt: torch.memory_format,
                   part: str) -> Dict[Form, float]:
        """:meth:`time_forms` on an input known to be in format ``fmt``:
        the forms of ``part`` (:meth:`_part_forms`), timed."""
        forms = self._part_forms(part, x.dtype)
        return dict(zip(forms, self._time_forms(forms, x, fmt, part)))

    def _part_forms(self,
                    part: str,
                    dtype: Optional[torch.dtype] = None) -> List[Form]:
        """The forms of :meth:`forms` that compute one part of a training
        step, the grouped conv first: all for the forward pass, those of
        ``_GRADIENT_FORMS`` for a gradient. The polyphase weight gradient
        sums each tap's four partial gradients after the conv has rounded
        them to its dtype, which in half precision loses digits that the
        conv's own float32 accumulation keeps: not timed for a half
        ``dtype``."""
        forms = self.forms()
        if part == 'forward':
            return forms
        forms = [form for form in forms if form in _GRADIENT_FORMS[part]]
        if part == 'weight' and dtype in (torch.float16, torch.bfloat16):
            return [form for form in forms if form[0] != 'polyphase']
        return forms

    def _fastest(self, times: Dict[Form, float]) -> Form:
        """The fastest form, if clearly faster than the grouped conv."""
        best = min(times, key=times.__getitem__)
        grouped = ('grouped', 1)
        return best if times[best] < self.min_gain * times[grouped] \
            else grouped

    def _choose(self, x: torch.Tensor,
                fmt: torch.memory_format) -> Union[Form, Plan]:
        """The form for inference; in a training step, a plan: the fastest
        form of each part (forward, input gradient, weight gradient)."""
        n, _, h, w = x.shape
        macs = (
            n * h * w * self.out_channels * self.in_channels // self.groups *
            self.kernel_size[0] * self.kernel_size[1] //
            (self.stride[0] * self.stride[1]))
        if macs < self.min_tuned_macs:
            return ('grouped', 1)  # not worth timing
        key = self._key(x, fmt)
        choice = _CHOICES.get(key)
        if choice is None:
            if _ANNOUNCEMENT:
                print_log(_ANNOUNCEMENT.pop(), logger='current')
            choice = self._fastest(self._time_part(x, fmt, 'forward'))
            if torch.is_grad_enabled() and (x.requires_grad
                                            or self.weight.requires_grad):
                plan = [choice]
                for part, needed in (('input', x.requires_grad),
                                     ('weight', self.weight.requires_grad)):
                    plan.append(
                        self._fastest(self._time_part(x, fmt, part)
                                      ) if needed else ('grouped', 1))
                choice = tuple(plan)
            _CHOICES[key] = choice
            _CHOSEN_ON[key] = tuple(x.shape)
        return choice

    def _cached_weight(self, form: Form,
                       fmt: torch.memory_format) -> torch.Tensor:
        """The form's weight, made once per weight version when no gradient
        is needed (inference)."""
        w = self.weight
        key = (form, fmt, w.data_ptr(), w._version, w.dtype, w.device)
        cache = self.conv.__dict__.get('_mmepsa_form_weight')
        if cache is None or cache[0] != key:
            cache = (key, self._form_weight(form, w.detach(), fmt))
            self.conv.__dict__['_mmepsa_form_weight'] = cache
        return cache[1]

    def forward_form(self, x: torch.Tensor, form: Form) -> torch.Tensor:
        """Run ``form`` (one of :meth:`forms`), autograd included, whatever
        the autotuning would choose."""
        if form not in self.forms():
            raise ValueError(f'TunedConv: form {form!r} is not one of '
                             f'{self.forms()}')
        fmt = memory_format(x)
        return self._run_form(form, x,
                              self._form_weight(form, self.weight,
                                                fmt), fmt, self.bias)

    def forward_plan(self, x: torch.Tensor, plan: Plan) -> torch.Tensor:
        """Run the forward pass in ``plan[0]`` and compute the input and
        weight gradients in ``plan[1]`` and ``plan[2]`` (each a form of
        that part: any of :meth:`forms` for the forward pass; for the
        gradients, see the module docstring), whatever the autotuning
        would choose."""
        for part, form in zip(PARTS, plan):
            forms = self._part_forms(part)
            if form not in forms:
                raise ValueError(f'TunedConv: {part} form {form!r} is not '
                                 f'one of {forms}')
        return _PlannedConv.apply(x, self.weight, self.bias, self, plan,
                                  memory_format(x))

    def _forward_training(self, x: torch.Tensor,
                          fmt: torch.memory_format) -> torch.Tensor:
        """A step with gradients: each part in the form chosen for it.
        Under autocast the inputs are cast as autocast casts a conv's, and
        the plan runs on them with autocast off."""
        weight, bias = self.weight, self.bias
        dtype = autocast_dtype(x.device.type)
        if dtype is not None:
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(x.device.type, enabled=False) \
                if dtype is not None else contextlib.nullcontext():
            plan = self._choose(x, fmt)
            if isinstance(plan[0], str):  # one form for every part
                plan = (plan, ) * 3
            if all(form == ('grouped', 1) for form in plan):
                return F.conv2d(x, weight, bias, self.stride, self.padding,
                                self.dilation, self.groups)
            return _PlannedConv.apply(x, weight, bias, self, plan, fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of ``x``: in the form chosen for it where the switch
        autotunes, else the plain grouped conv."""
        conv = self.conv
        if x.dim() != 4 or not autotuning(x.device):
            return conv._conv_forward(x, conv.weight, conv.bias)
        fmt = memory_format(x)
        if torch.is_grad_enabled() and (x.requires_grad
                                        or conv.weight.requires_grad):
            return self._forward_training(x, fmt)
        form = self._choose(x, fmt)
        if form == ('grouped', 1) and fmt == torch.contiguous_format:
            return conv._conv_forward(x, conv.weight, conv.bias)
        return self._run_form(form, x, self._cached_weight(form, fmt), fmt,
                              self.bias)


class _PlannedConv(torch.autograd.Function):
    """A PSA conv whose forward pass, input gradient and weight gradient
    each run in their own exact form (see :meth:`TunedConv.forward_plan`).
    It keeps what a conv keeps for its backward pass: the input and the
    weight."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,
                bias: Optional[torch.Tensor], conv: TunedConv, plan: Plan,
                fmt: torch.memory_format) -> torch.Tensor:
        ctx.conv, ctx.plan, ctx.fmt = conv, plan, fmt
        ctx.save_for_backward(x, weight)
        return conv._run_form(plan[0], x,
                              conv._form_weight(plan[0], weight, fmt), fmt,
                              bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        conv, plan, fmt = ctx.conv, ctx.plan, ctx.fmt
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = conv._form_grad(plan[1], 'input', x, weight, grad, fmt)
        if ctx.needs_input_grad[1]:
            grad_w = conv._form_grad(plan[2], 'weight', x, weight, grad, fmt)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None
