# EPSANet-101 (small) on ImageNet-1k, 8 GPUs x 32 images: the EPSANet-50
# recipe (the authors' main.py defaults) with depth 101.
_base_ = './epsanet50-s_8xb32_in1k.py'

model = dict(backbone=dict(depth=101))
