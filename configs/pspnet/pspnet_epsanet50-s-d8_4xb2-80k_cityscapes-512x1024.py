# PSPNet, EPSANet-50 (small), dilated to output stride 8 ("d8"), Cityscapes
# 512x1024 crops, 80k iterations. mmseg's ResNetV1c-50-d8 PSPNet recipe
# (pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py: 4 GPUs x 2 images, SGD lr
# 0.01, momentum 0.9, weight decay 5e-4, poly lr decay, SyncBN, auxiliary FCN
# head on stage 3) with the backbone swapped. Stages 3 and 4 keep stride 1
# and dilate their PSA convs by 2 and 4 (see configs/pspnet/README.md for how
# this differs from ResNetV1c-d8). The backbone starts from the ImageNet
# checkpoint below: see the README to get or convert it.
_base_ = [
    'mmseg::_base_/models/pspnet_r50-d8.py',
    'mmseg::_base_/datasets/cityscapes.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

crop_size = (512, 1024)
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
        # output stride 8: no downsampling in stages 3 and 4, dilated instead
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s_imagenet.pth')),
    decode_head=dict(in_channels=2048, num_classes=19),
    auxiliary_head=dict(in_channels=1024, num_classes=19))
