# Cascade Mask R-CNN, EPSANet-101 (small) + FPN, 1x schedule, COCO 2017.
_base_ = './cascade-mask-rcnn_epsanet50-s_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet101-s_imagenet.pth')))
