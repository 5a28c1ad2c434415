# Copyright (c) mmepsa contributors. All rights reserved.
"""Run an ONNX detector exported by :func:`~mmepsa.deployment.export_onnx`
with plain onnxruntime or OpenVINO (fp32, bf16, int8; also an OpenVINO IR
of it): :class:`OnnxDetector`.

The runner needs numpy, OpenCV and the runtime only (no torch, mmcv or
mmdet; the backends: :mod:`~mmepsa.deployment.backends`). It does what the
graph does not, as mmdet's test pipeline and heads do:

1. load the image (:func:`load_image`: 8-bit, 3 channels, as mmcv's
   ``LoadImageFromFile``; anything else is refused with a message);
2. resize it as the config's ``Resize`` (:func:`resize_image`, mmcv's
   ``imrescale``/``imresize``; the settings travel in the model's metadata);
3. run the graph (normalisation, padding, the detector, NMS);
4. scale the boxes back to the original image and, for Mask R-CNN, paste
   each ``28 x 28`` mask probability map into it at its box and threshold
   it (:func:`paste_masks`, mmdet's ``_do_paste_mask`` on the CPU).

Example:
    >>> from mmepsa.deployment import OnnxDetector
    >>> model = OnnxDetector('work_dirs/deploy-demo/'
    ...                      'mask-rcnn_epsanet50-s_fpn_demo-shapes.onnx'
    ...                      )  # doctest: +SKIP
    >>> result = model('data/demo_shapes/val/000000.png')  # doctest: +SKIP
    >>> sorted(result)  # doctest: +SKIP
    ['bboxes', 'labels', 'masks', 'scores']
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .backends import METADATA_KEY, create_backend, create_session

__all__ = [
    'METADATA_KEY', 'CV2_INTERP', 'ImageError', 'create_session',
    'check_image', 'load_image', 'resize_image', 'paste_masks', 'stack_images',
    'OnnxDetector', 'draw_detections'
]

#: mmcv's interpolation names -> OpenCV's flags.
CV2_INTERP = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


class ImageError(ValueError):
    """An image the detector cannot take (unreadable, or not 8-bit with 3
    channels)."""


def check_image(img, source: str = 'the image') -> np.ndarray:
    """``img`` if it is an ``(H, W, 3)`` uint8 array, else
    :class:`ImageError` naming what it is."""
    if not isinstance(img, np.ndarray):
        raise ImageError(f'{source} must be a numpy array (H, W, 3), got '
                         f'{type(img).__name__}')
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] != 3):
        channels = 1 if img.ndim == 2 else img.shape[2]
        kind = {1: ' (grayscale)', 4: ' (with alpha)'}.get(channels, '')
        raise ImageError(
            f'{source} has {channels} channel(s){kind}; the detector takes '
            '3-channel colour images: convert it first (e.g. '
            'cv2.cvtColor with COLOR_GRAY2BGR or COLOR_BGRA2BGR)')
    if img.ndim != 3:
        raise ImageError(f'{source} must have shape (H, W, 3), got '
                         f'{img.shape}')
    if img.dtype != np.uint8:
        raise ImageError(f'{source} has dtype {img.dtype}; the detector '
                         'takes 8-bit (uint8) images')
    if min(img.shape[:2]) < 1:
        raise ImageError(f'{source} is empty: shape {img.shape}')
    return img


def load_image(path: str, channel_order: str = 'bgr') -> np.ndarray:
    """The image at ``path`` as an ``(H, W, 3)`` uint8 array in
    ``channel_order``, as mmcv's ``LoadImageFromFile`` (OpenCV, colour,
    EXIF orientation applied) loads it; but an image that is not 8-bit
    with 3 channels is refused, not converted.

    Raises:
        FileNotFoundError: no such file.
        ImageError: OpenCV cannot decode it, or it is not 8-bit with 3
            channels.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'image not found: {path}')
    data = np.fromfile(path, dtype=np.uint8)
    raw = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if raw is None:
        raise ImageError(f'cannot read image {path}: OpenCV cannot decode '
                         'it (not an image, or a damaged one)')
    check_image(raw, f'image {path}')
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)  # with EXIF orientation
    if channel_order == 'rgb':
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def _scale_size(size: Tuple[int, int], scale) -> Tuple[int, int]:
    if isinstance(scale, (float, int)):
        scale = (scale, scale)
    w, h = size
    return int(w * float(scale[0]) + 0.5), int(h * float(scale[1]) + 0.5)


def resize_image(img: np.ndarray, resize: Optional[dict]
                 ) -> Tuple[np.ndarray, Tuple[float, float]]:
    """mmdet's ``Resize`` (mmcv's ``imrescale`` with ``keep_ratio``, else
    ``imresize``, OpenCV backend): the resized image and its
    ``scale_factor`` ``(w_scale, h_scale)``; ``resize=None``: no resize.

    Args:
        img (np.ndarray): ``(H, W, 3)`` image.
        resize (dict, optional): ``scale`` ((w, h)) or ``scale_factor``,
            ``keep_ratio`` and ``interpolation`` (default bilinear), as in
            the model's metadata.
    """
    if not resize:
        return img, (1.0, 1.0)
    h, w = img.shape[:2]
    interp = CV2_INTERP[resize.get('interpolation') or 'bilinear']
    scale = resize.get('scale')
    if scale is None:
        scale = _scale_size((w, h), resize['scale_factor'])
    scale = tuple(int(v) for v in scale)
    if resize.get('keep_ratio'):
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
        new_w, new_h = _scale_size((w, h), factor)
    else:
        new_w, new_h = scale
    out = cv2.resize(img, (new_w, new_h), interpolation=interp)
    return out, (new_w / w, new_h / h)


def paste_masks(probs: np.ndarray,
                boxes: np.ndarray,
                img_h: int,
                img_w: int,
                threshold: float = 0.5) -> np.ndarray:
    """Paste mask probability maps ``(N, M, M)`` into an ``img_h x img_w``
    image at ``boxes`` (``(N, 4)``, x1 y1 x2 y2 in that image) and
    threshold them (``>= threshold``): ``(N, img_h, img_w)`` bool.

    mmdet's ``_do_paste_mask`` on the CPU (each mask over the pixels from
    ``floor(x1) - 1`` to ``ceil(x2) + 1``, bilinear ``grid_sample`` with
    ``align_corners=False`` and zero padding), written as two small matrix
    products, since the sampling grid is separable.

    Example:
        >>> import numpy as np
        >>> from mmepsa.deployment import paste_masks
        >>> masks = paste_masks(np.ones((1, 28, 28), np.float32),
        ...                     np.array([[2., 3., 10., 8.]]), 12, 16)
        >>> masks.shape, int(masks.sum())
        ((1, 12, 16), 40)
    """
    n = len(probs)
    out = np.zeros((n, img_h, img_w), dtype=bool)
    boxes = boxes.astype(np.float32)
    for i in range(n):
        x0, y0, x1, y1 = boxes[i]
        x0_int = max(int(np.floor(x0)) - 1, 0)
        y0_int = max(int(np.floor(y0)) - 1, 0)
        x1_int = min(int(np.ceil(x1)) + 1, img_w)
        y1_int = min(int(np.ceil(y1)) + 1, img_h)
        if x1_int <= x0_int or y1_int <= y0_int:
            continue
        mask = probs[i].astype(np.float32)
        wy = _sampling_weights(y0_int, y1_int, y0, y1, mask.shape[0])
        wx = _sampling_weights(x0_int, x1_int, x0, x1, mask.shape[1])
        region = wy @ mask @ wx.T
        out[i, y0_int:y1_int, x0_int:x1_int] = region >= threshold
    return out


def _sampling_weights(start: int, stop: int, low: np.float32, high: np.float32,
                      size: int) -> np.ndarray:
    """Bilinear weights ``(stop - start, size)`` of ``grid_sample``
    (``align_corners=False``, zero padding) for the pixel centres
    ``start + 0.5 ... stop - 0.5`` of a box from ``low`` to ``high``."""
    centres = np.arange(start, stop, dtype=np.float32) + np.float32(0.5)
    with np.errstate(divide='ignore', invalid='ignore'):
        grid = (centres - low) / (high - low) * np.float32(2) - np.float32(1)
    grid[np.isinf(grid)] = 0  # as mmdet, for a box of no width
    pos = ((grid + 1) * size - 1) / 2  # unnormalised, align_corners=False
    left = np.floor(pos)
    frac = (pos - left).astype(np.float32)
    left = left.astype(np.int64)
    weights = np.zeros((len(centres), size), dtype=np.float32)
    rows = np.arange(len(centres))
    for index, weight in ((left, 1 - frac), (left + 1, frac)):
        inside = (index >= 0) & (index < size)
        weights[rows[inside], index[inside]] += weight[inside]
    return weights


def stack_images(images: Sequence[np.ndarray]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """``(3, h, w)`` images stacked top-left into one ``(N, 3, H, W)``
    float32 batch of the largest height and width, zeros elsewhere, as
    mmdet's data preprocessor stacks a batch (the graph pads each image
    with the pad value), and ``img_shape``: each ``(h, w)``, ``(N, 2)``
    int64.

    Raises:
        ValueError: no images.
    """
    if not len(images):
        raise ValueError('a batch needs at least one image')
    shapes = np.array([img.shape[1:] for img in images], dtype=np.int64)
    batch = np.zeros((len(images), 3, *shapes.max(axis=0)), np.float32)
    for i, img in enumerate(images):
        batch[i, :, :img.shape[1], :img.shape[2]] = img
    return batch, shapes


class OnnxDetector:
    """A detector exported by :func:`~mmepsa.deployment.export_onnx`, run
    by onnxruntime or OpenVINO on an image path or array: see the module's
    steps.

    Args:
        model_file (str): The ``.onnx`` file; for OpenVINO also an IR
            ``.xml`` (:func:`~mmepsa.deployment.save_openvino_ir`, or the
            int8 model of :func:`~mmepsa.deployment.quantize_int8`).
        threads (int, optional): The runtime's inference threads (default:
            one per core).
        providers (Sequence[str]): onnxruntime execution providers.
            Defaults to ``('CPUExecutionProvider',)``.
        backend (str): ``onnxruntime`` or ``openvino``. Defaults to
            ``onnxruntime``.
        precision (str, optional): ``fp32``; OpenVINO's ``bf16``, ``int8``
            or ``int8-bf16`` (the last two an int8 ``.xml``); None: what the
            file holds (:func:`~mmepsa.deployment.create_backend`).
        static_shapes (bool): OpenVINO: compile the model for each input
            shape met (:class:`~mmepsa.deployment.backends.OpenVINOBackend`).
            Defaults to False.
        streams (int): Split a batch over this many streams, each with its
            share of the threads (:mod:`~mmepsa.deployment.backends`).
            Defaults to 1.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the runtime cannot load it, or it has no mmepsa
            metadata (not exported by :func:`export_onnx`).
        PrecisionError: a precision the backend, file or CPU cannot run.

    Example:
        >>> from mmepsa.deployment import OnnxDetector
        >>> model = OnnxDetector('retinanet.onnx', threads=2
        ...                      )  # doctest: +SKIP
        >>> model('demo.jpg')['bboxes'].shape  # doctest: +SKIP
        (20, 4)
        >>> bf16 = OnnxDetector('retinanet.onnx', backend='openvino',
        ...                     precision='bf16')  # doctest: +SKIP
    """

    def __init__(self,
                 model_file: str,
                 threads: Optional[int] = None,
                 providers: Sequence[str] = ('CPUExecutionProvider', ),
                 backend: str = 'onnxruntime',
                 precision: Optional[str] = None,
                 static_shapes: bool = False,
                 streams: int = 1):
        self.model_file = model_file
        self.backend = create_backend(model_file, backend, precision, threads,
                                      providers, static_shapes, streams)
        if self.backend.metadata is None:
            raise ValueError(
                f'{model_file} has no {METADATA_KEY!r} metadata: export it '
                'with tools/deployment/pytorch2onnx.py')
        self.meta = self.backend.metadata
        self.classes = tuple(self.meta.get('classes') or ())
        self.output_names = list(self.backend.output_names)
        self.with_masks = 'masks' in self.output_names

    @property
    def session(self):
        """The onnxruntime ``InferenceSession`` (None under OpenVINO)."""
        return getattr(self.backend, 'session', None)

    @property
    def precision(self) -> str:
        """The precision it runs in (``fp32``, ``bf16``, ``int8``)."""
        return self.backend.precision

    @property
    def label(self) -> str:
        """Backend and precision, e.g. ``onnxruntime``, ``openvino-bf16``
        (:func:`~mmepsa.deployment.backends.backend_label`)."""
        return self.backend.label

    @property
    def channel_order(self) -> str:
        """The channel order the graph takes (the test pipeline's)."""
        return self.meta['input'].get('channel_order', 'bgr')

    def preprocess(self,
                   img: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float]]:
        """An ``(H, W, 3)`` uint8 image (in :attr:`channel_order`) -> the
        graph's ``(1, 3, h, w)`` float32 input (resized) and the resize's
        ``scale_factor`` ``(w_scale, h_scale)``."""
        check_image(img)
        resized, scale_factor = resize_image(img, self.meta.get('resize'))
        inputs = resized.transpose(2, 0, 1)[None].astype(np.float32)
        return np.ascontiguousarray(inputs), scale_factor

    def stack(self, images: Sequence[np.ndarray]
              ) -> Tuple[np.ndarray, np.ndarray, list]:
        """Pre-process ``images`` (each as :meth:`preprocess`) and stack
        them top-left into one ``(N, 3, H, W)`` batch of the largest height
        and width, as mmdet's data preprocessor stacks a batch (the graph
        pads each image with the pad value): the batch, ``img_shape``
        ``(N, 2)`` int64 and each image's ``scale_factor``."""
        items = [self.preprocess(img) for img in images]
        batch, shapes = stack_images([x[0] for x, _ in items])
        return batch, shapes, [scale for _, scale in items]

    def graph_inputs(self,
                     inputs: np.ndarray,
                     img_shape: Optional[np.ndarray] = None
                     ) -> Dict[str, np.ndarray]:
        """The graph's inputs by name for its ``(N, 3, H, W)`` float32
        input and each image's ``(h, w)`` in it (default: the whole
        input): what :meth:`infer` runs, and int8 calibration feeds."""
        if img_shape is None:
            img_shape = np.array(
                [inputs.shape[2:]] * len(inputs), dtype=np.int64)
        return {
            'input': inputs,
            'img_shape': np.asarray(img_shape, dtype=np.int64)
        }

    def infer(self,
              inputs: np.ndarray,
              img_shape: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        """Run the graph on its ``(N, 3, H, W)`` float32 input and each
        image's ``(h, w)`` in it (default: the whole input): the raw
        outputs (boxes in the input's pixels, ``image_ids`` the image of
        each detection), by name."""
        return self.backend.run(self.graph_inputs(inputs, img_shape))

    def postprocess(self,
                    raw: Dict[str, np.ndarray],
                    scale_factor: Sequence[float],
                    ori_shape: Sequence[int],
                    image: int = 0) -> Dict[str, np.ndarray]:
        """The raw outputs of the batch's ``image`` -> ``bboxes`` in the
        original image (divided by ``scale_factor``), ``scores``,
        ``labels`` and, for Mask R-CNN, ``masks`` ``(N, H, W)`` bool pasted
        into the ``ori_shape`` image."""
        keep = raw['image_ids'] == image
        sx, sy = (float(v) for v in scale_factor)
        boxes = raw['boxes'][keep] / np.array([sx, sy, sx, sy],
                                              dtype=np.float32)
        result = dict(
            bboxes=boxes.astype(np.float32),
            scores=raw['scores'][keep],
            labels=raw['labels'][keep].astype(np.int64))
        if self.with_masks:
            h, w = int(ori_shape[0]), int(ori_shape[1])
            threshold = self.meta.get('mask_thr_binary')
            result['masks'] = paste_masks(
                raw['masks'][keep], result['bboxes'], h, w,
                0.5 if threshold is None else threshold)
        return result

    def detect(self, images: Sequence[Union[str, np.ndarray]]
               ) -> List[Dict[str, np.ndarray]]:
        """Detect objects in a batch of image files or ``(H, W, 3)`` uint8
        arrays (in :attr:`channel_order`), run as one batch: each image's
        result as :meth:`__call__` gives it. An image that cannot be read
        fails the batch with an error naming it."""
        arrays = [
            load_image(img, self.channel_order) if isinstance(img, str) else
            check_image(img, f'image {i} of the batch')
            for i, img in enumerate(images)
        ]
        batch, shapes, scales = self.stack(arrays)
        raw = self.infer(batch, shapes)
        return [
            self.postprocess(raw, scale, img.shape[:2], i)
            for i, (img, scale) in enumerate(zip(arrays, scales))
        ]

    def __call__(self, img: Union[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Detect objects in an image file or an ``(H, W, 3)`` uint8 array
        (in :attr:`channel_order`): ``bboxes`` ``(N, 4)`` in its pixels,
        ``scores``, ``labels`` and, for Mask R-CNN, ``masks``."""
        return self.detect([img])[0]


def build_runners(models: Sequence[Tuple[str, str, Optional[str]]],
                  threads: Optional[int] = None,
                  static_shapes: bool = False,
                  streams: int = 1) -> List[OnnxDetector]:
    """An :class:`OnnxDetector` of each ``(file, backend, precision)`` of
    ``models``, all on ``threads`` and ``streams``. ``static_shapes`` is for
    the OpenVINO models among them; with none among them it reaches
    onnxruntime, which refuses it (a user's ``--static-shapes`` with
    onnxruntime is an error, not ignored)."""
    openvino = any(backend == 'openvino' for _, backend, _ in models)
    return [
        OnnxDetector(
            file,
            threads=threads,
            backend=backend,
            precision=precision,
            static_shapes=static_shapes
            and (backend == 'openvino' or not openvino),
            streams=streams) for file, backend, precision in models
    ]


def draw_detections(img: np.ndarray,
                    result: Dict[str, np.ndarray],
                    classes: Sequence[str] = (),
                    score_thr: float = 0.3) -> np.ndarray:
    """A copy of the BGR ``img`` with the detections of at least
    ``score_thr`` drawn: boxes, ``class score`` labels, masks blended in.

    Example:
        >>> import numpy as np
        >>> from mmepsa.deployment import draw_detections
        >>> result = dict(bboxes=np.array([[2., 2., 20., 20.]]),
        ...               scores=np.array([0.9]), labels=np.array([0]))
        >>> draw_detections(np.zeros((32, 32, 3), np.uint8), result,
        ...                 ['circle']).shape
        (32, 32, 3)
    """
    out = img.copy()
    rng = np.random.RandomState(0)
    palette = rng.randint(64, 256, (max(len(classes), 1) + 256, 3))
    keep = np.flatnonzero(result['scores'] >= score_thr)
    for i in keep:
        label = int(result['labels'][i])
        color = tuple(int(c) for c in palette[label % len(palette)])
        if 'masks' in result:
            mask = result['masks'][i]
            out[mask] = (0.5 * out[mask] +
                         0.5 * np.array(color)).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in result['bboxes'][i])
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 1)
        name = classes[label] if label < len(classes) else str(label)
        cv2.putText(out, f'{name} {float(result["scores"][i]):.2f}',
                    (x1, max(y1 - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    color, 1, cv2.LINE_AA)
    return out
