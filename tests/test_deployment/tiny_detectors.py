# Copyright (c) mmepsa contributors. All rights reserved.
"""The tiny two-stage detectors of the deployment tests (the RetinaNet is
the tiny project of ``tests/utils.py``): configs and random checkpoints;
and mmdet's detections, the reference of the exported ones."""
import os.path as osp

import numpy as np
import torch

from tests.utils import TINY_BACKBONE

# A narrow EPSANet (tests/utils.py) under mmdet's two-stage model bases,
# 16-channel neck and heads, 3 classes; few proposals and detections.
TWO_STAGE_CONFIG = """
_base_ = ['mmdet::_base_/models/{base}.py']
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='EPSANet', depth=50, {backbone},
                  out_indices=(0, 1, 2, 3), norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=16),
        bbox_head=dict(in_channels=16, fc_out_channels=32, num_classes=3),
        {mask}),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50),
                  rcnn=dict(max_per_img=20)))
"""
MASK_PARTS = ('mask_roi_extractor=dict(out_channels=16),\n'
              '        mask_head=dict(in_channels=16, conv_out_channels=16, '
              'num_classes=3)')

#: name -> mmdet model base of the two-stage tiny detectors
TWO_STAGE = {
    'faster-rcnn': 'faster-rcnn_r50_fpn',
    'mask-rcnn': 'mask-rcnn_r50_fpn'
}


def write_two_stage_config(folder: str, name: str) -> str:
    """Write the tiny ``name`` (a key of :data:`TWO_STAGE`) config into
    ``folder``; returns its path."""
    backbone = ', '.join(f'{k}={v!r}' for k, v in TINY_BACKBONE.items())
    text = TWO_STAGE_CONFIG.format(
        base=TWO_STAGE[name],
        backbone=backbone,
        mask=MASK_PARTS if name == 'mask-rcnn' else '')
    path = osp.join(folder, f'{name}_epsanet_tiny.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def save_random_checkpoint(config: str, path: str, seed: int) -> str:
    """The detector of ``config`` with seeded random weights, saved as an
    mmengine-style checkpoint (``state_dict`` + ``meta``)."""
    import torch

    from mmepsa.deployment.export import build_detector, load_config
    torch.manual_seed(seed)
    detector = build_detector(load_config(config))
    torch.save(dict(state_dict=detector.state_dict(), meta=dict()), path)
    return path


def mmdet_reference(detector, inputs: np.ndarray, scale_factor, ori_shape):
    """mmdet's ``test_step`` on the runner's resized input."""
    from mmdet.structures import DetDataSample
    meta = dict(
        img_shape=tuple(inputs.shape[2:]),
        ori_shape=ori_shape,
        scale_factor=scale_factor)
    data = dict(
        inputs=[torch.from_numpy(inputs[0]).to(torch.uint8)],
        data_samples=[DetDataSample(metainfo=meta)])
    with torch.no_grad():
        return detector.test_step(data)[0].pred_instances


def instances(result: dict):
    """A runner's result as an ``InstanceData`` (torch tensors)."""
    from mmengine.structures import InstanceData
    return InstanceData(
        **{k: torch.from_numpy(np.asarray(v))
           for k, v in result.items()})
