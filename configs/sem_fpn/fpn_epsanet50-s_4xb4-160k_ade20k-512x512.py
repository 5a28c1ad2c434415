# Semantic FPN, EPSANet-50 (small), ADE20K 512x512, 160k iterations.
# mmseg's ResNet-50 Semantic FPN recipe (fpn_r50_4xb4-160k_ade20k-512x512.py:
# 4 GPUs x 4 images, SGD lr 0.01, momentum 0.9, weight decay 5e-4, poly lr
# decay, SyncBN) with the backbone swapped. The backbone starts from the
# ImageNet checkpoint below: see configs/sem_fpn/README.md to get or convert
# it.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    data_preprocessor=data_preprocessor,
    # mmseg's base sets 'open-mmlab://resnet50_v1c' here: not for EPSANet.
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s_imagenet.pth')),
    neck=dict(in_channels=[256, 512, 1024, 2048]),
    decode_head=dict(num_classes=150))
