# PSPNet, EPSANet-50 (small) with a deep stem (ResNetV1c style, as mmseg's
# ResNetV1c-50-d8: three 3x3 stem convs, no avg_down), output stride 8,
# Cityscapes 512x1024, 80k iterations; the recipe of
# pspnet_epsanet50-s-d8_4xb2-80k_cityscapes-512x1024.py. The backbone starts
# from an ImageNet checkpoint of the same deep-stem EPSANet, trained with
# configs/epsanet/epsanet50-s-v1c_8xb32_in1k.py (the authors published none).
_base_ = './pspnet_epsanet50-s-d8_4xb2-80k_cityscapes-512x1024.py'

model = dict(
    backbone=dict(
        deep_stem=True,
        avg_down=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/epsanet50-s-v1c_imagenet.pth')))
