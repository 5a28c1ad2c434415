# Cascade Mask R-CNN, EPSANet-50 (small) + FPN, 3x schedule with multi-scale
# training (shorter side sampled in [640, 800]), COCO 2017: mmdet's
# cascade-mask-rcnn_r50_fpn_ms-3x_coco.py (RepeatDataset x3, 12 "epochs", lr
# x0.1 after 9 and 11, SGD lr 0.02 for 16 images) with the backbone swapped.
# The backbone starts from the ImageNet checkpoint below: see
# configs/cascade_rcnn/README.md to get or convert it.
_base_ = [
    'mmdet::common/ms_3x_coco-instance.py',
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py'
]

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

# mmdet's common/ms_3x_coco-instance.py evaluates boxes only; mask AP too,
# as mmdet's 1x Cascade Mask R-CNN (and its reference figures) do.
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator

auto_scale_lr = dict(enable=False, base_batch_size=16)
