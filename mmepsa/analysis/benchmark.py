# Copyright (c) mmepsa contributors. All rights reserved.
"""What the benchmark and analysis tools share (as ``mmdet/utils/
benchmark.py`` holds what ``tools/analysis_tools/benchmark.py`` calls):

* :func:`parse_hw` / :func:`parse_nchw`: the ``--shape H [W]`` and
  ``NxHxW`` input sizes of the tools;
* :func:`time_interleaved` / :func:`time_runs`: the timing loop (warm-up
  runs discarded, CUDA synchronised around every run),
  :func:`summarise_times` and :func:`paired_ratio`;
* :func:`read_memory` / :func:`reset_peak_memory`: the process's resident
  memory and its high-water mark, from ``/proc/self`` (Linux);
* :func:`build_detector` / :func:`detector_inputs`: a detector from its
  config, and a random batch for it;
* :func:`machine_info`: which machine a measurement was made on (CPU model
  and ISA flags, threads, GPU, library versions), recorded with every
  result.
"""
import contextlib
import datetime
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

#: The CPU flags that decide which kernels oneDNN and inductor use.
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16')

# ---------------------------------------------------------------- shapes ---


def parse_hw(values: Optional[Sequence[int]],
             default: Sequence[int]) -> Tuple[int, int]:
    """``--shape H [W]``: ``(H, W)``; ``default`` when ``values`` is None.

    Raises:
        ValueError: not one or two positive sizes.
    """
    values = list(default if values is None else values)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ValueError(f'--shape takes H or H W, got {values}')
    if min(values) < 1:
        raise ValueError(f'--shape must be positive, got {values}')
    return values[0], values[1]


def parse_nchw(text: str) -> Tuple[int, int, int, int]:
    """``8x224x224`` or ``1x800x1216`` (NxHxW) -> ``(N, 3, H, W)``.

    Raises:
        ValueError: not three positive ints joined by ``x``.
    """
    try:
        n, h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise ValueError(
            f'size must be NxHxW (e.g. 8x224x224), got {text!r}') from None
    if min(n, h, w) < 1:
        raise ValueError(f'size must be positive: {text!r}')
    return n, 3, h, w


def fmt_nchw(shape: Sequence[int]) -> str:
    """``(1, 3, 800, 1216)`` -> ``'1x3x800x1216'``."""
    return 'x'.join(str(int(v)) for v in shape)


# ---------------------------------------------------------------- timing ---


def autocast(device: torch.device, precision: str):
    """float16 autocast for ``precision='amp'``, else nothing (torch 2.1
    refuses even a disabled float16 autocast on the CPU)."""
    if precision != 'amp':
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(steps: Dict[str, Callable], device: torch.device,
                     warmup: int, runs: int) -> Dict[str, List[float]]:
    """Seconds per call of each of ``steps``, the steps taking turns run
    after run (so that load on the machine hits them alike), in reverse
    order every other round (so that no step always follows the same one);
    the first ``warmup`` rounds are not kept. The i-th time of every step
    comes from the same round (see :func:`paired_ratio`)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f'need runs >= 1 and warmup >= 0, got runs={runs}, '
                         f'warmup={warmup}')
    times = {name: [] for name in steps}
    order = list(steps.items())
    for i in range(warmup + runs):
        for name, step in order if i % 2 == 0 else order[::-1]:
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(times: Sequence[float], reference: Sequence[float]) -> dict:
    """Two steps timed by :func:`time_interleaved`, compared round by
    round: the median of ``times[i] / reference[i]`` and in how many rounds
    ``times`` was the faster. A slow spell on the machine that spans a
    round slows both alike, so this ratio moves less with the machine's
    load than the ratio of the two medians does."""
    if len(times) != len(reference) or not times:
        raise ValueError('paired_ratio needs two equally long, non-empty '
                         f'series, got {len(times)} and {len(reference)}')
    return dict(
        median=statistics.median(t / r for t, r in zip(times, reference)),
        faster_in=sum(t < r for t, r in zip(times, reference)),
        rounds=len(times))


def time_runs(fn: Callable, device: torch.device, warmup: int,
              runs: int) -> List[float]:
    """Seconds per call of ``fn()`` under ``torch.no_grad``, one value per
    timed run."""
    with torch.no_grad():
        return time_interleaved({'fn': fn}, device, warmup, runs)['fn']


def summarise_times(times: Sequence[float]) -> dict:
    """Median, min, max and every run, in milliseconds."""
    return dict(
        median_ms=statistics.median(times) * 1000,
        min_ms=min(times) * 1000,
        max_ms=max(times) * 1000,
        runs_ms=[t * 1000 for t in times])


# ---------------------------------------------------------------- memory ---


def read_memory() -> Dict[str, float]:
    """Current (``VmRSS``) and peak (``VmHWM``) resident memory of this
    process in MiB, from ``/proc/self/status``.

    Raises:
        OSError: no ``/proc`` (not Linux).
    """
    values = {}
    with open('/proc/self/status') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    if len(values) != 2:
        raise OSError('VmRSS/VmHWM not in /proc/self/status')
    return dict(rss_mib=values['VmRSS'], peak_rss_mib=values['VmHWM'])


def reset_peak_memory() -> None:
    """Reset this process's ``VmHWM`` to its current resident set
    (``/proc/self/clear_refs``, Linux)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


# ------------------------------------------------------------- detectors ---


def build_detector(config, cfg_options: Optional[dict] = None, device='cpu'):
    """The detector of ``config`` (a path, an ``mmdet::`` name or a
    :class:`Config`), randomly initialised (torch's default, seeded by the
    caller), in eval mode, SyncBN turned into BN, on ``device``."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.hub import get_config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    register_all_modules(init_default_scope=False)
    if isinstance(config, Config):
        cfg = config
    elif '::' in config:
        cfg = get_config(config)
    else:
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmdet')):
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).to(device).eval()


def detector_inputs(shape: Sequence[int],
                    batch_size: int = 1,
                    device='cpu') -> tuple:
    """A random batch ``(inputs, data_samples)`` of ``batch_size`` images of
    ``shape`` (H, W), already preprocessed, for ``model(inputs,
    data_samples, mode=...)``."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = shape
    meta = dict(
        img_shape=(h, w),
        ori_shape=(h, w),
        pad_shape=(h, w),
        batch_input_shape=(h, w),
        scale_factor=(1.0, 1.0))
    samples = []
    for _ in range(batch_size):
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData()
        samples.append(sample)
    return torch.rand(batch_size, 3, h, w, device=device), samples


class EPSANetClassifier(torch.nn.Module):
    """EPSANet + global average pooling + a linear head: the paper's
    ImageNet classifier, whose params and FLOPs the paper reports."""

    def __init__(self, depth: int, num_classes: int = 1000) -> None:
        super().__init__()
        from mmepsa.models import EPSANet
        self.backbone = EPSANet(depth=depth, out_indices=(3, ))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(self.backbone.feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.backbone(x)[-1])
        return self.fc(x.flatten(1))


# --------------------------------------------------------------- machine ---


def _cpu_model_and_flags() -> Tuple[str, List[str]]:
    model, flags = '', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and not model:
                    model = value.strip()
                elif key in ('flags', 'Features') and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return model, [f for f in ISA_FLAGS if f in flags]


def machine_info(device='cpu') -> dict:
    """Which machine and software a measurement was made on: the CPU model
    and its :data:`ISA_FLAGS`, the cores, torch's threads, the GPU (when
    ``device`` is CUDA), the load average and the library versions."""
    import mmcv
    import mmengine
    cpu, flags = _cpu_model_and_flags()
    device = torch.device(device)
    info = dict(
        date=datetime.date.today().isoformat(),
        cpu=cpu,
        isa_flags=flags,
        cpu_count=os.cpu_count(),
        threads=torch.get_num_threads(),
        device=str(device),
        gpu=(torch.cuda.get_device_name(device)
             if device.type == 'cuda' else None),
        load_average=[round(v, 2) for v in os.getloadavg()],
        python=platform.python_version(),
        torch=torch.__version__,
        mmcv=mmcv.__version__,
        mmengine=mmengine.__version__)
    try:
        import mmdet
        info['mmdet'] = mmdet.__version__
    except ImportError:  # pragma: no cover - mmdet is a requirement
        info['mmdet'] = None
    return info


def describe_machine(info: dict) -> str:
    """One line for a table header, from :func:`machine_info`."""
    flags = ', '.join(info['isa_flags']) or 'none of ' + '/'.join(ISA_FLAGS)
    where = info['cpu'] + (f", GPU {info['gpu']}" if info.get('gpu') else '')
    return (f"{where} ({info['cpu_count']} cores; {flags}); "
            f"{info['threads']} threads; torch {info['torch']}, mmcv "
            f"{info['mmcv']}, mmdet {info['mmdet']}; load average "
            f"{info['load_average'][0]:.2f}")
