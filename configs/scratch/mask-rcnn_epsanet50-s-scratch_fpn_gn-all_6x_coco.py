# Mask R-CNN, EPSANet-50 (small) + FPN, trained FROM SCRATCH (no ImageNet
# checkpoint), COCO 2017: mmdet's recipe for that ("Rethinking ImageNet
# Pre-training", He et al. 2018; mmdet's
# mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py) with the backbone swapped.
# GroupNorm (32 groups) in the backbone, the FPN, the 4conv1fc box head and
# the mask head; random init; SGD lr 0.02, no weight decay on the norms, 73
# epochs, lr x0.1 after 65 and 71. See configs/scratch/README.md.
_base_ = 'mmdet::scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py'

custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        # what mmdet's scratch ResNet-50 sets: nothing frozen, no
        # zero-initialised last norm, GN everywhere (the stem, the
        # downsampling shortcuts and each block's three norms, the one after
        # the PSA module included), no checkpoint
        frozen_stages=-1,
        zero_init_residual=False,
        norm_cfg=norm_cfg,
        # norm_eval acts on BN only (a no-op with GN); False so that a
        # BN/SyncBN norm_cfg keeps learning its statistics from scratch
        norm_eval=False,
        style='pytorch',
        # channels-last features into ChannelsLastFPN, as the other COCO
        # configs (same results, fewer copies on CPU: docs/backbone.md)
        contiguous_outputs=False,
        init_cfg=None),
    neck=dict(type='ChannelsLastFPN', in_channels=[256, 512, 1024, 2048]))
