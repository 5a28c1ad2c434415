# Copyright (c) mmepsa contributors. All rights reserved.
"""The exportable form of an mmdet detector: a batch of images in, every
image's boxes, scores, labels (and mask probabilities) out, in ops that the
TorchScript ONNX exporter turns into standard ONNX ops.

As mmdeploy's function rewriters do, the graph calls mmdet's own pieces
wherever they trace: the backbone, neck and heads' ``forward``, the prior
generators (``grid_priors``), the box coders (``decode``), the RoI
extractors' ``map_roi_levels``, the RoI heads. It re-writes only what does
not export:

* the candidate selection of ``predict_by_feat`` (mmdet filters tensors to
  data-dependent sizes in Python: :func:`select_candidates` does it for a
  whole batch with ``TopK`` and ``NonZero``), clipping boxes to each image's
  size (a graph input) and ``min_bbox_size``;
* NMS: mmcv's ``nms`` has no ONNX form that onnxruntime runs without a
  custom-op library; :func:`batched_nms` is mmcv's ``batched_nms`` (class
  offsets) run once per image, which exports to ONNX
  ``NonMaxSuppression`` with the images as its classes;
* ``RoIAlign``: mmcv's op the same way; torchvision's ``roi_align`` with
  the layer's own settings exports to ONNX ``RoiAlign`` (opset 16);
* the data preprocessor's padding, which depends on each image's size;
* a grouped conv with one output channel per group (EPSANet-50(S)'s
  layer1 9x9 conv: 16 groups of 4 input channels): :class:`GroupSumConv`,
  the same conv as a depthwise conv and a sum, which onnxruntime and
  OpenVINO run faster (:func:`export_forms`; the detector given is not
  changed).

Every key of ``test_cfg`` the graph honours is listed in
:data:`TEST_CFG_KEYS`; :func:`check_supported` refuses any other by name.

What the graph does not do, and :class:`~mmepsa.deployment.OnnxDetector`
does: loading and resizing the images (mmdet's ``Resize``), stacking them
into one batch, scaling the boxes back to each original image and pasting
the masks into it.
"""
import copy
import itertools
import sys
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

#: The detectors and heads the exporter supports, by config field
#: (``model.<field>.type``); :func:`check_supported` refuses others.
SUPPORTED_TYPES: Dict[str, Tuple[str, ...]] = {
    'model': ('RetinaNet', 'FasterRCNN', 'MaskRCNN'),
    'bbox_head': ('RetinaHead', ),
    'rpn_head': ('RPNHead', ),
    'roi_head': ('StandardRoIHead', ),
    'roi_head.bbox_head': ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead',
                           'ConvFCBBoxHead', 'BBoxHead'),
    'roi_head.mask_head': ('FCNMaskHead', ),
    'roi_head.bbox_roi_extractor': ('SingleRoIExtractor', ),
    'roi_head.mask_roi_extractor': ('SingleRoIExtractor', ),
}

#: The parts the heads may use, by the last part of their config field.
SUPPORTED_PARTS: Dict[str, Tuple[str, ...]] = {
    'bbox_coder': ('DeltaXYWHBBoxCoder', ),
    'prior_generator': ('AnchorGenerator', ),
    'anchor_generator': ('AnchorGenerator', ),
    'roi_layer': ('RoIAlign', ),
    'nms': ('nms', ),
}

#: The ``test_cfg`` keys the graph implements, per head; others are refused.
TEST_CFG_KEYS: Dict[str, Tuple[str, ...]] = {
    'single_stage':
    ('nms_pre', 'score_thr', 'min_bbox_size', 'nms', 'max_per_img'),
    'rpn': ('nms_pre', 'min_bbox_size', 'nms', 'max_per_img'),
    'rcnn': ('score_thr', 'nms', 'max_per_img', 'mask_thr_binary'),
}

#: The ``nms`` keys the graph implements (``split_thr`` changes only how
#: mmcv computes the same result).
NMS_KEYS = ('type', 'iou_threshold', 'class_agnostic', 'split_thr')

#: The data preprocessor keys the graph implements (mmdet's
#: ``DetDataPreprocessor``; the others act on training data only).
PREPROCESSOR_KEYS = ('type', 'mean', 'std', 'bgr_to_rgb', 'rgb_to_bgr',
                     'pad_size_divisor', 'pad_value', 'pad_mask',
                     'mask_pad_value', 'pad_seg', 'seg_pad_value',
                     'boxtype2tensor', 'non_blocking', 'batch_augments')


class UnsupportedModelError(ValueError):
    """The detector has a part the exporter does not support."""


def _unsupported(field: str, found, allowed: Sequence[str]) -> None:
    raise UnsupportedModelError(
        f'{field} type {found!r} is not supported by the ONNX exporter; '
        f'supported {field} types: {", ".join(allowed)}')


def _type_name(part) -> Optional[str]:
    """The type of a config part without its registry scope."""
    if part is None or part.get('type') is None:
        return None
    found = part.get('type')
    return found.split('.')[-1] if isinstance(found, str) else getattr(
        found, '__name__', str(found))


def _check_keys(field: str, cfg, allowed: Sequence[str]) -> None:
    extra = sorted(set(cfg or {}) - set(allowed))
    if extra:
        raise UnsupportedModelError(
            f'{field}: {", ".join(extra)} not supported by the ONNX '
            f'exporter; supported keys: {", ".join(allowed)}')


def _check_test_cfg(field: str, cfg, kind: str) -> None:
    if cfg is None:
        raise UnsupportedModelError(f'{field} is missing: the exporter '
                                    'needs the test_cfg the model predicts '
                                    'with')
    _check_keys(field, cfg, TEST_CFG_KEYS[kind])
    nms = cfg.get('nms')
    if nms is None or 'iou_threshold' not in nms:
        raise UnsupportedModelError(
            f'{field}.nms: the exporter needs an NMS with an iou_threshold, '
            f'got {nms!r}')
    _check_keys(f'{field}.nms', nms, NMS_KEYS)
    if nms.get('type', 'nms') not in SUPPORTED_PARTS['nms']:
        _unsupported(f'{field}.nms', nms.get('type'), SUPPORTED_PARTS['nms'])


def check_supported(model_cfg: dict) -> str:
    """Check a detector config (``cfg.model``) once, before anything is
    built: the detector and head types (:data:`SUPPORTED_TYPES`), their
    box coders, prior generators and RoI layers (:data:`SUPPORTED_PARTS`),
    every ``test_cfg`` key (:data:`TEST_CFG_KEYS`, :data:`NMS_KEYS`) and the
    data preprocessor's (:data:`PREPROCESSOR_KEYS`); returns
    ``'single_stage'`` or ``'two_stage'``.

    Raises:
        UnsupportedModelError: the message names the field, what was found
            and what is supported.

    Example:
        >>> from mmepsa.deployment import check_supported
        >>> check_supported(dict(type='RetinaNet',
        ...                      bbox_head=dict(type='RetinaHead'),
        ...                      test_cfg=dict(nms=dict(iou_threshold=0.5))))
        'single_stage'
    """

    def get(path: str):
        node = model_cfg
        for key in path.split('.'):
            node = node.get(key) if node is not None else None
        return node

    model_type = _type_name(model_cfg)
    if model_type not in SUPPORTED_TYPES['model']:
        # a single-stage detector of another name still fails on its head
        head = get('bbox_head')
        if head is not None and _type_name(
                head) not in SUPPORTED_TYPES['bbox_head']:
            _unsupported('bbox_head', _type_name(head),
                         SUPPORTED_TYPES['bbox_head'])
        _unsupported('model', model_type, SUPPORTED_TYPES['model'])
    single = model_type == 'RetinaNet'
    if single:
        fields = ('bbox_head', )
    else:
        fields = ('rpn_head', 'roi_head', 'roi_head.bbox_roi_extractor',
                  'roi_head.bbox_head')
        if model_type == 'MaskRCNN':
            fields += ('roi_head.mask_roi_extractor', 'roi_head.mask_head')
    for field in fields:
        if _type_name(get(field)) not in SUPPORTED_TYPES[field]:
            _unsupported(field, _type_name(get(field)), SUPPORTED_TYPES[field])
    for field in fields:
        for part in ('bbox_coder', 'prior_generator', 'anchor_generator'):
            if get(f'{field}.{part}') is not None:
                found = _type_name(get(f'{field}.{part}'))
                if found not in SUPPORTED_PARTS[part]:
                    _unsupported(f'{field}.{part}', found,
                                 SUPPORTED_PARTS[part])
        layer = get(f'{field}.roi_layer')
        if field.endswith('extractor') and layer is not None:
            if _type_name(layer) not in SUPPORTED_PARTS['roi_layer']:
                _unsupported(f'{field}.roi_layer', _type_name(layer),
                             SUPPORTED_PARTS['roi_layer'])
            if layer.get('pool_mode', 'avg') != 'avg':
                raise UnsupportedModelError(
                    f"{field}.roi_layer.pool_mode={layer.get('pool_mode')!r} "
                    'is '
                    "not supported by the ONNX exporter; supported: 'avg'")
    if not single:
        roi = get('roi_head')
        if roi.get('shared_head') is not None:
            raise UnsupportedModelError(
                'roi_head.shared_head is not supported by the ONNX exporter')
        if model_type == 'MaskRCNN' and roi.get('mask_roi_extractor') is None:
            raise UnsupportedModelError(
                'roi_head.share_roi_extractor (no mask_roi_extractor) is not '
                'supported by the ONNX exporter; give the mask head its own '
                'mask_roi_extractor')
    test_cfg = get('test_cfg')
    if single:
        _check_test_cfg('model.test_cfg', test_cfg, 'single_stage')
    else:
        _check_keys('model.test_cfg', test_cfg, ('rpn', 'rcnn'))
        for stage in ('rpn', 'rcnn'):
            _check_test_cfg(f'model.test_cfg.{stage}',
                            get(f'test_cfg.{stage}'), stage)
    preprocessor = get('data_preprocessor')
    if _type_name(preprocessor) not in (None, 'DetDataPreprocessor'):
        _unsupported('data_preprocessor', _type_name(preprocessor),
                     ('DetDataPreprocessor', ))
    _check_keys('model.data_preprocessor', preprocessor, PREPROCESSOR_KEYS)
    return 'single_stage' if single else 'two_stage'


# ------------------------------------------- what does not export: NMS ---


class _ImageWiseNMS(torch.autograd.Function):
    """NMS of each row of ``scores`` (one image's candidates, the others at
    -1) over the shared ``boxes``; ``(K, 3)`` rows ``[0, image, index]``.
    Exports to one ONNX ``NonMaxSuppression`` with the images as classes;
    in PyTorch, torchvision's ``nms`` per image."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor,
                iou_threshold: float) -> Tensor:
        from torchvision.ops import nms
        rows = []
        for image, image_scores in enumerate(scores):
            inds = (image_scores >= 0).nonzero().reshape(-1)
            keep = inds[nms(boxes[inds], image_scores[inds], iou_threshold)]
            rows.append(
                torch.stack([
                    torch.zeros_like(keep),
                    torch.full_like(keep, image), keep
                ], 1))
        if not rows:
            return boxes.new_zeros((0, 3), dtype=torch.long)
        return torch.cat(rows)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float):
        axes = g.op('Constant', value_t=torch.tensor([0], dtype=torch.long))
        return g.op(
            'NonMaxSuppression', g.op('Unsqueeze', boxes, axes),
            g.op('Unsqueeze', scores, axes),
            g.op(
                'Constant',
                value_t=torch.tensor([sys.maxsize], dtype=torch.long)),
            g.op(
                'Constant',
                value_t=torch.tensor([iou_threshold], dtype=torch.float)),
            g.op('Constant', value_t=torch.tensor([-0.5], dtype=torch.float)))


def _one_hot(ids: Tensor, num: Tensor) -> Tensor:
    """``(len(ids), num)``: ``ids[i] == j``; ``num`` may be traced."""
    return ids[:, None] == torch.arange(num, device=ids.device)[None, :]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor,
                image_ids: Tensor, num_images, iou_threshold: float,
                max_per_img: int) -> Tensor:
    """mmcv's ``batched_nms`` on each image's candidates (class-wise: each
    group's boxes offset by ``group * (the image's max coordinate + 1)``,
    as mmcv does), then mmdet's ``[:max_per_img]`` (all for ``<= 0``):
    indices into the candidates, grouped by image, highest score first."""
    num = boxes.shape[0]
    in_image = _one_hot(image_ids, num_images)
    # each image's largest coordinate (mmcv: boxes.max() of the image)
    coords = torch.where(in_image,
                         boxes.max(dim=1).values[:, None], boxes.new_zeros(()))
    no_box = torch.arange(num_images, device=boxes.device)[None].to(boxes) * 0
    largest = torch.cat([coords, no_box]).max(dim=0).values
    offsets = groups.to(boxes) * (largest[image_ids] + 1)
    image_scores = torch.where(in_image.t(), scores[None, :],
                               scores.new_full((), -1.0))
    selected = _ImageWiseNMS.apply(boxes + offsets[:, None], image_scores,
                                   float(iou_threshold))
    keep, image = selected[:, 2], selected[:, 1]
    # highest score first, then each image's rank: kept if < max_per_img
    order = scores[keep].argsort(descending=True)
    keep, image = keep[order], image[order]
    if max_per_img > 0:
        rank = torch.cumsum(_one_hot(image, num_images).long(), dim=0)
        rank = rank.gather(1, image[:, None])[:, 0] - 1
        inds = (rank < max_per_img).nonzero().reshape(-1)
        keep, image = keep[inds], image[inds]
    # grouped by image, the score order kept within each image
    position = torch.arange(keep.shape[0], device=keep.device)
    order = (image * (num + 1) + position).argsort()
    return keep[order]


# ------------------------------ what does not export: candidate selection


def select_candidates(scores: Tensor, nms_pre: int,
                      score_thr: Optional[float]) -> Tuple[Tensor, ...]:
    """mmdet's candidate selection of one level for a batch: ``scores``
    ``(N, P, C)`` (priors x classes) -> the ``nms_pre`` highest of each image
    (all for ``nms_pre <= 0``) that are above ``score_thr`` (all for
    ``None``), flat: image, prior, class, score of each. RetinaNet's
    ``filter_scores_and_topk`` and the RPN's ``sort()[:nms_pre]`` alike."""
    num_classes = scores.shape[2]
    flat = scores.reshape(scores.shape[0], -1)
    count = flat.shape[1]  # a traced 0-d tensor while exporting
    if nms_pre > 0:
        count = (
            torch.clamp(count, max=nms_pre)
            if isinstance(count, Tensor) else min(count, nms_pre))
    top, index = flat.topk(count, dim=1)
    if score_thr is None:
        image, rank = _all_indices(top)
    else:
        image, rank = (top > score_thr).nonzero().unbind(1)
    index = index[image, rank]
    prior = torch.div(index, num_classes, rounding_mode='floor')
    return image, prior, index - prior * num_classes, top[image, rank]


def _all_indices(x: Tensor) -> Tuple[Tensor, Tensor]:
    rows = torch.arange(x.shape[0], device=x.device)
    cols = torch.arange(x.shape[1], device=x.device)
    return (rows[:, None].expand(x.shape[0], x.shape[1]).reshape(-1),
            cols[None, :].expand(x.shape[0], x.shape[1]).reshape(-1))


def _take(keep: Tensor, *tensors: Tensor) -> Tuple[Tensor, ...]:
    return tuple(t[keep] for t in tensors)


def nms_detections(cfg, num_images, image: Tensor, boxes: Tensor,
                   scores: Tensor, labels: Tensor) -> Tuple[Tensor, ...]:
    """The NMS of a ``test_cfg`` (``nms.iou_threshold``,
    ``nms.class_agnostic``, ``max_per_img``) on a batch's candidates:
    :func:`batched_nms`, class-wise unless class-agnostic; the kept
    ``image, boxes, scores, labels``."""
    groups = (
        torch.zeros_like(labels)
        if cfg.nms.get('class_agnostic', False) else labels)
    keep = batched_nms(boxes, scores, groups, image, num_images,
                       cfg.nms.iou_threshold, cfg.max_per_img)
    return _take(keep, image, boxes, scores, labels)


def clip_boxes(boxes: Tensor, max_xyxy: Tensor) -> Tensor:
    """Boxes clipped to ``[0, W] x [0, H]`` of their image (``max_xyxy``
    ``[W, H, W, H]`` per box), as mmdet's coders clip to ``img_shape``."""
    return torch.minimum(torch.clamp(boxes, min=0), max_xyxy)


def min_size_mask(boxes: Tensor, min_bbox_size: float) -> Tensor:
    """mmdet's ``min_bbox_size`` rule: wider and taller than it."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return (w > min_bbox_size) & (h > min_bbox_size)


def dense_predict(head, cls_scores: Sequence[Tensor],
                  bbox_preds: Sequence[Tensor], max_xyxy: Tensor, cfg,
                  score_thr: Optional[float]) -> Tuple[Tensor, ...]:
    """An anchor head's ``predict_by_feat`` for a batch (RetinaNet, and
    the RPN with ``score_thr=None`` and the levels as NMS groups): flat
    image index, boxes, scores, labels (classes; levels for the RPN)."""
    priors = head.prior_generator.grid_priors(
        [s.shape[-2:] for s in cls_scores],
        dtype=cls_scores[0].dtype,
        device=cls_scores[0].device)
    is_rpn = score_thr is None
    images, boxes, scores, labels = [], [], [], []
    for level, (cls_score,
                bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
        num = cls_score.shape[0]
        logits = cls_score.permute(0, 2, 3, 1).reshape(num, -1,
                                                       head.cls_out_channels)
        if head.use_sigmoid_cls:
            level_scores = logits.sigmoid()
        else:
            level_scores = logits.softmax(-1)[..., :-1]
        deltas = bbox_pred.permute(0, 2, 3,
                                   1).reshape(num, -1,
                                              head.bbox_coder.encode_size)
        image, prior, label, score = select_candidates(level_scores,
                                                       cfg.get('nms_pre', -1),
                                                       score_thr)
        decoded = head.bbox_coder.decode(priors[level][prior], deltas[image,
                                                                      prior])
        if head.bbox_coder.clip_border:
            decoded = clip_boxes(decoded, max_xyxy[image])
        images.append(image)
        boxes.append(decoded)
        scores.append(score)
        labels.append(torch.full_like(label, level) if is_rpn else label)
    image, boxes, scores, labels = (torch.cat(images), torch.cat(boxes),
                                    torch.cat(scores), torch.cat(labels))
    if cfg.get('min_bbox_size', -1) >= 0:
        keep = min_size_mask(boxes, cfg.min_bbox_size).nonzero().reshape(-1)
        image, boxes, scores, labels = _take(keep, image, boxes, scores,
                                             labels)
    return nms_detections(cfg, max_xyxy.shape[0], image, boxes, scores, labels)


def extract_roi_feats(extractor, feats: Sequence[Tensor],
                      rois: Tensor) -> Tensor:
    """``SingleRoIExtractor.forward`` on ``(K, 5)`` rois (image index and
    box): mmdet's ``map_roi_levels``, then each level's RoIs through
    torchvision's ``roi_align`` with the level's ``RoIAlign`` settings (ONNX
    ``RoiAlign``); the features in the order of ``rois``."""
    from torchvision.ops import roi_align

    def align(level: int, level_rois: Tensor) -> Tensor:
        layer = extractor.roi_layers[level]
        return roi_align(feats[level], level_rois, layer.output_size,
                         layer.spatial_scale, layer.sampling_ratio,
                         layer.aligned)

    feats = feats[:extractor.num_inputs]
    if len(feats) == 1:
        return align(0, rois)
    levels = extractor.map_roi_levels(rois, len(feats))
    parts, indices = [], []
    for level in range(len(feats)):
        inds = (levels == level).nonzero().reshape(-1)
        parts.append(align(level, rois[inds]))
        indices.append(inds)
    # back to the order of ``rois``: the level-by-level indices sorted
    return torch.cat(parts)[torch.cat(indices).argsort()]


# -------------------------------------------------------------- modules ---


class GroupSumConv(nn.Module):
    """A grouped ``nn.Conv2d`` with one output channel per group, as the
    graph holds it: a depthwise conv (each input channel by its weight),
    then each group's input channels summed (:meth:`forward`); the same
    result up to float rounding, which onnxruntime and OpenVINO (fp32,
    bf16, int8) run faster than the grouped conv (docs/deployment.md).

    Args:
        conv (nn.Conv2d): The conv (``out_channels == groups``,
            ``in_channels > groups``, zero padding).

    Example:
        >>> import torch
        >>> from mmepsa.deployment.wrapper import GroupSumConv
        >>> conv = torch.nn.Conv2d(16, 4, 9, padding=4, groups=4)
        >>> x = torch.rand(1, 16, 20, 20)
        >>> torch.allclose(GroupSumConv(conv)(x), conv(x), atol=1e-5)
        True
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not self.fits(conv):
            raise ValueError('GroupSumConv takes a zero-padded grouped '
                             'nn.Conv2d with one output channel per group, '
                             f'got {conv}')
        self.conv = conv  # its weight and bias, shared
        self.register_buffer(
            'ones',
            conv.weight.new_ones(conv.groups, conv.in_channels // conv.groups,
                                 1, 1),
            persistent=False)

    @staticmethod
    def fits(module: nn.Module) -> bool:
        """Whether ``module`` is a conv this form replaces."""
        return (type(module) is nn.Conv2d
                and module.out_channels == module.groups > 1
                and module.in_channels > module.groups
                and module.padding_mode == 'zeros')

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        # (groups, in/groups, kh, kw) -> one filter per input channel
        weight = conv.weight.reshape(conv.in_channels, 1, *conv.kernel_size)
        y = nn.functional.conv2d(x, weight, None, conv.stride, conv.padding,
                                 conv.dilation, conv.in_channels)
        # each group's sum as a 1x1 conv of weights 1 (with a reshape and
        # ReduceSum, OpenVINO 2026.4 ran the int8 demo RetinaNet wrongly:
        # bbox mAP 0.13 against PyTorch's 0.20; strided slices and adds
        # took away the speed)
        y = nn.functional.conv2d(y, self.ones, None, 1, 0, 1, conv.groups)
        if conv.bias is not None:
            y = y + conv.bias.view(1, -1, 1, 1)
        return y


def export_forms(detector: nn.Module) -> nn.Module:
    """``detector`` with each conv :class:`GroupSumConv` fits in that form:
    a copy of its modules that shares its parameters and buffers, or
    ``detector`` itself when no conv fits."""
    if not any(GroupSumConv.fits(m) for m in detector.modules()):
        return detector
    tensors = itertools.chain(detector.parameters(), detector.buffers())
    detector = copy.deepcopy(detector, {id(t): t for t in tensors})
    for name, module in list(detector.named_modules()):
        if GroupSumConv.fits(module):
            parent, _, attr = name.rpartition('.')
            setattr(detector.get_submodule(parent), attr, GroupSumConv(module))
    return detector


class _ExportWrapper(nn.Module):
    """Pre-processing in the graph: the data preprocessor's channel order
    and normalisation (from the config's ``data_preprocessor``), the pad
    value where an image of the batch ends, padding to
    ``pad_size_divisor``. The subclasses add the heads.

    Inputs: ``input`` ``(N, 3, H, W)`` float pixels in the channel order
    the pipeline loads them, the images stacked top-left; ``img_shape``
    ``(N, 2)`` int64, each image's ``(h, w)`` in it.
    """

    #: The names of the graph's outputs, in order.
    output_names: Tuple[str, ...] = ('image_ids', 'boxes', 'scores', 'labels')

    def __init__(self, detector: nn.Module, model_cfg: dict) -> None:
        super().__init__()
        self.detector = export_forms(detector.eval())
        pre = dict(model_cfg.get('data_preprocessor') or {})
        self.channel_flip = bool(
            pre.get('bgr_to_rgb', False) or pre.get('rgb_to_bgr', False))
        self.normalize = pre.get('mean') is not None
        if self.normalize:
            self.register_buffer(
                'mean',
                torch.tensor(pre['mean']).float().view(1, -1, 1, 1), False)
            self.register_buffer(
                'std',
                torch.tensor(pre['std']).float().view(1, -1, 1, 1), False)
        self.size_divisor = int(pre.get('pad_size_divisor', 1) or 1)
        self.pad_value = float(pre.get('pad_value', 0))

    def preprocess(self, img: Tensor,
                   img_shape: Tensor) -> Tuple[Tensor, Tensor]:
        """The detector's input and each image's ``[W, H, W, H]`` (float)
        to clip boxes to, as mmdet clips them to ``img_shape``."""
        x = img.float()
        if self.channel_flip:
            x = x[:, [2, 1, 0], ...]
        if self.normalize:
            x = (x - self.mean) / self.std
        h, w = x.shape[2], x.shape[3]
        rows = torch.arange(h, device=x.device)[None, :, None]
        cols = torch.arange(w, device=x.device)[None, None, :]
        inside = (rows < img_shape[:, 0, None, None]) & (
            cols < img_shape[:, 1, None, None])
        x = torch.where(inside[:, None], x, x.new_full((), self.pad_value))
        d = self.size_divisor
        if d > 1:
            x = nn.functional.pad(
                x, (0, (-w) % d, 0, (-h) % d), value=self.pad_value)
        shape = img_shape.to(x.dtype)
        max_xyxy = torch.stack([shape[:, 1], shape[:, 0]] * 2, dim=1)
        return x, max_xyxy


class SingleStageExportWrapper(_ExportWrapper):
    """RetinaNet: backbone, neck, ``RetinaHead`` and the head's
    ``predict_by_feat`` for a batch.

    Args:
        detector (nn.Module): A built mmdet single-stage detector whose
            config passed :func:`check_supported`.
        model_cfg (dict): Its config (``cfg.model``).

    Example:
        >>> import torch
        >>> from mmepsa.deployment import SingleStageExportWrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> from mmengine import Config
        >>> cfg = Config.fromfile('configs/demo/'
        ...     'retinanet_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> wrapper = SingleStageExportWrapper(
        ...     build_detector(cfg), cfg.model)  # doctest: +SKIP
        >>> image_ids, boxes, scores, labels = wrapper(
        ...     torch.rand(2, 3, 160, 160) * 255,
        ...     torch.tensor([[160, 160], [120, 150]]))  # doctest: +SKIP
    """

    def forward(self, img: Tensor, img_shape: Tensor) -> Tuple[Tensor, ...]:
        x, max_xyxy = self.preprocess(img, img_shape)
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(x))
        cfg = head.test_cfg
        return dense_predict(head, cls_scores, bbox_preds, max_xyxy, cfg,
                             cfg.get('score_thr', 0))


class TwoStageExportWrapper(_ExportWrapper):
    """Faster R-CNN and Mask R-CNN: backbone, neck, the ``RPNHead`` with its
    proposal post-processing, RoI features, the bbox head's
    ``multiclass_nms`` and, for Mask R-CNN, the mask head on the detections
    (output ``masks``: each detection's ``sigmoid`` mask of its class,
    ``(K, 28, 28)`` for mmdet's ``FCNMaskHead``, to be pasted into the
    image at its box).

    Args:
        detector (nn.Module): A built mmdet two-stage detector whose config
            passed :func:`check_supported`.
        model_cfg (dict): Its config (``cfg.model``).

    Example:
        >>> import torch
        >>> from mmepsa.deployment import TwoStageExportWrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> from mmengine import Config
        >>> cfg = Config.fromfile('configs/demo/'
        ...     'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> image_ids, boxes, scores, labels, masks = TwoStageExportWrapper(
        ...     build_detector(cfg), cfg.model)(
        ...     torch.rand(1, 3, 160, 160) * 255,
        ...     torch.tensor([[160, 160]]))  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module, model_cfg: dict) -> None:
        super().__init__(detector, model_cfg)
        self.with_mask = bool(detector.roi_head.with_mask)
        self.output_names = _ExportWrapper.output_names + (
            ('masks', ) if self.with_mask else ())

    def proposals(self, feats: Sequence[Tensor], max_xyxy: Tensor) -> Tensor:
        """The RPN's proposals, as ``RPNHead.predict`` (``rescale=False``)
        gives them: ``(K, 5)`` rois (image index, box)."""
        head = self.detector.rpn_head
        image, boxes, _, _ = dense_predict(head, *head(feats), max_xyxy,
                                           head.test_cfg, None)
        return torch.cat([image[:, None].to(boxes), boxes], dim=1)

    def detections(self, feats: Sequence[Tensor], rois: Tensor,
                   max_xyxy: Tensor) -> Tuple[Tensor, ...]:
        """The bbox head on the proposals, as ``StandardRoIHead.
        predict_bbox`` (``rescale=False``): image index, boxes, scores,
        labels."""
        roi = self.detector.roi_head
        head, cfg = roi.bbox_head, roi.test_cfg
        cls_score, bbox_pred = head(
            extract_roi_feats(roi.bbox_roi_extractor, feats, rois))
        if head.custom_cls_channels:
            scores = head.loss_cls.get_activation(cls_score)
        else:
            scores = nn.functional.softmax(cls_score, dim=-1)
        num_rois, num_classes = rois.shape[0], head.num_classes
        per_roi = 1 if head.reg_class_agnostic else num_classes
        roi_image = rois[:, 0].long()
        boxes = head.bbox_coder.decode(
            rois[:, 1:].repeat_interleave(per_roi, dim=0),
            bbox_pred.reshape(-1, head.bbox_coder.encode_size))
        if head.bbox_coder.clip_border:
            boxes = clip_boxes(
                boxes, max_xyxy[roi_image].repeat_interleave(per_roi, dim=0))
        boxes = boxes.reshape(num_rois, per_roi,
                              4).expand(num_rois, num_classes, 4)
        # mmdet's multiclass_nms: every (roi, class) pair above score_thr
        pair_roi, labels = (scores[:, :num_classes] >
                            cfg.score_thr).nonzero().unbind(1)
        image = roi_image[pair_roi]
        boxes, scores = boxes[pair_roi, labels], scores[pair_roi, labels]
        return nms_detections(cfg, max_xyxy.shape[0], image, boxes, scores,
                              labels)

    def mask_probs(self, feats: Sequence[Tensor], image: Tensor, boxes: Tensor,
                   labels: Tensor) -> Tensor:
        """The mask head on the detections: each one's mask of its class,
        after ``sigmoid`` (``(K, 28, 28)``)."""
        roi = self.detector.roi_head
        rois = torch.cat([image[:, None].to(boxes), boxes], dim=1)
        mask_preds = roi.mask_head(
            extract_roi_feats(roi.mask_roi_extractor, feats, rois))
        if roi.mask_head.class_agnostic:
            mask_preds = mask_preds[:, 0]
        else:
            rows = torch.arange(mask_preds.shape[0], device=labels.device)
            mask_preds = mask_preds[rows, labels]
        return mask_preds.sigmoid()

    def forward(self, img: Tensor, img_shape: Tensor) -> Tuple[Tensor, ...]:
        x, max_xyxy = self.preprocess(img, img_shape)
        feats = self.detector.extract_feat(x)
        rois = self.proposals(feats, max_xyxy)
        dets = self.detections(feats, rois, max_xyxy)
        if not self.with_mask:
            return dets
        return dets + (self.mask_probs(feats, *dets[:2], dets[3]), )


def build_export_wrapper(detector: nn.Module,
                         model_cfg: dict) -> _ExportWrapper:
    """The export wrapper of a built detector whose config ``model_cfg``
    (``cfg.model``) passed :func:`check_supported`
    (:func:`~mmepsa.deployment.load_detector` checks it):
    :class:`SingleStageExportWrapper` or :class:`TwoStageExportWrapper`.

    Example:
        >>> from mmepsa.deployment import build_export_wrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> from mmengine import Config
        >>> cfg = Config.fromfile('configs/demo/'
        ...     'retinanet_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> build_export_wrapper(build_detector(cfg),
        ...                      cfg.model).output_names  # doctest: +SKIP
        ('image_ids', 'boxes', 'scores', 'labels')
    """
    if hasattr(detector, 'roi_head'):
        return TwoStageExportWrapper(detector, model_cfg)
    return SingleStageExportWrapper(detector, model_cfg)
