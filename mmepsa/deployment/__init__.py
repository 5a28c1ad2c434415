# Copyright (c) mmepsa contributors. All rights reserved.
"""Deploy a trained mmdet detector (RetinaNet, Faster R-CNN, Mask R-CNN)
to ONNX Runtime and OpenVINO: export (:func:`export_onnx`), run
(:class:`OnnxDetector`, on onnxruntime or OpenVINO in fp32, bf16 or int8:
:func:`create_backend`), save an OpenVINO IR (:func:`save_openvino_ir`),
quantize to int8 (:func:`quantize_int8`), evaluate against PyTorch
(:func:`evaluate_onnx`), time (:func:`compare_latency`). onnx and
onnxruntime are the ``deploy`` extra (``pip install "mmepsa[deploy]"``),
OpenVINO and NNCF the ``openvino`` extra; they are imported when used. The
commands and what was checked: docs/deployment.md."""
from .agreement import DetectionAgreement
from .backends import BACKENDS, PRECISIONS, PrecisionError, create_backend
from .evaluate import evaluate_onnx
from .export import (CheckpointMismatchError, export_onnx, image_settings,
                     load_detector, load_weights, non_standard_ops)
from .files import save_openvino_ir
from .latency import compare_latency, format_latency
from .quantize import quantize_int8
from .runner import (ImageError, OnnxDetector, check_image, draw_detections,
                     load_image, paste_masks, resize_image)
from .wrapper import (SUPPORTED_TYPES, SingleStageExportWrapper,
                      TwoStageExportWrapper, UnsupportedModelError,
                      build_export_wrapper, check_supported)

__all__ = [
    'SUPPORTED_TYPES', 'UnsupportedModelError', 'CheckpointMismatchError',
    'ImageError', 'SingleStageExportWrapper', 'TwoStageExportWrapper',
    'build_export_wrapper', 'check_supported', 'load_detector', 'load_weights',
    'image_settings', 'non_standard_ops', 'export_onnx', 'OnnxDetector',
    'check_image', 'load_image', 'resize_image', 'paste_masks',
    'draw_detections', 'evaluate_onnx', 'DetectionAgreement',
    'compare_latency', 'format_latency', 'BACKENDS', 'PRECISIONS',
    'PrecisionError', 'create_backend', 'save_openvino_ir', 'quantize_int8'
]
