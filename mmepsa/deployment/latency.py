# Copyright (c) mmepsa contributors. All rights reserved.
"""Latency of an exported detector under onnxruntime or OpenVINO (fp32,
bf16, int8) against the same detector in PyTorch eager mode, on the CPU:
:func:`compare_latency`, behind ``tools/deployment/onnx_test.py
--latency``.

Rows (all on the same input image, timed in turns by
:func:`mmepsa.analysis.benchmark.time_interleaved`):

* the exported model, named by its backend and precision (``onnxruntime``,
  ``openvino``, ``openvino-bf16``, ``openvino-int8``:
  :func:`~mmepsa.deployment.backends.backend_label`): one run of the graph
  (pre-processing, detector, post-processing and NMS; the runner's mask
  pasting not included);
* ``pytorch``: mmdet's ``detector.test_step`` in eager mode (data
  preprocessor, ``predict`` with its post-processing, masks pasted into
  the image), what ``tools/test.py`` runs;
* ``pytorch-export-wrapper``: the export wrapper in eager mode, the very
  computation the ``.onnx`` file holds.
"""
from typing import Optional, Sequence

import numpy as np
import torch

from .backends import BACKENDS, PRECISIONS, backend_label
from .export import load_detector
from .runner import OnnxDetector
from .wrapper import build_export_wrapper

#: The rows :func:`compare_latency` times by default (onnxruntime's).
LATENCY_ROWS = ('onnxruntime', 'pytorch', 'pytorch-export-wrapper')
#: The PyTorch rows, beside the exported model's.
PYTORCH_ROWS = ('pytorch', 'pytorch-export-wrapper')
#: The names of the exported model's row, by backend and precision.
MODEL_ROWS = tuple(
    dict.fromkeys(
        backend_label(b, p) for b in BACKENDS for p in PRECISIONS
        if b == 'openvino' or p == 'fp32'))


def compare_latency(config,
                    checkpoint: str,
                    onnx_file: str,
                    shape: Sequence[int] = (1, 3, 800, 1216),
                    threads: int = 2,
                    warmup: int = 2,
                    runs: int = 5,
                    rows: Optional[Sequence[str]] = None,
                    seed: int = 0,
                    cfg_options: Optional[dict] = None,
                    backend: str = 'onnxruntime',
                    precision: Optional[str] = None) -> dict:
    """Time ``rows`` on one random image of ``shape`` (uniform pixels
    0-255, ``seed``), torch and the backend each on ``threads`` threads,
    and record the machine.

    Args:
        config (str | Config): The detector's config.
        checkpoint (str): Its weights (the ones exported).
        onnx_file (str): The exported model (OpenVINO: also an IR ``.xml``,
            the int8 one for ``int8``).
        shape (Sequence[int]): ``(1, 3, H, W)`` input. Defaults to
            ``(1, 3, 800, 1216)``.
        threads (int): Threads of torch and of onnxruntime. Defaults to 2.
        warmup (int): Untimed rounds first. Defaults to 2.
        runs (int): Timed rounds. Defaults to 5.
        rows (Sequence[str], optional): Which rows: some of the model's
            label and :data:`PYTORCH_ROWS`. Defaults to all.
        seed (int): Seed of the input image. Defaults to 0.
        cfg_options (dict, optional): Config overrides.
        backend (str): ``onnxruntime`` or ``openvino``. Defaults to
            ``onnxruntime``.
        precision (str, optional): ``fp32``, ``bf16`` or ``int8``; None:
            what the file holds (:func:`~mmepsa.deployment.create_backend`).

    Returns:
        dict: ``rows`` (``median_ms``, ``min_ms``, ``max_ms``, ``runs_ms``,
        ``detections``), ``model_row`` (the model's label),
        ``<label>_vs_pytorch`` (e.g. ``onnxruntime_vs_pytorch``: paired
        ratio of the times, < 1: the model faster) when both rows ran,
        ``shape``, ``threads``, ``warmup``, ``runs`` and ``machine``.

    Raises:
        ValueError: an unknown row, a batch other than 1, or threads < 1.

    Example:
        >>> from mmepsa.deployment import compare_latency
        >>> result = compare_latency(
        ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
        ...     'work_dirs/demo/epoch_2.pth',
        ...     'work_dirs/deploy-demo/mask-rcnn.onnx')  # doctest: +SKIP
        >>> result['rows']['onnxruntime']['median_ms']  # doctest: +SKIP
        1234.5
    """
    from mmdet.structures import DetDataSample

    from mmepsa.analysis.benchmark import (paired_ratio, summarise_times,
                                           time_interleaved)
    allowed = MODEL_ROWS + PYTORCH_ROWS
    unknown = [r for r in rows or () if r not in allowed]
    if unknown or (rows is not None and not rows):
        raise ValueError(f'rows must be some of {allowed}, got '
                         f'{list(rows)}')
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4 or shape[0] != 1 or shape[1] != 3:
        raise ValueError('shape must be (1, 3, H, W) (the exported graph '
                         f'takes one image), got {shape}')
    if threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')
    torch.set_num_threads(threads)
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, shape[1:], dtype=np.uint8)
    inputs = pixels[None].astype(np.float32)
    steps, outputs = {}, {}
    label = None
    if rows is None or set(rows) - set(PYTORCH_ROWS):
        model = OnnxDetector(
            onnx_file, threads=threads, backend=backend, precision=precision)
        label = model.label
        asked = [r for r in rows or (label, ) if r not in PYTORCH_ROWS]
        if asked != [label]:
            raise ValueError(f'rows name the model {asked}, but {onnx_file} '
                             f'runs as {label!r}')

        def run_model():
            outputs[label] = model.infer(inputs)['scores']

        steps[label] = run_model
        rows = rows or (label, ) + PYTORCH_ROWS
    if set(PYTORCH_ROWS) & set(rows):
        detector, cfg = load_detector(config, checkpoint, cfg_options)
        h, w = shape[2:]
        meta = dict(
            img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
        data = dict(
            inputs=[torch.from_numpy(pixels)],
            data_samples=[DetDataSample(metainfo=meta)])
        wrapper = build_export_wrapper(detector, cfg.model).eval()
        tensor = torch.from_numpy(inputs)
        img_shape = torch.tensor([[h, w]] * len(tensor))

        def run_pytorch():
            out = detector.test_step(data)[0].pred_instances
            outputs['pytorch'] = out.scores

        def run_wrapper():
            outputs['pytorch-export-wrapper'] = wrapper(tensor, img_shape)[2]

        if 'pytorch' in rows:
            steps['pytorch'] = run_pytorch
        if 'pytorch-export-wrapper' in rows:
            steps['pytorch-export-wrapper'] = run_wrapper
    steps = {name: steps[name] for name in rows}
    with torch.no_grad():
        times = time_interleaved(steps, torch.device('cpu'), warmup, runs)
    result_rows = {}
    for name, values in times.items():
        result_rows[name] = summarise_times(values)
        result_rows[name]['detections'] = int(len(outputs[name]))
    result = dict(
        shape=list(shape),
        threads=threads,
        warmup=warmup,
        runs=runs,
        input=f'uniform random pixels 0-255, seed {seed}',
        model_row=label,
        rows=result_rows)
    if label in times and 'pytorch' in times:
        result[f'{label}_vs_pytorch'] = paired_ratio(times[label],
                                                     times['pytorch'])
    result['machine'] = deploy_machine_info(threads)
    return result


def deploy_machine_info(threads: int) -> dict:
    """:func:`mmepsa.analysis.benchmark.machine_info` plus the threads
    given to the exported model's backend and the versions of onnx,
    onnxruntime and openvino."""
    from mmepsa.analysis.benchmark import machine_info
    info = machine_info('cpu')
    info['onnxruntime_threads'] = threads
    for name in ('onnx', 'onnxruntime', 'openvino', 'torchvision'):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def format_latency(result: dict) -> str:
    """A Markdown table of :func:`compare_latency`'s result, with the
    machine under it."""
    shape = 'x'.join(str(v) for v in result['shape'])
    lines = [
        f'| {shape}, {result["threads"]} threads | median ms | min-max ms '
        '| detections |', '| --- | ---: | ---: | ---: |'
    ]
    for name, row in result['rows'].items():
        lines.append(f"| {name} | {row['median_ms']:.1f} | "
                     f"{row['min_ms']:.1f}-{row['max_ms']:.1f} | "
                     f"{row['detections']} |")
    label = result.get('model_row', 'onnxruntime')
    ratio = result.get(f'{label}_vs_pytorch')
    if ratio:
        lines.append('')
        lines.append(f'{label} / pytorch, paired median: '
                     f"{ratio['median']:.2f} (faster in "
                     f"{ratio['faster_in']} of {ratio['rounds']} rounds)")
    m = result['machine']
    runtime = (f"openvino {m.get('openvino')}" if
               (label or '').startswith('openvino') else
               f"onnxruntime {m['onnxruntime']}")
    lines.append('')
    lines.append(f"{m['cpu']} ({m['cpu_count']} cores; "
                 f"{', '.join(m['isa_flags']) or 'no listed ISA flags'}); "
                 f"torch {m['torch']} ({m['threads']} threads), {runtime}, "
                 f"onnx {m['onnx']}; load average "
                 f"{m['load_average'][0]:.2f}")
    return '\n'.join(lines)
