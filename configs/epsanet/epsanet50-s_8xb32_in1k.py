# EPSANet-50 (small) on ImageNet-1k, 8 GPUs x 32 images = 256 per step.
# The authors' recipe (their released main.py defaults): SGD lr 0.1 for 256
# images, momentum 0.9, weight decay 1e-4, label smoothing 0.1, lr x0.1 every
# 30 epochs, 120 epochs; RandomResizedCrop 224 + flip for training, resize
# 256 + center crop 224 for testing. Built on mmpretrain's ResNet-50
# label-smoothing recipe (resnet50_8xb32-lbs_in1k.py: same optimizer, data
# pipeline and loss, 100 epochs), with the backbone swapped and 120 epochs.
_base_ = 'mmpretrain::resnet/resnet50_8xb32-lbs_in1k.py'

custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=-1,
        norm_eval=False,
        style='pytorch',
        # The authors' model has no zero-init of the last BN of each block.
        zero_init_residual=False),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=2048,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0),
        topk=(1, 5)))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.0001))
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[30, 60, 90], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)
auto_scale_lr = dict(base_batch_size=256)
