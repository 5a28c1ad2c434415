# Mask R-CNN with an EPSANet-50 (small) backbone, trained FROM SCRATCH on the
# synthetic shapes dataset of mmepsa.demo.data (3 classes), sized so
# that it learns on a 2-core CPU within 15 minutes. `tools/run_demo.py`
# (`make demo`) generates the data and runs it; so does mmdet's train.py once
# the data is there:
#   python -m mmepsa.demo.data --root data/demo_shapes
# (its defaults are the values of `demo_data` in the _base_ file).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/epsanet50-s_demo-shapes.py'
]

# The neck and heads 128 channels wide instead of COCO's 256: on a 2-core
# CPU they, not the backbone, take most of an iteration (the mask head's
# 3x3 convs and mmcv's single-threaded CPU RoIAlign above all), and this
# task needs no more.
head_channels = 128
model = dict(
    backbone={{_base_.epsanet_backbone}},
    neck=dict(
        in_channels={{_base_.epsanet_neck.in_channels}},
        out_channels=head_channels),
    # Anchors of 16-256 px (scale 4 at strides 4-64) instead of COCO's
    # 32-512, which on 160-px images are partly larger than the image (the
    # shapes' boxes are 37-88 px, 5th-95th percentile of the training set).
    rpn_head=dict(
        in_channels=head_channels,
        feat_channels=head_channels,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=head_channels),
        bbox_head=dict(in_channels=head_channels, num_classes=3),
        mask_roi_extractor=dict(out_channels=head_channels),
        mask_head=dict(
            in_channels=head_channels,
            conv_out_channels=head_channels,
            num_classes=3)),
    # Smaller samplers and proposal counts than COCO's: few objects per
    # image, and a CPU budget.
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100), rcnn=dict(max_per_img=20)))

# the shared pipelines, with the masks loaded
img_scale = {{_base_.img_scale}}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
work_dir = 'work_dirs/demo'
# tools/run_demo.py trains this config under CPU bfloat16 autocast where the
# CPU has native bfloat16 (--precision auto; docs/demo.md).
demo_bf16 = True
