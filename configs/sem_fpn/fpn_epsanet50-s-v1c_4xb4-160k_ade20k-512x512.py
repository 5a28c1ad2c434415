# Semantic FPN, EPSANet-50 (small) with a deep stem (ResNetV1c style, as
# mmseg's ResNet-50 Semantic FPN: three 3x3 stem convs, no avg_down), ADE20K
# 512x512, 160k iterations; the recipe of
# fpn_epsanet50-s_4xb4-160k_ade20k-512x512.py. The backbone starts from an
# ImageNet checkpoint of the same deep-stem EPSANet, trained with
# configs/epsanet/epsanet50-s-v1c_8xb32_in1k.py (the authors published none).
_base_ = './fpn_epsanet50-s_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        deep_stem=True,
        avg_down=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s-v1c_imagenet.pth')))
