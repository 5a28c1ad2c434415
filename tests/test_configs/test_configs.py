# Copyright (c) mmepsa contributors. All rights reserved.
"""Every config under ``configs/`` parses and builds its model; the model-zoo
metadata (metafiles, model-index.yml) matches the configs on disk.

No dataset and no checkpoint are needed: pretrained ``init_cfg`` entries are
dropped before a model is built. A loss-mode forward on a tiny random batch
runs for one Mask R-CNN and one RetinaNet (EPSANet-50 only, to stay fast).
"""
import copy
import glob
import importlib
import math
import os.path as osp

import pytest
import torch
import yaml
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

import mmepsa  # noqa: F401  (registers EPSANet)
from tests.utils import REPO as ROOT

CONFIG_DIR = osp.join(ROOT, 'configs')
ALL_CONFIGS = sorted(
    osp.relpath(p, ROOT).replace(osp.sep, '/')
    for p in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, CONFIG_DIR).split(osp.sep))
# configs/demo and configs/seg_demo hold runnable demos, not model-zoo
# entries: they must build, but they need not be listed in a metafile.
ZOO_CONFIGS = [
    c for c in ALL_CONFIGS
    if not c.startswith(('configs/demo/', 'configs/seg_demo/'))
]
# The ImageNet-initialised COCO recipe (test_detection_recipe). The
# from-scratch configs (configs/scratch: GN, no checkpoint, 6x) are built
# by test_config_builds and listed by the metadata tests like the others;
# their recipe is tested in test_scratch_configs.py, DINO's (AdamW, frozen
# BN, stages 2-4) in test_cascade_dino_configs.py.
DETECTION_DIRS = ('configs/mask_rcnn/', 'configs/retinanet/',
                  'configs/faster_rcnn/', 'configs/cascade_rcnn/')
DETECTION_CONFIGS = [c for c in ZOO_CONFIGS if c.startswith(DETECTION_DIRS)]
IMAGENET_CONFIGS = [c for c in ZOO_CONFIGS if c.startswith('configs/epsanet/')]
METAFILES = sorted(
    osp.relpath(p, ROOT).replace(osp.sep, '/')
    for p in glob.glob(osp.join(CONFIG_DIR, '*', 'metafile.yml')))


def load_config(rel_path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, rel_path))


def drop_pretrained(cfg):
    """Remove every ``init_cfg`` of type Pretrained, wherever it is."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        elif isinstance(init_cfg, list):
            cfg['init_cfg'] = [
                c for c in init_cfg
                if not (isinstance(c, dict) and c.get('type') == 'Pretrained')
            ] or None
        for value in cfg.values():
            drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            drop_pretrained(value)
    return cfg


def build_model(cfg: Config):
    """Build ``cfg.model`` in the registry of the config's default scope."""
    scope = cfg.get('default_scope', 'mmdet')
    try:
        registry = importlib.import_module(f'{scope}.registry').MODELS
    except ImportError:
        pytest.skip(f'{scope} is not installed')
    init_default_scope(scope)
    model_cfg = drop_pretrained(copy.deepcopy(cfg.model))
    return registry.build(model_cfg)


def test_configs_found():
    assert DETECTION_CONFIGS, 'no detection config found under configs/'
    assert IMAGENET_CONFIGS, 'no ImageNet config found under configs/epsanet'


# The authors' model zoo (github.com/murufeng/EPSANet README) lists these
# parameter counts (M) for their EPSANet-50 (small) detectors, counted as
# mmcv's complexity tool does: trainable parameters only, i.e. without the
# frozen stem and first stage. Matching them checks detector and backbone.
AUTHORS_TRAINABLE_PARAMS_M = {
    'configs/faster_rcnn/faster-rcnn_epsanet50-s_fpn_1x_coco.py': 38.56,
    'configs/mask_rcnn/mask-rcnn_epsanet50-s_fpn_1x_coco.py': 41.20,
    'configs/retinanet/retinanet_epsanet50-s_fpn_1x_coco.py': 34.78,
}
# ... and these for the ImageNet classifiers (all parameters, fc included).
AUTHORS_PARAMS_M = {
    'configs/epsanet/epsanet50-s_8xb32_in1k.py': 22.56,
    'configs/epsanet/epsanet101-s_8xb32_in1k.py': 38.90,
}


@pytest.mark.parametrize('config', ALL_CONFIGS)
def test_config_builds(config):
    cfg = load_config(config)
    # On the meta device: every constructor runs and the parameters are
    # counted, without filling ~50M weights at random (4-10x faster; the
    # tests below run real models).
    with torch.device('meta'):
        model = build_model(cfg)
    assert model.backbone.__class__.__name__ == 'EPSANet'
    if config in AUTHORS_TRAINABLE_PARAMS_M:
        trainable = sum(p.numel() for p in model.parameters()
                        if p.requires_grad)
        assert round(trainable / 1e6, 2) == AUTHORS_TRAINABLE_PARAMS_M[config]
    if config in AUTHORS_PARAMS_M:
        total = sum(p.numel() for p in model.parameters())
        assert round(total / 1e6, 2) == AUTHORS_PARAMS_M[config]
    if config in ZOO_CONFIGS:
        assert cfg.custom_imports == dict(
            imports=['mmepsa'], allow_failed_imports=False)
        backbone = cfg.model.backbone
        # Only the small variant is shipped (see the configs' READMEs).
        assert backbone.variant == 'small'
        assert model.backbone.conv_kernels == (3, 5, 7, 9)
        assert model.backbone.conv_groups == (1, 4, 8, 16)
        depth = 101 if 'epsanet101' in osp.basename(config) else 50
        assert backbone.depth == depth


@pytest.mark.parametrize('config', DETECTION_CONFIGS)
def test_detection_recipe(config):
    """The paper's COCO setting: mmdet's 1x (or 3x) SGD schedule for 16
    images, an EPSANet backbone initialised from its ImageNet checkpoint."""
    cfg = load_config(config)
    assert cfg.default_scope == 'mmdet'
    backbone = cfg.model.backbone
    assert backbone.type == 'EPSANet'
    assert backbone.out_indices == (0, 1, 2, 3)
    assert backbone.frozen_stages == 1
    assert backbone.norm_eval is True
    assert backbone.norm_cfg == dict(type='BN', requires_grad=True)
    assert backbone.style == 'pytorch'
    assert backbone.init_cfg.type == 'Pretrained'
    depth = backbone.depth
    assert backbone.init_cfg.checkpoint == (
        f'checkpoints/epsanet{depth}-s_imagenet.pth')
    assert cfg.model.neck.in_channels == [256, 512, 1024, 2048]
    # channels-last features into an FPN that runs channels-last and hands
    # the heads contiguous NCHW ones (tests/test_models/test_necks)
    assert backbone.contiguous_outputs is False
    assert cfg.model.neck.type == 'ChannelsLastFPN'

    optim = cfg.optim_wrapper.optimizer
    assert optim.type == 'SGD'
    assert optim.momentum == 0.9 and optim.weight_decay == 1e-4
    # mmdet's RetinaNet uses half the two-stage detectors' learning rate.
    expected_lr = 0.01 if 'retinanet' in config else 0.02
    assert optim.lr == expected_lr
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16 images
    assert cfg.train_cfg.max_epochs == 12
    steps = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR']
    assert len(steps) == 1
    if '_1x_' in config:
        assert steps[0].milestones == [8, 11]
        assert cfg.train_dataloader.dataset.type == 'CocoDataset'
    else:  # 3x: RepeatDataset x3 of 12 "epochs", as mmdet's ms(-poly)-3x
        assert '_ms-poly-3x_' in config or '_ms-3x_' in config
        assert steps[0].milestones == [9, 11]
        assert cfg.train_dataloader.dataset.type == 'RepeatDataset'
        assert cfg.train_dataloader.dataset.times == 3


@pytest.mark.parametrize('config', IMAGENET_CONFIGS)
def test_imagenet_recipe(config):
    """The authors' ImageNet recipe: SGD lr 0.1 for 256 images, momentum
    0.9, weight decay 1e-4, label smoothing 0.1, x0.1 every 30 epochs, 120
    epochs; the classifier is EPSANet + global pooling + a 2048->1000 fc."""
    cfg = load_config(config)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.model.type == 'ImageClassifier'
    assert cfg.model.backbone.out_indices == (3, )
    assert cfg.model.neck.type == 'GlobalAveragePooling'
    head = cfg.model.head
    assert (head.type, head.in_channels, head.num_classes) == ('LinearClsHead',
                                                               2048, 1000)
    assert head.loss.type == 'LabelSmoothLoss'
    assert head.loss.label_smooth_val == 0.1
    optim = cfg.optim_wrapper.optimizer
    assert (optim.type, optim.lr, optim.momentum,
            optim.weight_decay) == ('SGD', 0.1, 0.9, 1e-4)
    assert cfg.train_dataloader.batch_size * 8 == 256
    assert cfg.auto_scale_lr.base_batch_size == 256
    assert cfg.train_cfg.max_epochs == 120
    assert cfg.param_scheduler.milestones == [30, 60, 90]


@pytest.mark.parametrize('config, with_mask', [
    ('configs/mask_rcnn/mask-rcnn_epsanet50-s_fpn_1x_coco.py', True),
    ('configs/retinanet/retinanet_epsanet50-s_fpn_1x_coco.py', False),
])
def test_detector_loss_forward(config, with_mask):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    cfg = load_config(config)
    if cfg.model.get('train_cfg', {}).get('rcnn'):
        # Fewer sampled RoIs than COCO's 512 per image: same code path, a
        # fraction of the CPU time.
        cfg.model.train_cfg.rpn_proposal.max_per_img = 100
        cfg.model.train_cfg.rcnn.sampler.num = 64
    model = build_model(cfg)
    model.init_weights()
    model.train()
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 96, 128]], with_mask=with_mask)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert math.isfinite(total.item())
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if 'loss' in name:
                assert torch.isfinite(v).all(), name
    if with_mask:
        assert 'loss_mask' in losses
    total.backward()
    frozen = model.backbone.layer1[0].conv1.weight
    assert frozen.grad is None  # frozen_stages=1
    assert model.backbone.layer4[0].conv1.weight.grad is not None


def test_missing_pretrained_checkpoint_names_path(tmp_path):
    """A detector config whose ImageNet checkpoint is absent fails at
    init_weights with one FileNotFoundError that names the path and the
    converter."""
    cfg = load_config(DETECTION_CONFIGS[0])
    missing = str(tmp_path / 'no_such_epsanet50-s_imagenet.pth')
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.depth = 50
    backbone_cfg.init_cfg = ConfigDict(type='Pretrained', checkpoint=missing)
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    backbone = MODELS.build(backbone_cfg)
    with pytest.raises(FileNotFoundError, match='no_such_epsanet50-s') as e:
        backbone.init_weights()
    # ... and says how to make the checkpoint.
    assert 'tools/model_converters/epsanet_to_mmdet.py' in str(e.value)


def test_mmpretrain_checkpoint_feeds_detector(tmp_path):
    """The documented hand-off: a checkpoint of configs/epsanet's classifier
    initialises a detector backbone through
    ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
    """
    cls_cfg = load_config('configs/epsanet/epsanet50-s_8xb32_in1k.py')
    classifier = build_model(cls_cfg)
    ckpt = tmp_path / 'epoch_120.pth'
    torch.save({'state_dict': classifier.state_dict(), 'meta': {}}, ckpt)

    det_cfg = load_config(
        'configs/retinanet/retinanet_epsanet50-s_fpn_1x_coco.py')
    backbone_cfg = copy.deepcopy(det_cfg.model.backbone)
    backbone_cfg.init_cfg = ConfigDict(
        type='Pretrained', checkpoint=str(ckpt), prefix='backbone.')
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    expected = classifier.backbone.state_dict()
    loaded = backbone.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


# ---------------------------------------------------------------- metadata


def read_yaml(rel_path: str) -> dict:
    with open(osp.join(ROOT, rel_path), encoding='utf-8') as f:
        return yaml.safe_load(f)


def test_model_index_imports_every_metafile():
    index = read_yaml('model-index.yml')
    imports = index['Import']
    assert sorted(imports) == METAFILES
    for path in imports:
        assert osp.isfile(osp.join(ROOT, path)), path


@pytest.mark.parametrize('metafile', METAFILES)
def test_metafile(metafile):
    meta = read_yaml(metafile)
    collections = {c['Name'] for c in meta.get('Collections', [])}
    models = meta['Models']
    assert models
    names = [m['Name'] for m in models]
    assert len(names) == len(set(names))
    for model in models:
        assert model['In Collection'] in collections, model['Name']
        config = model['Config']
        assert osp.isfile(osp.join(ROOT, config)), config
        assert model['Name'] == osp.splitext(osp.basename(config))[0]
        assert model['Metadata']['Training Data']
        # No trained weights are published: no Weights link may be invented,
        # and the only figures are the paper's, labelled as such.
        assert not model.get('Weights'), model['Name']
        for result in model.get('Results') or []:
            assert result['Task'] and result['Dataset'] and result['Metrics']
            for metric in result['Metrics']:
                assert metric.endswith('(paper)'), (model['Name'], metric)


def test_every_zoo_config_in_a_metafile():
    listed = set()
    for metafile in METAFILES:
        listed.update(m['Config'] for m in read_yaml(metafile)['Models'])
    missing = sorted(set(ZOO_CONFIGS) - listed)
    assert not missing, f'configs missing from every metafile: {missing}'
    names = []
    for metafile in METAFILES:
        names += [m['Name'] for m in read_yaml(metafile)['Models']]
    assert len(names) == len(set(names)), 'duplicate model names'
