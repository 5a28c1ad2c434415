# Copyright (c) mmepsa contributors. All rights reserved.
"""Export a trained mmdet detector (config + checkpoint) to one ONNX file
that plain ``onnxruntime`` runs: :func:`export_onnx`, behind
``tools/deployment/pytorch2onnx.py``.

The file holds the whole detector (normalisation and padding, backbone,
neck, heads, post-processing and NMS, see :mod:`.wrapper`) in standard ONNX
ops, and, as metadata (:data:`METADATA_KEY`), what the runner needs besides:
the test pipeline's resize, the input's channel order, the class names and
the mask threshold. It is written to a temporary file beside the target and
renamed only once it is complete and checked, so a failed export leaves no
file that looks like a model.
"""
import inspect
import json
import os.path as osp
import warnings
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .agreement import IOU_AGREEMENT, DetectionAgreement
from .backends import METADATA_KEY
from .files import atomic_write
from .wrapper import (UnsupportedModelError, build_export_wrapper,
                      check_supported)

#: The graph's inputs: the batch and each image's ``(h, w)`` in it.
INPUT_NAMES = ('input', 'img_shape')

#: Metadata format version.
METADATA_VERSION = 2

#: The ONNX opset of the export (``RoiAlign`` with ``aligned`` needs 16).
DEFAULT_OPSET = 17
MIN_OPSET = 16

#: Test-pipeline transforms the runner reproduces (Resize) or that do not
#: change the image; any other one refuses the export.
PIPELINE_TRANSFORMS = ('LoadImageFromFile', 'LoadAnnotations', 'Resize',
                       'PackDetInputs')

#: mmcv's ``imresize`` interpolations the runner reproduces (OpenCV's).
RESIZE_INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'area', 'lanczos')

#: The image size traced by default (H, W); the graph takes any size.
DEFAULT_TRACE_SHAPE = (320, 320)


class CheckpointMismatchError(ValueError):
    """The checkpoint's weights do not fit the config's detector."""


def deploy_requirements_error(name: str) -> ImportError:
    """The error for a missing optional dependency of the deploy extra."""
    return ImportError(
        f'{name} is needed to export or run ONNX models: pip install '
        '"mmepsa[deploy]" (or pip install -r requirements/deploy.txt)')


def load_config(config, cfg_options: Optional[dict] = None):
    """An mmengine :class:`Config` from a path (or a Config), with
    ``cfg_options`` merged in.

    Raises:
        FileNotFoundError: no such config file.
        ValueError: the config does not load.
    """
    from mmengine.config import Config
    if not isinstance(config, Config):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config not found: {config}')
        try:
            config = Config.fromfile(config)
        except Exception as e:  # noqa: BLE001 - any config error, plainly
            raise ValueError(f'could not load config {config}: '
                             f'{type(e).__name__}: {e}') from e
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def build_detector(cfg) -> nn.Module:
    """The detector of ``cfg`` (an mmengine Config), randomly initialised,
    SyncBN as BN, in eval mode on the CPU
    (:func:`mmepsa.analysis.benchmark.build_detector`)."""
    from mmepsa.analysis.benchmark import build_detector as build
    return build(cfg)


def _state_dict_of(checkpoint, source: str) -> dict:
    state = checkpoint
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(
            f'checkpoint {source} holds no state_dict of tensors (a dict '
            "of tensors, or one under 'state_dict')")
    return {(k[len('module.'):] if k.startswith('module.') else k): v
            for k, v in state.items()}


def _listed(keys: Sequence[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_weights(model: nn.Module,
                 checkpoint: str,
                 config_name: str = 'the config') -> dict:
    """Load ``checkpoint`` into ``model`` with mmepsa's safe loader
    (:func:`mmepsa.utils.checkpoint.load_from_local`: tensors and
    mmengine's training state only, nothing in the file is run), strictly;
    returns the checkpoint's ``meta`` (``{}`` if none).

    Raises:
        FileNotFoundError: no such checkpoint.
        pickle.UnpicklingError: the file holds objects that loading could
            run code with (refused), or is damaged.
        CheckpointMismatchError: its weights do not fit ``model`` (the
            message lists missing, unexpected and mis-shaped keys).
    """
    from mmepsa.utils.checkpoint import load_from_local
    ckpt = load_from_local(checkpoint, map_location='cpu')
    state = _state_dict_of(ckpt, checkpoint)
    own = model.state_dict()
    shapes = [
        f'{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})'
        for k, v in state.items() if k in own and v.shape != own[k].shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        problems = []
        if missing:
            problems.append(f'{len(missing)} weights missing from the '
                            f'checkpoint ({_listed(missing)})')
        if unexpected:
            problems.append(f'{len(unexpected)} weights the model does not '
                            f'have ({_listed(unexpected)})')
        if shapes:
            problems.append(f'{len(shapes)} weights of another shape '
                            f'({_listed(shapes, 3)})')
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint} does not fit the detector of '
            f'{config_name}: ' + '; '.join(problems) +
            '. Was it trained with this config?')
    model.load_state_dict(state, strict=True)
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) else {}


def load_detector(config,
                  checkpoint: str,
                  cfg_options: Optional[dict] = None
                  ) -> Tuple[nn.Module, object]:
    """The trained detector of ``config`` with the weights of
    ``checkpoint``, in eval mode on the CPU, and its Config; the export's
    support is checked first (:func:`~.wrapper.check_supported`), before
    anything is built or loaded. ``detector.dataset_meta`` holds the
    class names (from the checkpoint, else the config).

    Raises:
        FileNotFoundError: no such config or checkpoint.
        ValueError: the config does not load.
        UnsupportedModelError: a detector or head the exporter does not
            support.
        pickle.UnpicklingError, CheckpointMismatchError: see
            :func:`load_weights`.

    Example:
        >>> from mmepsa.deployment import load_detector
        >>> det, cfg = load_detector(
        ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
        ...     'work_dirs/demo/epoch_2.pth')  # doctest: +SKIP
    """
    cfg = load_config(config, cfg_options)
    check_supported(cfg.model)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    detector = build_detector(cfg)
    name = cfg.filename or 'the config'
    meta = load_weights(detector, checkpoint, name)
    dataset_meta = meta.get('dataset_meta') or {}
    if not dataset_meta.get('classes'):
        dataset_meta = _config_metainfo(cfg)
    detector.dataset_meta = dataset_meta
    return detector, cfg


def _config_metainfo(cfg) -> dict:
    """The ``metainfo`` of the config's test (else val) dataset, or mmdet's
    dataset class's ``METAINFO``; ``{}`` when neither is found."""
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        dataset = loader.get('dataset') if loader else None
        if not dataset:
            continue
        if dataset.get('metainfo'):
            return dict(dataset.metainfo)
        try:
            from mmdet.registry import DATASETS
            from mmdet.utils import register_all_modules
            register_all_modules(init_default_scope=False)
            dataset_cls = DATASETS.get(dataset.get('type'))
            return dict(getattr(dataset_cls, 'METAINFO', {}) or {})
        except Exception:  # noqa: BLE001 - a name only, best effort
            return {}
    return {}


def test_pipeline(cfg) -> list:
    """The config's test pipeline (``test_dataloader.dataset.pipeline``,
    else ``test_pipeline``)."""
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}
    pipeline = (loader.get('dataset') or {}).get('pipeline')
    return list(pipeline or cfg.get('test_pipeline') or [])


def image_settings(cfg) -> dict:
    """What the runner does before the graph, from the test pipeline: the
    channel order of ``LoadImageFromFile`` and mmdet's ``Resize``
    (``scale`` as (w, h), or ``scale_factor``, and ``keep_ratio``).

    Raises:
        UnsupportedModelError: a transform other than
            :data:`PIPELINE_TRANSFORMS`, or a ``LoadImageFromFile`` that
            does not load colour images.
    """
    resize = None
    channel_order = 'bgr'
    for t in test_pipeline(cfg):
        kind = str(t.get('type', '')).split('.')[-1]
        if kind not in PIPELINE_TRANSFORMS:
            raise UnsupportedModelError(
                f'test pipeline transform {kind!r} is not supported by the '
                'ONNX runner; supported: ' + ', '.join(PIPELINE_TRANSFORMS))
        if kind == 'LoadImageFromFile':
            if t.get('color_type', 'color') != 'color':
                raise UnsupportedModelError(
                    'LoadImageFromFile.color_type='
                    f"{t.get('color_type')!r} is not supported by the ONNX "
                    "runner; supported: 'color'")
            if t.get('imdecode_backend', 'cv2') not in ('cv2', 'turbojpeg'):
                channel_order = 'rgb'
        elif kind == 'Resize':
            interpolation = t.get('interpolation', 'bilinear')
            if t.get('backend', 'cv2') != 'cv2' or \
                    interpolation not in RESIZE_INTERPOLATIONS:
                raise UnsupportedModelError(
                    f"Resize(backend={t.get('backend', 'cv2')!r}, "
                    f'interpolation={interpolation!r}) is not supported by '
                    "the ONNX runner; supported: backend 'cv2' with "
                    'interpolation ' + ', '.join(RESIZE_INTERPOLATIONS))
            scale = t.get('scale')
            resize = dict(
                scale=None if scale is None else
                ([int(scale), int(scale)]
                 if isinstance(scale, int) else [int(v) for v in scale]),
                scale_factor=t.get('scale_factor'),
                keep_ratio=bool(t.get('keep_ratio', False)),
                interpolation=interpolation)
    return dict(channel_order=channel_order, resize=resize)


def _export_kwargs() -> dict:
    """The TorchScript exporter: ``dynamo=False`` where torch has the
    argument (the dynamo exporter is the default since torch 2.9)."""
    params = inspect.signature(torch.onnx.export).parameters
    return {'dynamo': False} if 'dynamo' in params else {}


def non_standard_ops(model) -> list:
    """``domain::op`` of the nodes of an ``onnx.ModelProto`` that are not
    in the default ONNX domain (a custom-op library would be needed)."""
    return sorted({
        f'{n.domain}::{n.op_type}'
        for n in model.graph.node if n.domain not in ('', 'ai.onnx')
    })


def export_onnx(config,
                checkpoint: str,
                out_file: str,
                cfg_options: Optional[dict] = None,
                opset: int = DEFAULT_OPSET,
                shape: Sequence[int] = DEFAULT_TRACE_SHAPE,
                verify: bool = True) -> dict:
    """Export the detector of ``config`` with the weights of ``checkpoint``
    to ``out_file``, in standard ONNX ops only (checked). Inputs:
    ``input`` ``(N, 3, H, W)`` float32 (the resized images' pixels in the
    channel order the pipeline loads them, stacked top-left; any N, H and
    W) and ``img_shape`` ``(N, 2)`` int64 (each image's ``(h, w)`` in it).
    Outputs, every image's detections grouped by image, highest score
    first: ``image_ids`` ``(K,)`` int64, ``boxes`` ``(K, 4)``, ``scores``
    ``(K,)``, ``labels`` ``(K,)`` int64 and, for Mask R-CNN, ``masks``
    ``(K, 28, 28)``.

    With ``verify``, onnxruntime runs the file on a batch of two images of
    other sizes than the traced one and its detections are matched with
    PyTorch's (:func:`verify_onnx`) before the file is put in place.

    Args:
        config (str | Config): The detector's config.
        checkpoint (str): Its trained weights (loaded safely).
        out_file (str): Where to write the model.
        cfg_options (dict, optional): Config overrides.
        opset (int): ONNX opset, >= 16. Defaults to 17.
        shape (Sequence[int]): (H, W) of the image traced. Defaults to
            (320, 320).
        verify (bool): Check onnxruntime against PyTorch. Defaults to True.

    Returns:
        dict: ``out_file``, ``outputs``, ``ops`` (the op types used),
        ``metadata`` and, with ``verify``, ``agreement`` (what
        :func:`verify_onnx` returns).

    Raises:
        ValueError: ``opset`` < 16, or a bad ``shape``; see also
            :func:`load_detector` and :func:`image_settings`.
        RuntimeError: the graph has non-standard ops, or onnxruntime's
            results differ from PyTorch's.

    Example:
        >>> from mmepsa.deployment import export_onnx
        >>> info = export_onnx(
        ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
        ...     'work_dirs/demo/epoch_2.pth',
        ...     'work_dirs/deploy-demo/mask-rcnn.onnx')  # doctest: +SKIP
        >>> info['outputs']  # doctest: +SKIP
        ['image_ids', 'boxes', 'scores', 'labels', 'masks']
    """
    try:
        import onnx
    except ImportError:
        raise deploy_requirements_error('onnx') from None
    if opset < MIN_OPSET:
        raise ValueError(f'opset must be >= {MIN_OPSET} (RoiAlign with '
                         f'aligned=True), got {opset}')
    if len(shape) != 2 or min(shape) < 32:
        raise ValueError(f'shape must be (H, W) of at least 32, got {shape}')
    cfg = load_config(config, cfg_options)
    settings = image_settings(cfg)
    detector, cfg = load_detector(cfg, checkpoint)
    wrapper = build_export_wrapper(detector, cfg.model).eval()
    output_names = list(wrapper.output_names)
    metadata = dict(
        version=METADATA_VERSION,
        model=cfg.model.type,
        config=osp.basename(cfg.filename or ''),
        classes=list(detector.dataset_meta.get('classes') or []),
        input=dict(
            name='input',
            layout='NCHW',
            dtype='float32',
            channel_order=settings['channel_order'],
            size_divisor=wrapper.size_divisor,
            img_shape='img_shape: (N, 2) int64, (h, w) of each image, '
            'stacked top-left in input'),
        resize=settings['resize'],
        outputs=output_names,
        image_ids='the batch index of each detection; detections are '
        'grouped by image, highest score first',
        boxes='x1, y1, x2, y2 in the input image (divide by the resize '
        'scale factor for the original image)',
        mask_thr_binary=(float(cfg.model.test_cfg.rcnn.mask_thr_binary)
                         if 'masks' in output_names else None),
        opset=opset)

    with atomic_write(out_file) as tmp:
        torch.manual_seed(0)
        example = (torch.rand(1, 3, *shape) * 255,
                   torch.tensor([list(shape)], dtype=torch.long))
        dynamic = {
            'input': {
                0: 'batch',
                2: 'height',
                3: 'width'
            },
            'img_shape': {
                0: 'batch'
            }
        }
        dynamic.update({name: {0: 'num_dets'} for name in output_names})
        with torch.no_grad(), warnings.catch_warnings():
            # the TorchScript exporter's deprecation and tracer warnings
            warnings.simplefilter('ignore')
            torch.onnx.export(
                wrapper,
                example,
                tmp,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=output_names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
                **_export_kwargs())
        model = onnx.load(tmp)
        custom = non_standard_ops(model)
        if custom:
            raise RuntimeError(
                'the exported graph has ops outside the default ONNX domain '
                f'({", ".join(custom)}): onnxruntime would need a custom-op '
                'library')
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        info = dict(
            out_file=out_file,
            outputs=output_names,
            ops=sorted({n.op_type
                        for n in model.graph.node}),
            metadata=metadata)
        del model
        if verify:
            info['agreement'] = verify_onnx(wrapper, tmp, shape)
    return info


def verify_onnx(wrapper: nn.Module,
                onnx_file: str,
                shape: Sequence[int],
                iou: float = IOU_AGREEMENT,
                score_atol: float = 1e-3) -> dict:
    """Run ``onnx_file`` with onnxruntime and ``wrapper`` with PyTorch on
    a batch of two random images of other sizes than ``shape`` (the first
    + 32 px on both sides, the second smaller, padded into the batch), and
    match their detections as the evaluator does
    (:class:`~mmepsa.deployment.DetectionAgreement`): image by image, same
    label, box IoU >= ``iou``, scores within ``score_atol``. Detections
    whose scores are nearly equal may come out in either order, so a
    detection only one side has is allowed where a cut falls
    (``score_thr``, ``nms_pre``, ``max_per_img``): its score at most
    ``score_atol`` above the higher of the two sides' lowest scores.

    Returns:
        dict: :meth:`DetectionAgreement.summary` of the two.

    Raises:
        RuntimeError: a detection unmatched above the cut, a matched one
            below ``iou`` or a score difference above ``score_atol``.
    """
    from mmengine.structures import InstanceData

    from .backends import create_session
    session = create_session(onnx_file)
    g = torch.Generator().manual_seed(1)
    h, w = shape[0] + 32, shape[1] + 32
    img = torch.rand(2, 3, h, w, generator=g) * 255
    img_shape = torch.tensor([[h, w], [h - 40, w - 24]])
    outs = session.run(
        None, dict(zip(INPUT_NAMES, (img.numpy(), img_shape.numpy()))))
    with torch.no_grad():
        expected = wrapper(img, img_shape)
    names = list(wrapper.output_names)
    total = DetectionAgreement(match_iou=iou)

    def image_dets(values, image: int) -> InstanceData:
        values = dict(zip(names, (torch.as_tensor(v) for v in values)))
        keep = values['image_ids'] == image
        return InstanceData(
            bboxes=values['boxes'][keep],
            scores=values['scores'][keep],
            labels=values['labels'][keep])

    for image in range(len(img)):
        ref, test = image_dets(expected, image), image_dets(outs, image)
        agreement = DetectionAgreement(match_iou=iou)
        agreement.add(ref, test)
        total.merge(agreement)
        cut = max([
            float(ref.scores.min()) if len(ref) else 0.0,
            float(test.scores.min()) if len(test) else 0.0
        ])
        summary = agreement.summary()
        problem = None
        if summary['max_unmatched_score'] is not None and \
                summary['max_unmatched_score'] > cut + score_atol:
            problem = (
                f"a detection of score {summary['max_unmatched_score']:.4g}"
                ' found by one runtime only')
        elif (summary['max_score_diff'] or 0) > score_atol:
            problem = (
                f"scores differ by up to {summary['max_score_diff']:.3g}"
                f' (limit {score_atol})')
        if problem:
            raise RuntimeError(
                f'onnxruntime and PyTorch disagree on {onnx_file}, image '
                f'{image} of the check batch: {problem}')
    return total.summary()


__all__ = [
    'METADATA_KEY', 'CheckpointMismatchError', 'UnsupportedModelError',
    'export_onnx', 'load_detector', 'load_weights', 'load_config',
    'image_settings', 'non_standard_ops', 'verify_onnx'
]
