# Copyright (c) mmepsa contributors. All rights reserved.
"""Evaluate an exported ONNX detector under onnxruntime or OpenVINO (fp32,
bf16, int8) over its config's test set with the config's evaluator
(mmdet's ``CocoMetric``), and, given the checkpoint, the PyTorch detector
beside it on the same batches: :func:`evaluate_onnx`, behind
``tools/deployment/onnx_test.py`` and ``make deploy-demo``.

The images come from the config's own test dataloader (mmdet's pipeline:
loading, ``Resize``); the exported side feeds each resized image to its
backend and finishes with :class:`~.runner.OnnxDetector`'s
post-processing (boxes scaled back, masks pasted), the PyTorch side is
``detector.test_step``. Besides each side's metrics, the detections are
matched one to one (:class:`DetectionAgreement`) and their box (and mask)
IoUs reported.
"""
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .agreement import IOU_AGREEMENT, DetectionAgreement
from .export import load_config, load_detector
from .runner import OnnxDetector, build_runners, stack_images

#: The largest difference of mAP allowed between onnxruntime and PyTorch
#: (``ok`` in :func:`evaluate_onnx`'s result).
MAP_TOLERANCE = 0.005
#: ``ok``'s bounds by precision: the largest mAP difference, the smallest
#: matched IoU (None: reported, not bounded; bf16 and int8 move boxes).
TOLERANCES = {
    'fp32': dict(map=MAP_TOLERANCE, iou=IOU_AGREEMENT),
    'bf16': dict(map=0.01, iou=None),
    'int8': dict(map=0.02, iou=None),
    'int8-bf16': dict(map=0.02, iou=None),
}
#: The metrics compared.
COMPARED_METRICS = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50')


def build_test_dataloader(cfg):
    """The config's test dataloader (mmdet's scope), batch size kept."""
    from mmdet.utils import register_all_modules
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return Runner.build_dataloader(cfg.test_dataloader)


def build_evaluator(cfg, dataset_meta: dict):
    """An mmengine ``Evaluator`` of the config's ``test_evaluator``."""
    from mmengine.evaluator import Evaluator
    evaluator = Evaluator(cfg.test_evaluator)
    evaluator.dataset_meta = dataset_meta
    return evaluator


def onnx_predict(model: OnnxDetector, inputs: Sequence[torch.Tensor],
                 data_samples: Sequence) -> list:
    """A batch of the dataloader (each ``(3, h, w)`` uint8, the pipeline's
    resized image) through ``model`` as one batch (stacked top-left, as
    mmdet's data preprocessor stacks it): for each image a
    ``DetDataSample`` with its metainfo and ``pred_instances`` in the
    original image, as ``detector.test_step`` returns them."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    raw = model.infer(*stack_images([img.numpy() for img in inputs]))
    samples = []
    for i, data_sample in enumerate(data_samples):
        result = model.postprocess(raw, data_sample.scale_factor,
                                   data_sample.ori_shape, i)
        pred = InstanceData(
            bboxes=torch.from_numpy(result['bboxes']),
            scores=torch.from_numpy(result['scores']),
            labels=torch.from_numpy(result['labels']))
        if 'masks' in result:
            pred.masks = torch.from_numpy(result['masks'])
        sample = DetDataSample(metainfo=data_sample.metainfo)
        sample.pred_instances = pred
        samples.append(sample)
    return samples


def evaluate_onnx(config,
                  onnx_file: Optional[str] = None,
                  checkpoint: Optional[str] = None,
                  cfg_options: Optional[dict] = None,
                  threads: Optional[int] = None,
                  max_images: Optional[int] = None,
                  backend: str = 'onnxruntime',
                  precision: Optional[str] = None,
                  batch_size: int = 1,
                  models: Optional[Sequence[Tuple[str, str,
                                                  Optional[str]]]] = None,
                  static_shapes: bool = False,
                  streams: int = 1) -> dict:
    """Evaluate ``onnx_file`` under ``backend`` (or each of ``models``)
    over ``config``'s test set with its ``test_evaluator``; with
    ``checkpoint``, PyTorch too (once, whatever the number of models), and
    compare each model with it.

    Args:
        config (str | Config): The detector's config (its test dataloader
            and evaluator are used).
        onnx_file (str): The model exported from it.
        checkpoint (str, optional): The weights it was exported from: also
            evaluate PyTorch (``detector.test_step``) on the same batches.
        cfg_options (dict, optional): Config overrides.
        threads (int, optional): The backend's inference threads.
        batch_size (int): Images per batch, for the model and PyTorch
            alike (stacked as mmdet's data preprocessor stacks them).
            Defaults to 1.
        max_images (int, optional): Stop after this many images (a quick
            check: COCO metrics then count the other images' objects as
            missed, alike for both).
        backend (str): ``onnxruntime`` or ``openvino``. Defaults to
            ``onnxruntime``.
        precision (str, optional): One of
            :data:`~mmepsa.deployment.PRECISIONS` (``int8``, ``int8-bf16``:
            an int8 ``.xml``); None: what the file holds
            (:func:`~mmepsa.deployment.create_backend`).
        models (Sequence[tuple], optional): Several models, each
            ``(file, backend, precision)``, instead of ``onnx_file``, on
            the same batches.
        static_shapes (bool): OpenVINO models compiled for each input shape
            (:class:`~mmepsa.deployment.backends.OpenVINOBackend`).
            Defaults to False.
        streams (int): Each batch split over this many streams
            (:class:`~mmepsa.deployment.OnnxDetector`). Defaults to 1.

    Returns:
        dict: ``images``, ``seconds``, ``metrics`` (under each model's
        label, e.g. ``onnxruntime`` or ``openvino-int8``, and, with a
        checkpoint, ``pytorch``: the evaluator's results) and ``rows``:
        for each model's label ``onnx``, ``backend``, ``precision`` and,
        with a checkpoint, ``differences`` (model - PyTorch, of
        :data:`COMPARED_METRICS`), ``agreement``
        (:meth:`DetectionAgreement.summary`) and ``ok`` (within the
        precision's :data:`TOLERANCES`: for fp32 every difference within
        :data:`MAP_TOLERANCE` and every matched IoU at least
        :data:`IOU_AGREEMENT`). With ``onnx_file``, its row's items are at
        the top level too.

    Raises:
        ValueError: ``batch_size`` < 1, neither ``onnx_file`` nor
            ``models``, or two models of one label.

    Example:
        >>> from mmepsa.deployment import evaluate_onnx
        >>> result = evaluate_onnx(
        ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
        ...     'work_dirs/deploy-demo/mask-rcnn.onnx',
        ...     'work_dirs/demo/epoch_2.pth')  # doctest: +SKIP
        >>> result['ok']  # doctest: +SKIP
        True
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    single = models is None
    if single:
        if onnx_file is None:
            raise ValueError('evaluate_onnx needs onnx_file or models')
        models = [(onnx_file, backend, precision)]
    cfg = load_config(config, cfg_options)
    runners = {}
    for runner in build_runners(models, threads, static_shapes, streams):
        if runner.label in runners:
            raise ValueError(f'two models of one label, {runner.label}: '
                             'evaluate them apart')
        runners[runner.label] = runner
    detector = load_detector(cfg, checkpoint)[0] if checkpoint else None
    cfg.test_dataloader.batch_size = batch_size
    dataloader = build_test_dataloader(cfg)
    meta = dataloader.dataset.metainfo
    evaluators = {} if detector is None else dict(
        pytorch=build_evaluator(cfg, meta))
    evaluators.update({label: build_evaluator(cfg, meta) for label in runners})
    agreements = {label: DetectionAgreement() for label in runners}
    seen, start = 0, time.perf_counter()
    for data in dataloader:
        if detector is not None:
            with torch.no_grad():
                reference = detector.test_step(data)
            evaluators['pytorch'].process(reference, data)
        for label, runner in runners.items():
            samples = onnx_predict(runner, data['inputs'],
                                   data['data_samples'])
            evaluators[label].process(samples, data)
            if detector is not None:
                for ref, test in zip(reference, samples):
                    agreements[label].add(ref.pred_instances,
                                          test.pred_instances)
        seen += len(data['inputs'])
        if max_images and seen >= max_images:
            break
    metrics = {
        name: _plain(evaluator.evaluate(seen))
        for name, evaluator in evaluators.items()
    }
    rows = {}
    for (file, model_backend, _), (label,
                                   runner) in zip(models, runners.items()):
        rows[label] = dict(
            onnx=file, backend=model_backend, precision=runner.precision)
        if detector is not None:
            rows[label].update(
                compare_metrics(metrics, agreements[label].summary(), label,
                                runner.precision))
    result = dict(
        config=cfg.filename,
        checkpoint=checkpoint,
        batch_size=batch_size,
        images=seen,
        seconds=round(time.perf_counter() - start, 1),
        metrics=metrics,
        rows=rows)
    if single:
        result.update(next(iter(rows.values())))
    return result


def compare_metrics(metrics: Dict[str, dict],
                    agreement: dict,
                    label: str = 'onnxruntime',
                    precision: str = 'fp32') -> dict:
    """``differences`` (``metrics[label]`` - ``metrics['pytorch']``) of the
    :data:`COMPARED_METRICS` both have, ``agreement``, ``tolerance`` (the
    ``precision``'s :data:`TOLERANCES`) and ``ok``."""
    ours, ref = metrics[label], metrics['pytorch']
    tolerance = TOLERANCES[precision]
    diffs = {}
    for name in COMPARED_METRICS:
        key = next((k for k in ref if k.split('/')[-1] == name), None)
        if key is not None and key in ours:
            diffs[name] = round(ours[key] - ref[key], 6)
    min_iou = agreement.get('min_iou')
    ok = bool(diffs) and all(
        abs(v) <= tolerance['map']
        for v in diffs.values()) and (tolerance['iou'] is None
                                      or min_iou is None
                                      or min_iou >= tolerance['iou'])
    return dict(
        differences=diffs, agreement=agreement, tolerance=tolerance, ok=ok)


def _plain(metrics: dict) -> dict:
    return {
        k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
        for k, v in (metrics or {}).items()
    }
