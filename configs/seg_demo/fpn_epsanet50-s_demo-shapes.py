# Semantic FPN with an EPSANet-50 (small) backbone, trained FROM SCRATCH on
# the synthetic shapes of mmepsa.demo.seg_data (4 classes: background,
# circle, rectangle, triangle), sized to learn on a 2-core CPU in minutes
# (500 iterations; what it reaches: configs/seg_demo/README.md).
# Generate the data, then train and evaluate (mIoU, mmseg's IoUMetric) with
# mmseg's own train.py:
#   python -m mmepsa.demo.seg_data --root data/demo_shapes_seg
#   python .venv/lib/python3.11/site-packages/mmseg/.mim/tools/train.py \
#       configs/seg_demo/fpn_epsanet50-s_demo-shapes.py
# (the mIoU of the same model before training:
#   python -m mmepsa.demo.seg_data --eval-untrained \
#       configs/seg_demo/fpn_epsanet50-s_demo-shapes.py)
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)

# The dataset `python -m mmepsa.demo.seg_data` generates (its defaults).
demo_data = dict(num_train=300, num_val=50, img_size=96, max_objects=3, seed=0)
crop_size = (96, 96)
max_iters = 500
val_interval = max_iters
base_lr = 0.002
warmup_iters = 30

# Plain BN (one process, no SyncBN), learning and updating statistics.
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        variant='small',
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch',
        init_cfg=None),  # from scratch
    neck=dict(in_channels=[256, 512, 1024, 2048]),
    decode_head=dict(
        num_classes=4,
        norm_cfg=norm_cfg,
        # ~83 % of the pixels are background: down-weight it so that the
        # shapes are learned within the short schedule
        loss_decode=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            class_weight=[0.25, 1.0, 1.0, 1.0])))

# dataset: mmseg's BaseSegDataset over img_dir/ + ann_dir/ (labels 0..3,
# 0 = background, a real class: no reduce_zero_label)
dataset_type = 'BaseSegDataset'
data_root = 'data/demo_shapes_seg/'
metainfo = dict(
    classes=('background', 'circle', 'rectangle', 'triangle'),
    palette=[(0, 0, 0), (220, 20, 60), (0, 128, 255), (40, 200, 40)])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # the dataset's reduce_zero_label=False
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # the dataset's reduce_zero_label=False
    dict(type='PackSegInputs')
]
# num_workers=0: on 2 cores, loader processes only take time from the model.
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=False,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# schedule: AdamW (trains from scratch faster than SGD in few iterations),
# linear warm-up then poly decay; evaluation once, at the end.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=base_lr, weight_decay=0.01))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='PolyLR',
        eta_min=base_lr * 0.01,
        power=0.9,
        begin=warmup_iters,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
work_dir = 'work_dirs/fpn_epsanet50-s_demo-shapes'
