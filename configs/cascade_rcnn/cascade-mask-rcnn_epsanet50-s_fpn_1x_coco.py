# Cascade Mask R-CNN, EPSANet-50 (small) + FPN, 1x schedule (12 epochs),
# COCO 2017. mmdet's ResNet-50 recipe (SGD lr 0.02 for 16 images = 8 GPUs x
# 2 images, momentum 0.9, weight decay 1e-4, lr x0.1 after epochs 8 and 11;
# three box stages at IoU 0.5/0.6/0.7) with the backbone swapped. The
# backbone starts from the ImageNet checkpoint below: see
# configs/cascade_rcnn/README.md to get or convert it.
_base_ = 'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py'

custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        # channels-last features straight into the FPN, which runs
        # channels-last and hands the heads contiguous NCHW ones (the same
        # results, fewer copies on CPU: docs/backbone.md)
        contiguous_outputs=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s_imagenet.pth')),
    neck=dict(type='ChannelsLastFPN', in_channels=[256, 512, 1024, 2048]))

auto_scale_lr = dict(enable=False, base_batch_size=16)
