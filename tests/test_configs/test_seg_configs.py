# Copyright (c) mmepsa contributors. All rights reserved.
"""mmsegmentation integration: the segmentation configs, the d8 dilated
backbone, and the segmentation demo (data, training, mmseg's IoUMetric).

mmsegmentation is optional: without it this whole module is skipped.
"""
import ast
import copy
import glob
import json
import math
import os
import os.path as osp
import re

import pytest

pytest.importorskip(
    'mmseg',
    reason='mmsegmentation is not installed: pip install '
    '"mmsegmentation==1.2.2"')

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

import mmepsa  # noqa: E402,F401
from mmepsa.demo import seg_data as demo_seg  # noqa: E402
from mmepsa.models import EPSANet  # noqa: E402
from tests.utils import REPO  # noqa: E402

SEG_CONFIGS = sorted(
    osp.relpath(p, REPO) for folder in ('upernet', 'sem_fpn', 'pspnet')
    for p in glob.glob(osp.join(REPO, 'configs', folder, '*.py')))
DEMO_CONFIG = osp.join(REPO, 'configs', 'seg_demo',
                       'fpn_epsanet50-s_demo-shapes.py')


def _load(path):
    return Config.fromfile(osp.join(REPO, path))


def _build(model_cfg):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS.build(model_cfg)


def _batch(model, num_classes, size=64, num=2):
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(num):
        inputs.append(
            torch.randint(
                0, 256, (3, size, size), dtype=torch.uint8, generator=gen))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, size, size), generator=gen))
        sample.set_metainfo(
            dict(img_shape=(size, size), ori_shape=(size, size)))
        samples.append(sample)
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)


def test_seg_configs_found():
    names = {osp.basename(p) for p in SEG_CONFIGS}
    for depth in (50, 101):
        for sched in ('80k', '160k'):
            assert (f'upernet_epsanet{depth}-s_4xb4-{sched}_ade20k-512x512.py'
                    in names)
        assert f'fpn_epsanet{depth}-s_4xb4-160k_ade20k-512x512.py' in names
        assert (f'pspnet_epsanet{depth}-s-d8_4xb2-80k_cityscapes-512x1024.py'
                in names)


@pytest.mark.parametrize('path', SEG_CONFIGS)
def test_seg_config_builds_and_trains_a_step(path):
    cfg = _load(path)
    assert 'mmepsa' in cfg.custom_imports['imports']
    assert cfg.model.pretrained is None
    backbone = cfg.model.backbone
    depth = 101 if 'epsanet101' in path else 50
    assert backbone.type == 'EPSANet' and backbone.depth == depth
    assert backbone.norm_cfg.type == 'SyncBN' and not backbone.norm_eval
    v1c = '-v1c' if '-v1c' in path else ''  # deep stem: its own checkpoint
    assert backbone.init_cfg == dict(
        type='Pretrained',
        checkpoint=f'checkpoints/epsanet{depth}-s{v1c}_imagenet.pth')
    d8 = '-d8_' in path
    assert tuple(backbone.strides) == ((1, 2, 1, 1) if d8 else (1, 2, 2, 2))
    assert tuple(backbone.dilations) == ((1, 1, 2, 4) if d8 else (1, 1, 1, 1))
    iters = int(re.search(r'_4xb\d-(\d+)k_', path).group(1)) * 1000
    assert cfg.train_cfg.max_iters == iters
    assert cfg.param_scheduler[0].end == iters

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    model_cfg.data_preprocessor.size = (64, 64)
    model = _build(model_cfg)
    assert isinstance(model.backbone, EPSANet)
    assert len(model.backbone.layer3) == (23 if depth == 101 else 6)
    num_classes = model.decode_head.num_classes
    assert num_classes == (19 if 'cityscapes' in path else 150)
    model.train()
    losses = model(**_batch(model, num_classes), mode='loss')
    loss_keys = [k for k in losses if 'loss' in k]
    assert 'decode.loss_ce' in loss_keys
    if model.with_auxiliary_head:
        assert 'aux.loss_ce' in loss_keys
    for key in loss_keys:
        assert torch.isfinite(losses[key]).all(), key


def test_dilated_backbone_output_stride_8():
    cfg = _load('configs/pspnet/'
                'pspnet_epsanet50-s-d8_4xb2-80k_cityscapes-512x1024.py')
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.init_cfg = None
    backbone_cfg.norm_cfg = dict(type='BN', requires_grad=True)
    backbone_cfg.pop('type')
    model = EPSANet(**backbone_cfg).eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 96))
    assert [tuple(o.shape)
            for o in outs] == [(1, 256, 16, 24), (1, 512, 8, 12),
                               (1, 1024, 8, 12), (1, 2048, 8, 12)]
    # every block of a dilated stage (the first one too: no
    # contract_dilation) dilates all 4 PSA convs, padding d * (k // 2)
    for layer, dilation in (('layer3', 2), ('layer4', 4)):
        for block in getattr(model, layer):
            for i, kernel in enumerate((3, 5, 7, 9)):
                conv = getattr(block.conv2, f'conv_{i + 1}')
                assert conv.stride == (1, 1)
                assert conv.dilation == (dilation, dilation)
                assert conv.padding == (dilation * (kernel // 2), ) * 2


def test_demo_seg_does_not_import_mmseg_at_import_time():
    tree = ast.parse(open(demo_seg.__file__).read())
    for node in tree.body:  # module-level statements only
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or '']
        else:
            continue
        assert not any(n.split('.')[0] == 'mmseg' for n in names), names


def test_demo_seg_dataset(tmp_path):
    root = str(tmp_path / 'seg')
    demo_seg.make_demo_seg_dataset(
        root, num_train=3, num_val=2, img_size=48, verbose=False)
    for split, num in (('train', 3), ('val', 2)):
        imgs = sorted(os.listdir(osp.join(root, 'img_dir', split)))
        anns = sorted(os.listdir(osp.join(root, 'ann_dir', split)))
        assert imgs == [f'{i:06d}.jpg' for i in range(num)]
        assert anns == [f'{i:06d}.png' for i in range(num)]
    import cv2
    labels = np.stack([
        cv2.imread(p, cv2.IMREAD_UNCHANGED)
        for p in sorted(glob.glob(osp.join(root, 'ann_dir', '*', '*.png')))
    ])
    assert labels.dtype == np.uint8 and labels.shape[1:] == (48, 48)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (labels == 0).any() and (labels > 0).any()
    with open(osp.join(root, 'generator.json')) as f:
        assert json.load(f)['classes'] == list(demo_seg.SEG_CLASSES)
    assert demo_seg.SEG_CLASSES == ('background', 'circle', 'rectangle',
                                    'triangle')
    # idempotent: nothing rewritten; no temporary directories left over
    stamp = os.stat(osp.join(root, 'ann_dir', 'val', '000001.png')).st_mtime_ns
    demo_seg.make_demo_seg_dataset(
        root, num_train=3, num_val=2, img_size=48, verbose=False)
    assert os.stat(osp.join(root, 'ann_dir', 'val',
                            '000001.png')).st_mtime_ns == stamp
    assert sorted(os.listdir(tmp_path)) == ['seg']


def test_polygons_to_label_map_paints_in_order():
    square = [[2.0, 2.0, 7.0, 2.0, 7.0, 7.0, 2.0, 7.0]]
    inner = [[4.0, 4.0, 5.0, 4.0, 5.0, 5.0, 4.0, 5.0]]
    label = demo_seg.polygons_to_label_map([
        dict(category_id=2, segmentation=square),
        dict(category_id=3, segmentation=inner)
    ], 10, 10)
    assert label[0, 0] == 0 and label[2, 2] == 2 and label[7, 7] == 2
    assert label[4, 4] == 3 and label[5, 5] == 3


def test_demo_seg_trains_and_evaluates(tmp_path):
    from mmengine.runner import Runner
    root = demo_seg.make_demo_seg_dataset(
        str(tmp_path / 'data'),
        num_train=4,
        num_val=2,
        img_size=64,
        verbose=False) + os.sep
    cfg = Config.fromfile(DEMO_CONFIG)
    assert cfg.model.backbone.type == 'EPSANet'
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head.num_classes == len(demo_seg.SEG_CLASSES)
    assert tuple(cfg.metainfo['classes']) == demo_seg.SEG_CLASSES
    assert cfg.val_evaluator.type == 'IoUMetric'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.train_dataloader.batch_size = 2
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.train_cfg.max_iters = 2
    cfg.train_cfg.val_interval = 2
    cfg.param_scheduler = [
        dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=2)
    ]
    cfg.default_hooks.checkpoint = None  # no 300 MB file for a test
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.val()
    assert 'mIoU' in metrics and 0 <= metrics['mIoU'] <= 100
    assert all(math.isfinite(v) for v in metrics.values())
    scalars = glob.glob(
        osp.join(cfg.work_dir, '*', 'vis_data', 'scalars.json'))
    assert scalars, 'no training log'
    with open(scalars[0]) as f:
        losses = [json.loads(line).get('loss') for line in f]
    assert any(v is not None and math.isfinite(v) for v in losses)

    untrained = demo_seg.evaluate_untrained(
        DEMO_CONFIG, data_root=root, work_dir=str(tmp_path / 'untrained'))
    assert 'mIoU' in untrained and 0 <= untrained['mIoU'] <= 100
