# EPSANet-50 (small) with a deep stem (ResNetV1c style: three 3x3 convs
# instead of the 7x7 one, no avg_down) on ImageNet-1k, 8 GPUs x 32 images:
# the EPSANet-50 recipe otherwise. Not a model of the paper: it makes the
# ImageNet checkpoint that the "-v1c" segmentation configs start from
# (checkpoints/epsanet50-s-v1c_imagenet.pth, see configs/epsanet/README.md).
_base_ = './epsanet50-s_8xb32_in1k.py'

model = dict(backbone=dict(deep_stem=True, avg_down=False))
