# PSPNet, EPSANet-101 (small), output stride 8, Cityscapes 512x1024, 80k.
_base_ = './pspnet_epsanet50-s-d8_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet101-s_imagenet.pth')))
