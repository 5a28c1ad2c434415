# DINO (4 scales), EPSANet-50 (small), 12 epochs, COCO 2017: mmdet's
# dino-4scale_r50_8xb2-12e_coco.py (AdamW lr 1e-4 for 16 images = 8 GPUs x 2
# images, weight decay 1e-4, backbone lr x0.1, gradients clipped at 0.1, lr
# x0.1 after epoch 11) with the backbone swapped. As mmdet's ResNet-50 there,
# the backbone hands stages 2-4 (out_indices=(1, 2, 3)) to the ChannelMapper,
# whose in_channels are those stages' widths; its BN is frozen (statistics
# and affine). The backbone starts from the ImageNet checkpoint below: see
# configs/dino/README.md to get or convert it.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'

custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        # contiguous NCHW features (the default): ChannelMapper is mmdet's,
        # not channels-last aware like ChannelsLastFPN (docs/backbone.md)
        contiguous_outputs=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s_imagenet.pth')),
    # EPSANet-50's stage widths are ResNet-50's: 256/512/1024/2048
    neck=dict(in_channels=[512, 1024, 2048]))

auto_scale_lr = dict(enable=False, base_batch_size=16)
