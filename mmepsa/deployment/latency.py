# Copyright (c) mmepsa contributors. All rights reserved.
"""Latency of an exported detector under onnxruntime or OpenVINO (fp32,
bf16, int8) against the same detector in PyTorch eager mode, on the CPU:
:func:`compare_latency`, behind ``tools/deployment/onnx_test.py
--latency``.

Rows (all on the same input images, timed in turns by
:func:`mmepsa.analysis.benchmark.time_interleaved`; with several batch
sizes, every row at each of them, the same images split into batches):

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
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .export import load_detector
from .runner import build_runners
from .wrapper import build_export_wrapper

#: The PyTorch rows, beside the exported model's.
PYTORCH_ROWS = ('pytorch', 'pytorch-export-wrapper')


def latency_inputs(shape: Sequence[int],
                   images: Optional[Sequence[str]] = None,
                   seed: int = 0) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 pixels of ``shape`` ``(N, 3, H, W)``: the
    ``images`` (files, taken in turn) each resized to ``H x W``, else
    uniform random pixels (``seed``), which a trained detector finds
    nothing in."""
    n, _, h, w = shape
    if not images:
        rng = np.random.RandomState(seed)
        return rng.randint(0, 256, (n, h, w, 3), dtype=np.uint8)
    import cv2

    from .runner import load_image
    return np.stack([
        cv2.resize(load_image(images[i % len(images)]), (w, h))
        for i in range(n)
    ])


def compare_latency(config,
                    checkpoint: str,
                    onnx_file: Optional[str] = None,
                    shape: Sequence[int] = (1, 3, 800, 1216),
                    threads: int = 2,
                    warmup: int = 2,
                    runs: int = 5,
                    rows: Optional[Sequence[str]] = None,
                    seed: int = 0,
                    cfg_options: Optional[dict] = None,
                    backend: str = 'onnxruntime',
                    precision: Optional[str] = None,
                    models: Optional[Sequence[Tuple[str, str,
                                                    Optional[str]]]] = None,
                    images: Optional[Sequence[str]] = None,
                    batch_sizes: Optional[Sequence[int]] = None,
                    static_shapes: bool = False,
                    streams: int = 1) -> dict:
    """Time ``rows`` on the N images of ``shape`` (``images`` resized to
    it, else uniform random pixels 0-255, ``seed``), run in batches of each
    of ``batch_sizes``, torch and the backends each on ``threads`` threads,
    in turns; record the machine.

    Args:
        config (str | Config): The detector's config.
        checkpoint (str): Its weights (the ones exported).
        onnx_file (str, optional): The exported model, run by ``backend``
            at ``precision`` (OpenVINO: also an IR ``.xml``, the int8 one
            for ``int8``).
        shape (Sequence[int]): ``(N, 3, H, W)``: N images of H x W.
            Defaults to ``(1, 3, 800, 1216)``.
        threads (int): Threads of torch and of the backends. Defaults to 2.
        warmup (int): Untimed rounds first. Defaults to 2.
        runs (int): Timed rounds. Defaults to 5.
        rows (Sequence[str], optional): Which rows: some of the models'
            labels and :data:`PYTORCH_ROWS`. Defaults to all.
        seed (int): Seed of the random pixels. Defaults to 0.
        cfg_options (dict, optional): Config overrides.
        backend (str): ``onnxruntime`` or ``openvino``. Defaults to
            ``onnxruntime``.
        precision (str, optional): One of
            :data:`~mmepsa.deployment.PRECISIONS`; None: what the file
            holds (:func:`~mmepsa.deployment.create_backend`).
        models (Sequence[tuple], optional): Several models, each
            ``(file, backend, precision)``, instead of ``onnx_file``.
        images (Sequence[str], optional): Image files to time on.
        batch_sizes (Sequence[int], optional): Each divides N: a timed
            step runs the N images in batches of that many. Defaults to
            ``(N,)``, one batch.
        static_shapes (bool): OpenVINO models compiled for each input shape
            (:class:`~mmepsa.deployment.backends.OpenVINOBackend`; the
            compiles fall in the warm-up). Defaults to False.
        streams (int): The models' batches split over this many streams,
            the threads shared among them
            (:class:`~mmepsa.deployment.OnnxDetector`). Defaults to 1.

    Returns:
        dict: ``batches``, for each batch size (a string key): ``rows``
        (the time of a step, all N images: ``median_ms``, ``min_ms``,
        ``max_ms``, ``runs_ms``; ``per_image_ms``; ``detections``),
        ``vs_pytorch`` (each model's paired ratio of the times to
        ``pytorch``'s at that batch size, < 1: faster) when both ran and,
        after the first size, ``vs_first_batch_size`` (each row's paired
        ratio to itself at the first size: per image, < 1: cheaper);
        ``rows`` and ``vs_pytorch`` of the first size at the top too;
        ``model_rows`` (the models' labels), ``static_shapes``, ``streams``,
        ``batch_sizes``, ``shape``,
        ``threads``, ``warmup``, ``runs``, ``input`` and ``machine``.

    Raises:
        ValueError: an unknown row, a bad shape or batch size, or
            threads < 1.

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
    shape = tuple(int(v) for v in shape)
    if len(shape) != 4 or shape[0] < 1 or shape[1] != 3:
        raise ValueError(f'shape must be (N, 3, H, W), got {shape}')
    if threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')
    sizes = tuple(int(b) for b in batch_sizes or (shape[0], ))
    if any(b < 1 or shape[0] % b
           for b in sizes) or len(set(sizes)) < len(sizes):
        raise ValueError(f'batch_sizes must be distinct divisors of the '
                         f'{shape[0]} images, got {list(batch_sizes)}')
    if models is None:
        models = [(onnx_file, backend, precision)] if onnx_file else []
    runners = build_runners(models, threads, static_shapes, streams)
    labels = [r.label for r in runners]
    allowed = tuple(labels) + PYTORCH_ROWS
    unknown = [r for r in rows or () if r not in allowed]
    if unknown or (rows is not None and not rows):
        raise ValueError(f'rows must be some of {allowed}, got '
                         f'{list(rows)}')
    rows = tuple(rows or allowed)
    torch.set_num_threads(threads)
    pixels = latency_inputs(shape, images, seed)
    batch = np.ascontiguousarray(
        pixels.transpose(0, 3, 1, 2).astype(np.float32))
    img_shape = np.array([shape[2:]] * shape[0], dtype=np.int64)
    # one batch of images [i, j) per row: the scores of its detections
    run_batch = {
        runner.label:
        (lambda i, j, r=runner: r.infer(batch[i:j], img_shape[i:j])['scores'])
        for runner in runners
    }
    if set(PYTORCH_ROWS) & set(rows):
        detector, cfg = load_detector(config, checkpoint, cfg_options)
        meta = dict(
            img_shape=shape[2:], ori_shape=shape[2:], scale_factor=(1.0, 1.0))
        inputs = [torch.from_numpy(p.transpose(2, 0, 1)) for p in pixels]
        wrapper = build_export_wrapper(detector, cfg.model).eval()

        def run_pytorch(i, j):
            data = dict(
                inputs=inputs[i:j],
                data_samples=[
                    DetDataSample(metainfo=meta) for _ in range(i, j)
                ])
            return torch.cat([
                out.pred_instances.scores for out in detector.test_step(data)
            ])

        def run_wrapper(i, j):
            return wrapper(
                torch.from_numpy(batch[i:j]),
                torch.from_numpy(img_shape[i:j]))[2]

        run_batch['pytorch'] = run_pytorch
        run_batch['pytorch-export-wrapper'] = run_wrapper
    # a row's batch sizes one after the other: the paired ratio between
    # them (vs_first_batch_size) compares two times a few seconds apart
    steps, outputs = {}, {}
    for name in rows:
        for size in sizes:

            def step(name=name, size=size):
                outputs[name, size] = [
                    run_batch[name](i, i + size)
                    for i in range(0, shape[0], size)
                ]

            steps[name, size] = step
    with torch.no_grad():
        times = time_interleaved(steps, torch.device('cpu'), warmup, runs)
    model_rows = [label for label in labels if label in rows]
    batches = {}
    for size in sizes:
        entry = dict(rows={})
        for name in rows:
            row = entry['rows'][name] = summarise_times(times[name, size])
            row['per_image_ms'] = row['median_ms'] / shape[0]
            row['detections'] = int(sum(map(len, outputs[name, size])))
        if 'pytorch' in rows:
            entry['vs_pytorch'] = {
                label: paired_ratio(times[label, size], times['pytorch', size])
                for label in model_rows
            }
        if size != sizes[0]:
            entry['vs_first_batch_size'] = {
                name: paired_ratio(times[name, size], times[name, sizes[0]])
                for name in rows
            }
        batches[str(size)] = entry
    first = batches[str(sizes[0])]
    result = dict(
        shape=list(shape),
        threads=threads,
        warmup=warmup,
        runs=runs,
        input=(f'{len(images)} image(s) resized to {shape[2]}x{shape[3]}'
               if images else f'uniform random pixels 0-255, seed {seed}'),
        model_rows=model_rows,
        static_shapes=bool(static_shapes),
        streams=int(streams),
        batch_sizes=list(sizes),
        batches=batches,
        rows=first['rows'])
    if 'vs_pytorch' in first:
        result['vs_pytorch'] = first['vs_pytorch']
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
    machine under it: a row per timed row and batch size."""
    shape = 'x'.join(str(v) for v in result['shape'])
    lines = [
        f'| {shape}, {result["threads"]} threads | batch | median ms | ms '
        'per image | min-max ms | detections | / pytorch (paired) |',
        '| --- | ---: | ---: | ---: | ---: | ---: | ---: |'
    ]
    for size, entry in result['batches'].items():
        ratios = entry.get('vs_pytorch', {})
        for name, row in entry['rows'].items():
            ratio = ratios.get(name)
            lines.append(f"| {name} | {size} | {row['median_ms']:.1f} | "
                         f"{row['per_image_ms']:.1f} | {row['min_ms']:.1f}-"
                         f"{row['max_ms']:.1f} | {row['detections']} | " +
                         (f"{ratio['median']:.2f} ({ratio['faster_in']}/"
                          f"{ratio['rounds']} faster)" if ratio else '') +
                         ' |')
    lines += [
        '', f"input: {result['input']}", '',
        describe_machine(result['machine'])
    ]
    return '\n'.join(lines)


def describe_machine(m: dict) -> str:
    """:func:`mmepsa.analysis.benchmark.describe_machine`'s line (CPU,
    cores, ISA flags, threads, versions, load) and the deployment
    runtimes' versions."""
    from mmepsa.analysis.benchmark import describe_machine as describe
    return (f"{describe(m)}; onnxruntime {m['onnxruntime']}, openvino "
            f"{m.get('openvino')}, onnx {m['onnx']}")
