# What the demo detectors share: the synthetic shapes dataset of
# mmepsa.demo.data (3 classes), the EPSANet-50 (small) backbone
# trained FROM SCRATCH, the schedule and the runtime, sized so that the Mask
# R-CNN demo learns on a 2-core CPU within 15 minutes. A demo config adds
# the mmdet model base (which holds `model` only) and fills the model with
# epsanet_backbone and epsanet_neck (below) and its heads.
_base_ = [
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

# The dataset tools/run_demo.py generates (see make_demo_dataset's args).
# 900 training images seen twice rather than 300 seen six times: the same
# 450 iterations, but more distinct examples.
demo_data = dict(
    num_train=900,
    num_val=50,
    img_size=160,
    max_objects=3,
    obj_size=(0.12, 0.28),
    seed=0)
img_scale = (160, 160)
max_epochs = 2
base_lr = 3e-4
warmup_iters = 50

# The backbone and neck of both demo detectors.
epsanet_backbone = dict(
    _delete_=True,
    type='EPSANet',
    depth=50,
    variant='small',
    out_indices=(0, 1, 2, 3),
    frozen_stages=-1,
    # From scratch: every BN learns and keeps updating its statistics (batch
    # 4 of small images is enough for BN's batch statistics).
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=False,
    style='pytorch',
    init_cfg=None)
epsanet_neck = dict(in_channels=[256, 512, 1024, 2048])

# dataset
dataset_type = 'CocoDataset'
data_root = 'data/demo_shapes/'
metainfo = dict(
    classes=('circle', 'rectangle', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (40, 200, 40)])
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
# num_workers=0: on 2 cores, loader processes only take time from the model
# (the decoding of these small images is cheap).
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

# schedule: linear warm-up, then cosine decay to ~0 over the epochs
# (evaluation once, after the last epoch).
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        eta_min=base_lr * 0.01,
        begin=0,
        end=max_epochs,
        T_max=max_epochs,
        by_epoch=True,
        convert_to_iter_based=True)
]
# AdamW: from scratch at batch 4 it learns this task much faster than SGD.
# Gradients are clipped for the first, noisy iterations.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=base_lr, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10, norm_type=2))
# lr 3e-4 is for a total batch of 4 (1 process x 4 images)
auto_scale_lr = dict(enable=False, base_batch_size=4)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=True)
# A fixed seed (weights, shuffling, flips) and deterministic algorithms
# (which also keep the PSA convs' timing-based autotuning off): two runs of
# the demo on one machine train alike (docs/demo.md).
randomness = dict(seed=0, deterministic=True)
