# Semantic FPN, EPSANet-101 (small), ADE20K 512x512, 160k iterations.
_base_ = './fpn_epsanet50-s_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet101-s_imagenet.pth')))
