# UPerNet, EPSANet-101 (small), ADE20K 512x512, 80k iterations.
_base_ = './upernet_epsanet50-s_4xb4-80k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet101-s_imagenet.pth')))
