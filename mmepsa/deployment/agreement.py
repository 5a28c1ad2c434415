# Copyright (c) mmepsa contributors. All rights reserved.
"""How well two detectors' detections agree, image by image
(:class:`DetectionAgreement`): the evaluator compares a deployed model with
PyTorch by it, and the export's check the two runtimes."""
from typing import List

import numpy as np
import torch

#: The smallest IoU allowed between matched detections of two fp32 runs.
IOU_AGREEMENT = 0.99


class DetectionAgreement:
    """How well the detections of a model under test (onnxruntime) match
    those of a reference (PyTorch), image by image: each reference
    detection, highest score first, is matched to the unmatched test
    detection of the same label that overlaps it most, if their IoU is at
    least ``match_iou``.

    Args:
        match_iou (float): Lowest IoU of a match. Defaults to 0.5.

    Example:
        >>> import torch
        >>> from mmengine.structures import InstanceData
        >>> from mmepsa.deployment import DetectionAgreement
        >>> a = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.]]),
        ...                  scores=torch.tensor([0.9]),
        ...                  labels=torch.tensor([1]))
        >>> agreement = DetectionAgreement()
        >>> agreement.add(a, a)
        >>> agreement.summary()['min_iou']
        1.0
    """

    def __init__(self, match_iou: float = 0.5) -> None:
        self.match_iou = match_iou
        self.counts = dict(reference=0, test=0, matched=0)
        self.ious: List[float] = []
        self.mask_ious: List[float] = []
        self.score_diffs: List[float] = []
        self.unmatched_scores: List[float] = []

    def add(self, reference, test) -> None:
        """Match the detections of one image (two ``InstanceData`` with
        ``bboxes``, ``scores``, ``labels`` and maybe ``masks``)."""
        from torchvision.ops import box_iou
        ref_boxes = reference.bboxes.float()
        test_boxes = test.bboxes.float()
        self.counts['reference'] += len(ref_boxes)
        self.counts['test'] += len(test_boxes)
        if len(ref_boxes) and len(test_boxes):
            ious = box_iou(ref_boxes, test_boxes)
            # the same box (also of no area, whose IoU is not a number)
            same = (ref_boxes[:, None] - test_boxes[None]).abs().amax(-1)
            ious[same < 1e-3] = 1.0
            ious[reference.labels[:, None] != test.labels[None, :]] = -1
        else:
            ious = torch.zeros(len(ref_boxes), len(test_boxes))
        taken = torch.zeros(len(test_boxes), dtype=torch.bool)
        masks = 'masks' in reference and 'masks' in test
        for i in torch.argsort(reference.scores, descending=True).tolist():
            row = ious[i].clone() if len(test_boxes) else ious[i]
            row[taken] = -1
            if len(row) == 0 or float(row.max()) < self.match_iou:
                self.unmatched_scores.append(float(reference.scores[i]))
                continue
            j = int(row.argmax())
            taken[j] = True
            self.counts['matched'] += 1
            self.ious.append(float(row[j]))
            self.score_diffs.append(
                abs(float(reference.scores[i]) - float(test.scores[j])))
            if masks:
                a = torch.as_tensor(reference.masks[i]).bool()
                b = torch.as_tensor(test.masks[j]).bool()
                union = int((a | b).sum())
                self.mask_ious.append(
                    int((a & b).sum()) / union if union else 1.0)
        self.unmatched_scores += [
            float(s) for s in test.scores[~taken].tolist()
        ]

    def merge(self, other: 'DetectionAgreement') -> None:
        """Take in the images ``other`` matched (as if added here)."""
        for key, value in other.counts.items():
            self.counts[key] += value
        for name in ('ious', 'mask_ious', 'score_diffs', 'unmatched_scores'):
            getattr(self, name).extend(getattr(other, name))

    def summary(self) -> dict:
        """Counts, the IoUs of the matched detections (min, mean, how many
        reach :data:`IOU_AGREEMENT`), their largest score difference, and
        the highest score of an unmatched detection."""
        out = dict(self.counts)
        out['unmatched'] = len(self.unmatched_scores)
        out['max_unmatched_score'] = max(self.unmatched_scores, default=None)
        out['min_iou'] = min(self.ious, default=None)
        out['mean_iou'] = float(np.mean(self.ious)) if self.ious else None
        out[f'iou_ge_{IOU_AGREEMENT}'] = sum(v >= IOU_AGREEMENT
                                             for v in self.ious)
        out['max_score_diff'] = max(self.score_diffs, default=None)
        if self.mask_ious:
            out['min_mask_iou'] = min(self.mask_ious)
            out['mean_mask_iou'] = float(np.mean(self.mask_ious))
        return out
