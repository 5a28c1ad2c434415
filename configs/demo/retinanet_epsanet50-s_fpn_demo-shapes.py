# RetinaNet with an EPSANet-50 (small) backbone, trained FROM SCRATCH on the
# synthetic shapes dataset of mmepsa.demo.data (3 classes, boxes
# only). Same data, sizes and schedule as the Mask R-CNN demo config (the
# _base_ file; this one was not calibrated separately):
#   .venv/bin/python tools/run_demo.py \
#       --config configs/demo/retinanet_epsanet50-s_fpn_demo-shapes.py \
#       --work-dir work_dirs/demo_retinanet
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    './_base_/epsanet50-s_demo-shapes.py'
]

model = dict(
    backbone={{_base_.epsanet_backbone}},
    neck={{_base_.epsanet_neck}},
    bbox_head=dict(num_classes=3),
    test_cfg=dict(nms_pre=300, max_per_img=20))
work_dir = 'work_dirs/demo_retinanet'
