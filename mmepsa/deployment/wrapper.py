# Copyright (c) mmepsa contributors. All rights reserved.
"""The exportable form of an mmdet detector: one image tensor in, boxes,
scores, labels (and mask probabilities) out, with mmdet's pre- and
post-processing re-written in plain torch ops that the TorchScript ONNX
exporter turns into standard ONNX ops (``NonMaxSuppression``, ``RoiAlign``
of opset 16, ``TopK``, ``NonZero``...).

mmdet 3.3's own ``mode='tensor'`` stops before the post-processing (and
the two-stage detectors call ``batched_nms`` in the middle of it), and
mmcv 2.1's ``nms`` and ``RoIAlign`` have no ONNX symbolic that
onnxruntime runs without a custom-op library, so the post-processing of
the supported heads (:data:`SUPPORTED_TYPES`) is re-implemented here,
step by step as mmdet does it (``nms_pre``, ``score_thr``, box decoding,
``min_bbox_size``, class-wise NMS with mmcv's coordinate offsets,
``max_per_img``, RoI level mapping, mask head), with torchvision's
``nms`` and ``roi_align``, whose ONNX symbolics torchvision registers.

What the graph does not do, and :class:`~mmepsa.deployment.OnnxDetector`
does: loading and resizing the image (mmdet's ``Resize``), scaling the
boxes back to the original image and pasting the masks into it.
"""
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from torch import Tensor

#: The detectors and heads :class:`DetectorExporter` exports, by config
#: field (``model.<field>.type``); :func:`check_supported` refuses others.
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

#: The parts the heads may use (checked on the built detector).
SUPPORTED_PARTS: Dict[str, Tuple[str, ...]] = {
    'bbox_coder': ('DeltaXYWHBBoxCoder', ),
    'prior_generator': ('AnchorGenerator', ),
    'roi_layer': ('RoIAlign', ),
    'nms': ('nms', ),
}

#: mmdet's ``wh_ratio_clip`` (``DeltaXYWHBBoxCoder.decode``'s default).
WH_RATIO_CLIP = 16 / 1000


class UnsupportedModelError(ValueError):
    """The detector has a part the exporter does not support."""


def _unsupported(field: str, found, allowed: Sequence[str]) -> None:
    raise UnsupportedModelError(
        f'{field} type {found!r} is not supported by the ONNX exporter; '
        f'supported {field} types: {", ".join(allowed)}')


def check_supported(model_cfg: dict) -> str:
    """Check a detector config (``cfg.model``) against
    :data:`SUPPORTED_TYPES`; returns ``'single_stage'`` or
    ``'two_stage'``.

    Raises:
        UnsupportedModelError: a detector or head type not in
            :data:`SUPPORTED_TYPES` (the message names the field, the type
            found and the supported ones).

    Example:
        >>> from mmepsa.deployment import check_supported
        >>> check_supported(dict(type='RetinaNet',
        ...                      bbox_head=dict(type='RetinaHead')))
        'single_stage'
    """

    def get(path: str):
        node = model_cfg
        for key in path.split('.'):
            node = node.get(key) if node is not None else None
        return node

    model_type = model_cfg.get('type')
    if model_type not in SUPPORTED_TYPES['model']:
        # a single-stage detector of another name still fails on its head
        head = get('bbox_head')
        if head is not None and head.get(
                'type') not in SUPPORTED_TYPES['bbox_head']:
            _unsupported('bbox_head', head.get('type'),
                         SUPPORTED_TYPES['bbox_head'])
        _unsupported('model', model_type, SUPPORTED_TYPES['model'])
    if model_type == 'RetinaNet':
        fields = ('bbox_head', )
    else:
        fields = ('rpn_head', 'roi_head', 'roi_head.bbox_roi_extractor',
                  'roi_head.bbox_head')
        if model_type == 'MaskRCNN':
            fields += ('roi_head.mask_roi_extractor', 'roi_head.mask_head')
    for field in fields:
        part = get(field)
        found = None if part is None else part.get('type')
        if found not in SUPPORTED_TYPES[field]:
            _unsupported(field, found, SUPPORTED_TYPES[field])
    return 'single_stage' if model_type == 'RetinaNet' else 'two_stage'


def _check_part(field: str, obj) -> None:
    kind = field.rsplit('.', 1)[-1]
    name = obj if isinstance(obj, str) else type(obj).__name__
    if name not in SUPPORTED_PARTS[kind]:
        _unsupported(field, name, SUPPORTED_PARTS[kind])


def _check_nms(field: str, nms_cfg) -> None:
    if nms_cfg is None or 'iou_threshold' not in nms_cfg:
        raise UnsupportedModelError(
            f'{field}: the exporter needs an NMS with an iou_threshold, got '
            f'{nms_cfg!r}')
    _check_part(field, nms_cfg.get('type', 'nms'))
    if nms_cfg.get('class_agnostic', False):
        raise UnsupportedModelError(
            f'{field}.class_agnostic=True is not supported by the ONNX '
            'exporter; supported: False (class-wise NMS)')


# ------------------------------------------------------------- helpers ---


def _size(x: Tensor, dim: int) -> Union[int, Tensor]:
    """``x.shape[dim]``: an int in eager mode, a traced 0-d tensor while
    exporting (so that the graph follows the input's size)."""
    return x.shape[dim]


def _min_count(n: Union[int, Tensor], k: int) -> Union[int, Tensor]:
    """``min(n, k)`` for a size ``n`` that may be traced."""
    if isinstance(n, Tensor):
        return torch.clamp(n, max=k)
    return min(n, k)


def _topk(x: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` largest of the 1-d ``x`` (all of them, sorted, for
    ``k <= 0``), highest first, as mmdet's ``sort(descending=True)[:k]``."""
    n = _size(x, 0)
    return x.topk(n if k <= 0 else _min_count(n, k))


def _keep(mask: Tensor) -> Tensor:
    """Indices of the true entries of the 1-d ``mask``."""
    return mask.nonzero().reshape(-1)


def grid_anchors(prior_generator, level: int, feat_h, feat_w,
                 dtype: torch.dtype, device) -> Tensor:
    """mmdet's ``AnchorGenerator.single_level_grid_priors`` for a feature
    map size that may be traced: ``(feat_h * feat_w * A, 4)`` anchors,
    position-major as mmdet orders them."""
    base = prior_generator.base_anchors[level].to(device=device, dtype=dtype)
    stride_w, stride_h = prior_generator.strides[level]
    shift_x = torch.arange(feat_w, device=device).to(dtype) * stride_w
    shift_y = torch.arange(feat_h, device=device).to(dtype) * stride_h
    shift_yy, shift_xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
    shift_xx, shift_yy = shift_xx.reshape(-1), shift_yy.reshape(-1)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)


def decode_boxes(coder, rois: Tensor, deltas: Tensor,
                 max_xyxy: Optional[Tensor]) -> Tensor:
    """mmdet's ``delta2bbox`` (``DeltaXYWHBBoxCoder.decode``) for ``(N, 4)``
    rois and deltas, the boxes clipped to ``max_xyxy`` (``[W, H, W, H]``,
    a tensor) when the coder clips them."""
    means = deltas.new_tensor(coder.means).view(1, -1)
    stds = deltas.new_tensor(coder.stds).view(1, -1)
    denorm = deltas * stds + means
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    pwh = rois[:, 2:] - rois[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(WH_RATIO_CLIP))
    if coder.add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=coder.ctr_clamp, min=-coder.ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if coder.clip_border and max_xyxy is not None:
        boxes = torch.minimum(torch.clamp(boxes, min=0), max_xyxy)
    return boxes


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor,
                iou_threshold: float) -> Tensor:
    """Class-wise NMS as mmcv's ``batched_nms`` does it (each class's boxes
    offset by ``class * (max coordinate + 1)``, one NMS), with
    ``torchvision.ops.nms`` (ONNX ``NonMaxSuppression``); the kept indices,
    highest score first. Unlike mmcv's, it runs on no boxes at all (the
    offset's maximum includes a 0)."""
    from torchvision.ops import nms
    max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def filter_min_size(boxes: Tensor, min_bbox_size: float) -> Tensor:
    """Indices of the boxes wider and taller than ``min_bbox_size`` (mmdet's
    ``min_bbox_size`` filter; all of them for a negative size)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return _keep((w > min_bbox_size) & (h > min_bbox_size))


def extract_roi_feats(extractor, feats: Sequence[Tensor],
                      boxes: Tensor) -> Tensor:
    """mmdet's ``SingleRoIExtractor`` on one image's ``(K, 4)`` boxes with
    torchvision's ``roi_align`` (ONNX ``RoiAlign``, opset 16 for
    ``aligned``): each box to the FPN level ``map_roi_levels`` gives it,
    its features in the order of ``boxes``."""
    from torchvision.ops import roi_align
    feats = feats[:extractor.num_inputs]
    rois = torch.cat([boxes.new_zeros(_size(boxes, 0), 1), boxes], dim=1)
    num_levels = len(feats)
    scale = torch.sqrt(
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(torch.log2(scale / extractor.finest_scale + 1e-6))
    levels = levels.clamp(min=0, max=num_levels - 1).long()
    if num_levels == 1:
        layer = extractor.roi_layers[0]
        return roi_align(feats[0], rois, layer.output_size,
                         layer.spatial_scale, layer.sampling_ratio,
                         layer.aligned)
    parts, indices = [], []
    for i, layer in enumerate(extractor.roi_layers[:num_levels]):
        inds = _keep(levels == i)
        parts.append(
            roi_align(feats[i], rois[inds], layer.output_size,
                      layer.spatial_scale, layer.sampling_ratio,
                      layer.aligned))
        indices.append(inds)
    # back to the order of ``boxes``: the level-by-level indices sorted
    order = torch.argsort(torch.cat(indices))
    return torch.cat(parts)[order]


# -------------------------------------------------------------- modules ---


class _ExportWrapper(nn.Module):
    """Pre-processing (the detector's ``DetDataPreprocessor``: channel
    order, normalisation, padding to ``pad_size_divisor``) in the graph; the
    subclasses add the heads."""

    #: The names of the graph's outputs, in order.
    output_names: Tuple[str, ...] = ('boxes', 'scores', 'labels')

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector.eval()
        pre = detector.data_preprocessor
        self.channel_flip = bool(getattr(pre, '_channel_conversion', False))
        self.normalize = bool(getattr(pre, '_enable_normalize', False))
        if self.normalize:
            self.register_buffer('mean', pre.mean.detach().clone(), False)
            self.register_buffer('std', pre.std.detach().clone(), False)
        self.size_divisor = int(getattr(pre, 'pad_size_divisor', 1) or 1)
        self.pad_value = float(getattr(pre, 'pad_value', 0))

    def preprocess(self, img: Tensor) -> Tuple[Tensor, Tensor]:
        """``(1, 3, H, W)`` pixels in the dataset's channel order -> the
        detector's padded, normalised input and ``[W, H, W, H]`` (float)
        to clip boxes to, as mmdet clips them to ``img_shape``."""
        h, w = _size(img, 2), _size(img, 3)
        x = img.float()
        if self.channel_flip:
            x = x[:, [2, 1, 0], ...]
        if self.normalize:
            x = (x - self.mean) / self.std
        d = self.size_divisor
        if d > 1:
            x = nn.functional.pad(
                x, (0, (-w) % d, 0, (-h) % d), value=self.pad_value)
        shape = torch._shape_as_tensor(img)[2:].to(x.dtype)
        max_xyxy = torch.stack([shape[1], shape[0], shape[1], shape[0]])
        return x, max_xyxy


class SingleStageExportWrapper(_ExportWrapper):
    """RetinaNet: backbone, neck, ``RetinaHead`` and the head's
    ``predict_by_feat`` (``nms_pre``, ``score_thr``, decoding,
    ``min_bbox_size``, class-wise NMS, ``max_per_img``).

    Args:
        detector (nn.Module): A built mmdet single-stage detector with a
            supported head (:data:`SUPPORTED_TYPES`), in eval mode.

    Example:
        >>> import torch
        >>> from mmepsa.deployment import SingleStageExportWrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> det = build_detector('configs/demo/'
        ...     'retinanet_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> boxes, scores, labels = SingleStageExportWrapper(det)(
        ...     torch.rand(1, 3, 160, 160) * 255)  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__(detector)
        head = detector.bbox_head
        _check_part('bbox_head.bbox_coder', head.bbox_coder)
        _check_part('bbox_head.prior_generator', head.prior_generator)
        if getattr(head.loss_cls, 'custom_cls_channels', False):
            raise UnsupportedModelError(
                'bbox_head.loss_cls with custom_cls_channels is not '
                'supported by the ONNX exporter')
        self.cfg = head.test_cfg
        _check_nms('model.test_cfg.nms', self.cfg.get('nms'))

    def forward(self, img: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        x, max_xyxy = self.preprocess(img)
        head = self.detector.bbox_head
        cls_scores, bbox_preds = head(self.detector.extract_feat(x))
        cfg = self.cfg
        nms_pre = cfg.get('nms_pre', -1)
        score_thr = cfg.get('score_thr', 0)
        num_classes = head.cls_out_channels
        mlvl_deltas, mlvl_anchors, mlvl_scores, mlvl_labels = [], [], [], []
        for level, (cls_score,
                    bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            anchors = grid_anchors(head.prior_generator, level,
                                   _size(cls_score, 2), _size(cls_score, 3),
                                   cls_score.dtype, cls_score.device)
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(
                -1, head.bbox_coder.encode_size)
            logits = cls_score[0].permute(1, 2, 0).reshape(-1, num_classes)
            if head.use_sigmoid_cls:
                scores = logits.sigmoid()
            else:
                scores = logits.softmax(-1)[:, :-1]
            # mmdet's filter_scores_and_topk: the nms_pre highest of the
            # scores above score_thr (over anchors x classes)
            scores, idx = _topk(scores.reshape(-1), nms_pre)
            valid = _keep(scores > score_thr)
            scores, idx = scores[valid], idx[valid]
            anchor_idx = torch.div(idx, num_classes, rounding_mode='floor')
            mlvl_labels.append(idx - anchor_idx * num_classes)
            mlvl_scores.append(scores)
            mlvl_deltas.append(deltas[anchor_idx])
            mlvl_anchors.append(anchors[anchor_idx])
        boxes = decode_boxes(head.bbox_coder, torch.cat(mlvl_anchors),
                             torch.cat(mlvl_deltas), max_xyxy)
        scores, labels = torch.cat(mlvl_scores), torch.cat(mlvl_labels)
        if cfg.get('min_bbox_size', -1) >= 0:
            keep = filter_min_size(boxes, cfg.min_bbox_size)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, cfg.nms.iou_threshold)
        keep = keep[:cfg.max_per_img]
        return boxes[keep], scores[keep], labels[keep]


class TwoStageExportWrapper(_ExportWrapper):
    """Faster R-CNN and Mask R-CNN: backbone, neck, ``RPNHead`` with its
    proposal post-processing, RoI features (``SingleRoIExtractor``'s level
    mapping, ``RoIAlign``), the bbox head's ``multiclass_nms`` and, for
    Mask R-CNN, the mask head on the detections: outputs ``boxes`` (in the
    input image), ``scores``, ``labels`` and ``masks`` (each detection's
    ``sigmoid`` mask of its class, ``(N, 28, 28)`` for mmdet's
    ``FCNMaskHead``, to be pasted into the image at its box).

    Args:
        detector (nn.Module): A built mmdet two-stage detector with
            supported heads (:data:`SUPPORTED_TYPES`), in eval mode.

    Example:
        >>> import torch
        >>> from mmepsa.deployment import TwoStageExportWrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> det = build_detector('configs/demo/'
        ...     'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> boxes, scores, labels, masks = TwoStageExportWrapper(det)(
        ...     torch.rand(1, 3, 160, 160) * 255)  # doctest: +SKIP
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__(detector)
        rpn, roi = detector.rpn_head, detector.roi_head
        _check_part('rpn_head.bbox_coder', rpn.bbox_coder)
        _check_part('rpn_head.prior_generator', rpn.prior_generator)
        _check_part('roi_head.bbox_head.bbox_coder', roi.bbox_head.bbox_coder)
        extractors = [('bbox_roi_extractor', roi.bbox_roi_extractor)]
        if roi.with_mask:
            extractors.append(('mask_roi_extractor', roi.mask_roi_extractor))
            if roi.share_roi_extractor:
                raise UnsupportedModelError(
                    'roi_head.share_roi_extractor=True is not supported by '
                    'the ONNX exporter; supported: False')
        for name, extractor in extractors:
            for layer in extractor.roi_layers:
                _check_part(f'roi_head.{name}.roi_layer', layer)
                if getattr(layer, 'pool_mode', 'avg') != 'avg':
                    raise UnsupportedModelError(
                        f'roi_head.{name}.roi_layer.pool_mode='
                        f'{layer.pool_mode!r} is not supported by the ONNX '
                        "exporter; supported: 'avg'")
        if roi.with_shared_head:
            raise UnsupportedModelError(
                'roi_head.shared_head is not supported by the ONNX exporter')
        if roi.bbox_head.custom_cls_channels:
            raise UnsupportedModelError(
                'roi_head.bbox_head.loss_cls with custom_cls_channels is not '
                'supported by the ONNX exporter')
        self.rpn_cfg = rpn.test_cfg
        self.rcnn_cfg = roi.test_cfg
        _check_nms('model.test_cfg.rpn.nms', self.rpn_cfg.get('nms'))
        _check_nms('model.test_cfg.rcnn.nms', self.rcnn_cfg.get('nms'))
        self.with_mask = bool(roi.with_mask)
        self.output_names = ('boxes', 'scores', 'labels') + (
            ('masks', ) if self.with_mask else ())

    def proposals(self, feats: Sequence[Tensor], max_xyxy: Tensor) -> Tensor:
        """The RPN's proposals, as ``RPNHead.predict`` (``rescale=False``)
        gives them: ``(K, 4)`` boxes."""
        head, cfg = self.detector.rpn_head, self.rpn_cfg
        cls_scores, bbox_preds = head(feats)
        nms_pre = cfg.get('nms_pre', -1)
        mlvl_deltas, mlvl_anchors, mlvl_scores, level_ids = [], [], [], []
        for level, (cls_score,
                    bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            anchors = grid_anchors(head.prior_generator, level,
                                   _size(cls_score, 2), _size(cls_score, 3),
                                   cls_score.dtype, cls_score.device)
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(
                -1, head.bbox_coder.encode_size)
            logits = cls_score[0].permute(1, 2,
                                          0).reshape(-1, head.cls_out_channels)
            if head.use_sigmoid_cls:
                scores = logits.sigmoid().reshape(-1)
            else:
                scores = logits.softmax(-1)[:, 0]
            scores, idx = _topk(scores, nms_pre)
            mlvl_scores.append(scores)
            mlvl_deltas.append(deltas[idx])
            mlvl_anchors.append(anchors[idx])
            level_ids.append(torch.full_like(idx, level))
        boxes = decode_boxes(head.bbox_coder, torch.cat(mlvl_anchors),
                             torch.cat(mlvl_deltas), max_xyxy)
        scores, level_ids = torch.cat(mlvl_scores), torch.cat(level_ids)
        if cfg.get('min_bbox_size', -1) >= 0:
            keep = filter_min_size(boxes, cfg.min_bbox_size)
            boxes, scores, level_ids = (boxes[keep], scores[keep],
                                        level_ids[keep])
        keep = batched_nms(boxes, scores, level_ids, cfg.nms.iou_threshold)
        return boxes[keep[:cfg.max_per_img]]

    def detections(self, feats: Sequence[Tensor], proposals: Tensor,
                   max_xyxy: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """The bbox head on the proposals, as ``StandardRoIHead.
        predict_bbox`` (``rescale=False``): boxes, scores, labels."""
        roi, cfg = self.detector.roi_head, self.rcnn_cfg
        head = roi.bbox_head
        cls_score, bbox_pred = head(
            extract_roi_feats(roi.bbox_roi_extractor, feats, proposals))
        scores = nn.functional.softmax(cls_score, dim=-1)
        num_classes = head.num_classes
        num_rois = _size(proposals, 0)
        if head.reg_class_agnostic:
            boxes = decode_boxes(head.bbox_coder, proposals,
                                 bbox_pred.reshape(-1, 4), max_xyxy)
            boxes = boxes[:, None].expand(num_rois, num_classes, 4)
        else:
            rois = proposals.repeat_interleave(num_classes, dim=0)
            boxes = decode_boxes(head.bbox_coder, rois,
                                 bbox_pred.reshape(-1, 4), max_xyxy)
        # mmdet's multiclass_nms: every (roi, class) pair above score_thr
        boxes = boxes.reshape(-1, 4)
        scores = scores[:, :-1].reshape(-1)
        labels = torch.arange(
            num_classes,
            device=scores.device).view(1, -1).expand(num_rois,
                                                     num_classes).reshape(-1)
        valid = _keep(scores > cfg.score_thr)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels, cfg.nms.iou_threshold)
        if cfg.max_per_img > 0:
            keep = keep[:cfg.max_per_img]
        return boxes[keep], scores[keep], labels[keep]

    def mask_probs(self, feats: Sequence[Tensor], boxes: Tensor,
                   labels: Tensor) -> Tensor:
        """The mask head on the detections: each one's mask of its class,
        after ``sigmoid`` (``(N, 28, 28)``)."""
        roi = self.detector.roi_head
        mask_preds = roi.mask_head(
            extract_roi_feats(roi.mask_roi_extractor, feats, boxes))
        if roi.mask_head.class_agnostic:
            mask_preds = mask_preds[:, 0]
        else:
            index = labels.view(-1, 1, 1, 1).expand(-1, 1,
                                                    _size(mask_preds, 2),
                                                    _size(mask_preds, 3))
            mask_preds = mask_preds.gather(1, index)[:, 0]
        return mask_preds.sigmoid()

    def forward(self, img: Tensor) -> Tuple[Tensor, ...]:
        x, max_xyxy = self.preprocess(img)
        feats = self.detector.extract_feat(x)
        proposals = self.proposals(feats, max_xyxy)
        boxes, scores, labels = self.detections(feats, proposals, max_xyxy)
        if not self.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self.mask_probs(feats, boxes, labels)


def build_export_wrapper(detector: nn.Module,
                         model_cfg: Optional[dict] = None) -> _ExportWrapper:
    """The export wrapper of a built detector: :class:`SingleStageExport
    Wrapper` or :class:`TwoStageExportWrapper`, after
    :func:`check_supported` of ``model_cfg`` (default: the detector's
    class and heads).

    Raises:
        UnsupportedModelError: see :func:`check_supported`.

    Example:
        >>> from mmepsa.deployment import build_export_wrapper
        >>> from mmepsa.analysis.benchmark import build_detector
        >>> det = build_detector('configs/demo/'
        ...     'retinanet_epsanet50-s_fpn_demo-shapes.py')  # doctest: +SKIP
        >>> build_export_wrapper(det).output_names  # doctest: +SKIP
        ('boxes', 'scores', 'labels')
    """
    if model_cfg is None:
        model_cfg = _cfg_of(detector)
    kind = check_supported(model_cfg)
    if kind == 'single_stage':
        return SingleStageExportWrapper(detector)
    return TwoStageExportWrapper(detector)


def _cfg_of(detector: nn.Module) -> dict:
    """A ``cfg.model``-like dict of a built detector's types."""
    cfg: Dict[str, dict] = dict(type=type(detector).__name__)
    for name in ('bbox_head', 'rpn_head', 'roi_head'):
        part = getattr(detector, name, None)
        if part is not None:
            cfg[name] = dict(type=type(part).__name__)
    roi = getattr(detector, 'roi_head', None)
    if roi is not None:
        for name in ('bbox_head', 'mask_head', 'bbox_roi_extractor',
                     'mask_roi_extractor'):
            part = getattr(roi, name, None)
            if part is not None:
                cfg['roi_head'][name] = dict(type=type(part).__name__)
    return cfg
