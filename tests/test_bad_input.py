# Copyright (c) mmepsa contributors. All rights reserved.
"""Bad input gets a clear error, never a silent wrong result; untrusted
checkpoints are refused.

Table-driven: each row is one bad input and the message it must produce.
The README's "Troubleshooting" section lists the same cases.
"""
import logging
import math
import os
import os.path as osp
import pathlib
import pickle
import re
import shutil
import subprocess

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import mmepsa  # noqa: F401  (registers EPSANet, safe checkpoint loading)
from mmepsa.models import EPSANet
from test_tools import (PYTHON, TOOLS, load_tool, make_tiny_project, run_tool,
                        tool_env)

# The narrow EPSANet of tests/test_tools.py: 16 channels in stage 1, split
# into 4 branches of 4 channels.
TINY = dict(
    stem_channels=16, base_channels=16, conv_groups=(1, 2, 4, 4), se_ratio=4)


def three_stages(**kwargs) -> dict:
    return dict(dict(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                     out_indices=(0, 1, 2)), **kwargs)


# --------------------------------------------------------------------------
# 1. Backbone arguments: every argument of EPSANet has a bad value here or in
# tests/test_epsanet.py::test_bad_arguments (rows there are not repeated).

BAD_ARGUMENTS = [
    pytest.param(dict(depth='50'), KeyError,
                 r"invalid depth '50', allowed: \[50, 101\]", id='depth'),
    pytest.param(dict(variant='Small'), KeyError,
                 r"invalid variant 'Small', allowed: \['small'\] \(or give "
                 r'conv_kernels and conv_groups explicitly\)',
                 id='variant'),
    pytest.param(dict(conv_kernels=(3, 5, 7, 0)), ValueError,
                 r'conv_kernels must be 4 positive ints, one per PSA branch, '
                 r'got \(3, 5, 7, 0\)', id='conv_kernels-zero'),
    pytest.param(dict(conv_groups=(1, 2, 4, 3)), ValueError,
                 r'stage 1 has 16 channels \(base_channels=16\); they must '
                 r'split into 4 branches of 16/4 channels, each divisible by '
                 r'its conv_groups \(1, 2, 4, 3\)', id='conv_groups-divide'),
    pytest.param(dict(base_channels=24), ValueError,
                 r'stage 1 has 24 channels \(base_channels=24\)',
                 id='base_channels-divide'),
    pytest.param(dict(num_stages=0), ValueError,
                 r'num_stages must be in \[1, 4\], got 0', id='num_stages'),
    pytest.param(dict(strides=(1, 2)), ValueError,
                 r'strides needs one entry per stage \(num_stages=4\), got '
                 r'\(1, 2\)', id='strides-length'),
    pytest.param(dict(dilations=(1, 1, 2)), ValueError,
                 r'dilations needs one entry per stage \(num_stages=4\)',
                 id='dilations-length'),
    pytest.param(dict(out_indices=(-1, )), ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\)',
                 id='out_indices-negative'),
    pytest.param(three_stages(out_indices=(1, 3)), ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2\)',
                 id='out_indices-num_stages'),
    pytest.param(dict(style='Pytorch'), ValueError,
                 r"invalid style 'Pytorch', allowed: 'pytorch', 'caffe'",
                 id='style'),
    pytest.param(three_stages(frozen_stages=4), ValueError,
                 r'frozen_stages must be in \[-1, 3\], got 4',
                 id='frozen_stages-num_stages'),
    pytest.param(dict(se_ratio=5), ValueError,
                 r'stage 1 has 4 channels per branch, fewer than se_ratio=5; '
                 r'raise base_channels or lower se_ratio', id='se_ratio-big'),
    pytest.param(dict(channels_last='yes'), ValueError,
                 r"channels_last must be None \(auto: on for CPU inputs\), "
                 r"True or False, got 'yes'", id='channels_last'),
    pytest.param(dict(pretrained=pathlib.Path('a.pth')), TypeError,
                 r'pretrained must be a str or None, got PosixPath',
                 id='pretrained-type'),
    pytest.param(dict(pretrained='a.pth',
                      init_cfg=[dict(type='Kaiming', layer='Conv2d')]),
                 ValueError,
                 r'init_cfg and pretrained cannot be specified at the same '
                 r'time', id='init_cfg-and-pretrained'),
    # Not checked yet: the proposed check's message is expected.
    pytest.param(dict(in_channels=0), ValueError,
                 r'in_channels must be a positive int, got 0',
                 id='in_channels-zero'),
    pytest.param(dict(in_channels='3'), ValueError,
                 r"in_channels must be a positive int, got '3'",
                 id='in_channels-str'),
    pytest.param(dict(stem_channels=0), ValueError,
                 r'stem_channels must be a positive int, got 0',
                 id='stem_channels'),
    pytest.param(dict(base_channels=0), ValueError,
                 r'base_channels must be a positive int, got 0',
                 id='base_channels-zero'),
    pytest.param(dict(base_channels=16.0), ValueError,
                 r'base_channels must be a positive int, got 16\.0',
                 id='base_channels-float'),
    pytest.param(dict(se_ratio=0), ValueError,
                 r'se_ratio must be a positive int, got 0',
                 id='se_ratio-zero'),
    pytest.param(dict(num_stages=2.0), ValueError,
                 r'num_stages must be in \[1, 4\], got 2\.0',
                 id='num_stages-float'),
    pytest.param(dict(strides=(1, 2, 2, 0)), ValueError,
                 r'strides must be positive ints, got \(1, 2, 2, 0\)',
                 id='strides-zero'),
    pytest.param(dict(strides=2), ValueError,
                 r'strides needs one entry per stage \(num_stages=4\), got 2',
                 id='strides-int'),
    pytest.param(dict(dilations=(1, 1, 1, 0)), ValueError,
                 r'dilations must be positive ints, got \(1, 1, 1, 0\)',
                 id='dilations-zero'),
    pytest.param(dict(out_indices=(0, 0)), ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
                 r'each index once, got \(0, 0\)',
                 id='out_indices-repeated'),
    pytest.param(dict(out_indices=3), ValueError,
                 r'out_indices must be a non-empty subset of \(0, 1, 2, 3\), '
                 r'each index once, got 3',
                 id='out_indices-int'),
    pytest.param(dict(conv_kernels=(3, 5, 7, 8)), ValueError,
                 r'conv_kernels must be odd .*got \(3, 5, 7, 8\)',
                 id='conv_kernels-even'),
    pytest.param(dict(conv_groups=4), ValueError,
                 r'conv_groups must be 4 positive ints, one per PSA branch, '
                 r'got 4', id='conv_groups-int'),
    pytest.param(dict(frozen_stages=None), ValueError,
                 r'frozen_stages must be in \[-1, 4\], got None',
                 id='frozen_stages-none'),
    pytest.param(dict(norm_cfg=dict(type='BatchNorm')), KeyError,
                 r"invalid norm_cfg type 'BatchNorm', registered: "
                 r"\[.*'BN'.*'GN'.*'SyncBN'\]",
                 id='norm_cfg-type'),
    pytest.param(dict(norm_cfg='BN'), TypeError,
                 r"norm_cfg must be a dict with a 'type' key, got 'BN'",
                 id='norm_cfg-str'),
    pytest.param(dict(norm_cfg=dict(type='GN')), ValueError,
                 r"norm_cfg of type 'GN' needs num_groups",
                 id='norm_cfg-GN'),
    pytest.param(dict(conv_cfg=dict(type='DCNv3')), KeyError,
                 r"invalid conv_cfg type 'DCNv3', registered: "
                 r"\[.*'Conv2d'.*\]",
                 id='conv_cfg-type'),
    pytest.param(dict(norm_eval='no'), ValueError,
                 r"norm_eval must be True or False, got 'no'",
                 id='norm_eval'),
    pytest.param(dict(with_cp='no'), ValueError,
                 r"with_cp must be True or False, got 'no'",
                 id='with_cp'),
    pytest.param(dict(zero_init_residual='no'), ValueError,
                 r"zero_init_residual must be True or False, got 'no'",
                 id='zero_init_residual'),
    pytest.param(dict(init_cfg='checkpoints/epsanet50.pth'), TypeError,
                 r'init_cfg must be None, a dict or a list of dicts',
                 id='init_cfg-str'),
]


@pytest.mark.parametrize('kwargs,error,match', BAD_ARGUMENTS)
def test_bad_backbone_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        EPSANet(**dict(dict(TINY, depth=50), **kwargs))


@pytest.mark.parametrize('init_cfg,error,match', [
    (dict(type='Pretrained'), FileNotFoundError,
     r"pretrained checkpoint '' not found \(init_cfg\.checkpoint"),
    (dict(type='Pretrianed', checkpoint='a.pth'), KeyError,
     r'Pretrianed is not in the mmengine::weight initializer registry'),
])
def test_bad_init_cfg_fails_at_init_weights(init_cfg, error, match):
    model = EPSANet(50, **TINY, init_cfg=init_cfg)
    with pytest.raises(error, match=match):
        model.init_weights()


# --------------------------------------------------------------------------
# 2. Inputs: wrong channel count, empty, smaller than the output stride


@pytest.mark.parametrize('in_channels,shape,match', [
    (3, (1, 1, 32, 32), r'expects input of shape \(N, 3, H, W\) '
     r'\(in_channels=3.*got \(1, 1, 32, 32\)'),
    (3, (1, 4, 32, 32), r'expects input of shape \(N, 3, H, W\).*'
     r'got \(1, 4, 32, 32\)'),
    (3, (3, 32, 32), r'expects input of shape \(N, 3, H, W\).*'
     r'got \(3, 32, 32\)'),
    (1, (1, 3, 32, 32), r'expects input of shape \(N, 1, H, W\) '
     r'\(in_channels=1.*got \(1, 3, 32, 32\)'),
    pytest.param(3, (1, 3, 0, 32), r'expects input of shape \(N, 3, H, W\) '
                 r'\(in_channels=3, H and W >= 1\), got \(1, 3, 0, 32\)',
                 ),
])
def test_bad_input_shape(in_channels, shape, match):
    model = EPSANet(50, **TINY, in_channels=in_channels).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.rand(*shape))


@pytest.fixture(scope='module')
def tiny_backbone():
    model = EPSANet(50, **TINY)
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize('size', [1, 16, 31, 32, 33])
def test_input_smaller_than_the_stride(tiny_backbone, size):
    """No error: every stride-2 layer rounds up, so stage k (stride
    4, 8, 16, 32) is ceil(size / stride) wide, at least 1x1."""
    with torch.no_grad():
        outs = tiny_backbone(torch.rand(2, 3, size, size))
    assert [tuple(o.shape[2:]) for o in outs] == [
        (math.ceil(size / s), ) * 2 for s in (4, 8, 16, 32)
    ]


def test_batch_of_one_too_small_for_train_mode_batchnorm():
    """BN in train mode (norm_eval=False) needs more than one value per
    channel: with one image of at most 32 px the last stage is 1x1, and
    torch's BN refuses it. Two images, or norm_eval=True, are fine."""
    model = EPSANet(50, **TINY, norm_eval=False).train()
    with pytest.raises(ValueError,
                       match=r'Expected more than 1 value per channel when '
                       r'training, got input size torch\.Size\(\[1, \d+, 1, '
                       r'1\]\)'):
        model(torch.rand(1, 3, 32, 32))
    assert model(torch.rand(2, 3, 32, 32))[3].shape == (2, 512, 1, 1)
    model = EPSANet(50, **TINY, norm_eval=True).train()
    assert model(torch.rand(1, 3, 32, 32))[3].shape == (1, 512, 1, 1)


DETECTOR = """
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(_delete_=True, type='EPSANet', depth=50, base_channels=16,
                  stem_channels=16, se_ratio=4, conv_groups=(1, 2, 4, 4),
                  out_indices=(1, 2, 3), norm_eval=True),
    neck=dict(in_channels=[128, 256, 512], out_channels=16, num_outs=3,
              start_level=0, add_extra_convs='on_input'),
    bbox_head=dict(num_classes=2, in_channels=16, feat_channels=16,
                   stacked_convs=1,
                   anchor_generator=dict(strides=[8, 16, 32])),
    test_cfg=dict(score_thr=0.0, max_per_img=20))
"""


@pytest.fixture(scope='module')
def tiny_detector(tmp_path_factory):
    from mmdet.registry import MODELS
    path = tmp_path_factory.mktemp('detector') / 'retinanet_tiny.py'
    path.write_text(DETECTOR)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(Config.fromfile(str(path)).model)
    model.init_weights()
    return model


@pytest.mark.parametrize('height,width', [(1, 1), (5, 7), (31, 31)])
def test_tiny_image_through_a_detector(tiny_detector, height, width):
    """The data preprocessor pads every image to a multiple of 32, so the
    backbone sees 32x32; boxes stay inside the real image and the losses are
    finite."""
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, height, width]] * 2, num_classes=2)
    model = tiny_detector
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        assert data['inputs'].shape[2:] == (32, 32)
        feats = model.extract_feat(data['inputs'])
        assert [tuple(f.shape[2:]) for f in feats] == [(4, 4), (2, 2),
                                                       (1, 1)]
        results = model(**data, mode='predict')
    for res in results:
        boxes = res.pred_instances.bboxes
        assert len(boxes) > 0
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= width
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= height
    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    for name, value in losses.items():
        total = sum(value) if isinstance(value, list) else value
        assert torch.isfinite(total), name


# --------------------------------------------------------------------------
# 3. Missing data and checkpoints, through tools/train.py


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('project'))
    return dict(tmp=tmp, config=make_tiny_project(tmp))


@pytest.fixture(scope='module')
def train_tool():
    return load_tool('train.py')


def _child_config(project, name, body):
    path = osp.join(project['tmp'], name)
    with open(path, 'w') as f:
        f.write("_base_ = './retinanet_epsanet_tiny.py'\n" + body)
    return path


MISSING_PATHS = [
    pytest.param(
        "train_dataloader = dict(dataset=dict(data_root='{tmp}/no_data/'))",
        r'error: data folder not found: {tmp}/no_data/ '
        r'\(train_dataloader\.dataset\.data_root\)', id='data_root'),
    pytest.param(
        "train_dataloader = dict(dataset=dict(ann_file='missing.json'))",
        r'error: annotation file not found: {tmp}/data/missing\.json '
        r'\(train_dataloader\.dataset\.ann_file\)', id='ann_file'),
    pytest.param(
        "train_dataloader = dict(dataset=dict(data_prefix=dict(img='imgs/')))",
        r'error: data folder not found: {tmp}/data/imgs/ '
        r'\(train_dataloader\.dataset\.data_prefix\.img\)', id='image-folder'),
    pytest.param(
        "val_dataloader = dict(dataset=dict(ann_file='val.json'))",
        r'error: annotation file not found: {tmp}/data/val\.json '
        r'\(val_dataloader\.dataset\.ann_file\)', id='val-ann_file'),
    pytest.param(
        "val_evaluator = dict(ann_file='{tmp}/data/val.json')",
        r'error: annotation file not found: {tmp}/data/val\.json '
        r'\(val_evaluator\.ann_file\)', id='val_evaluator-ann_file'),
    pytest.param(
        "train_dataloader = dict(dataset=dict(_delete_=True, "
        "type='RepeatDataset', times=2, dataset=dict(type='CocoDataset', "
        "data_root='{tmp}/data/', ann_file='missing.json', "
        "data_prefix=dict(img='images/'), pipeline=[])))",
        r'error: annotation file not found: {tmp}/data/missing\.json '
        r'\(train_dataloader\.dataset\.dataset\.ann_file\)',
        id='wrapped-dataset'),
    pytest.param(
        "model = dict(backbone=dict(init_cfg=dict(_delete_=True, "
        "type='Pretrained', "
        "checkpoint='{tmp}/checkpoints/epsanet50-s_imagenet.pth')))",
        r'error: pretrained checkpoint not found: '
        r'{tmp}/checkpoints/epsanet50-s_imagenet\.pth '
        r'\(model\.backbone\.init_cfg\.checkpoint\)', id='pretrained'),
    pytest.param(
        "load_from = 'work_dirs/no_such_run/epoch_12.pth'",
        r'error: checkpoint not found: work_dirs/no_such_run/epoch_12\.pth '
        r'\(resolved to .*/work_dirs/no_such_run/epoch_12\.pth\) '
        r'\(load_from\)', id='load_from'),
]


@pytest.mark.parametrize('override,match', MISSING_PATHS)
def test_train_names_the_missing_path(project, train_tool, override, match):
    tmp = project['tmp']
    config = _child_config(project, 'missing.py', override.format(tmp=tmp))
    with pytest.raises(SystemExit,
                       match=f'^{match.format(tmp=re.escape(tmp))}$'):
        train_tool.main([config, '--work-dir', osp.join(tmp, 'work_dir')])


def test_data_path_check_accepts_the_complete_project(project, train_tool):
    cfg = Config.fromfile(project['config'])
    assert train_tool.check_data_paths(cfg) is None
    cfg.val_evaluator = [cfg.val_evaluator]
    cfg.train_dataloader.dataset = dict(
        type='ConcatDataset', datasets=[cfg.train_dataloader.dataset] * 2)
    assert train_tool.check_data_paths(cfg) is None


def test_train_missing_annotation_file_is_one_line(project):
    """As users see it: one line on the console, no traceback."""
    config = _child_config(
        project, 'no_ann.py',
        "train_dataloader = dict(dataset=dict(ann_file='missing.json'))")
    proc = run_tool([PYTHON, osp.join(TOOLS, 'train.py'), config],
                    cwd=project['tmp'], check=False)
    missing = osp.join(project['tmp'], 'data', 'missing.json')
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f'error: annotation file not found: {missing} '
        '(train_dataloader.dataset.ann_file)')


def test_train_corrupt_image_names_the_file(project, tmp_path):
    root = tmp_path / 'corrupt'
    shutil.copytree(osp.join(project['tmp'], 'data'), root / 'data')
    bad = root / 'data' / 'images' / 'img_1.png'
    bad.write_bytes(b'<html>not an image</html>')
    config = _child_config(
        project, 'corrupt.py',
        f"train_dataloader = dict(dataset=dict(data_root='{root}/data/'))")
    proc = run_tool([PYTHON, osp.join(TOOLS, 'train.py'), config,
                     '--work-dir', str(root / 'work_dir')],
                    check=False)
    assert proc.returncode != 0
    assert f'failed to load image: {bad}' in proc.stdout, proc.stdout[-3000:]


@pytest.mark.xfail(strict=True, reason="mmcv's LoadImageFromFile re-raises "
                   "OpenCV's error for an empty file without its name")
def test_empty_image_file_names_the_file(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(Exception, match=re.escape(str(empty))):
        LoadImageFromFile()(dict(img_path=str(empty)))


# --------------------------------------------------------------------------
# 4. Damaged checkpoints, checkpoints of other models


@pytest.fixture(scope='module')
def good_checkpoint(tmp_path_factory):
    model = EPSANet(50, **TINY)
    path = tmp_path_factory.mktemp('good') / 'epsanet.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def _damage(good: pathlib.Path, tmp: pathlib.Path, how: str) -> str:
    path = tmp / f'{how}.pth'
    if how == 'zip-truncated':
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == 'legacy-truncated':
        torch.save(torch.load(good), tmp / 'legacy.pth',
                   _use_new_zipfile_serialization=False)
        data = (tmp / 'legacy.pth').read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == 'empty':
        path.write_bytes(b'')
    else:  # a web server's error page saved under the checkpoint's name
        path.write_text('<html><body>404 Not Found</body></html>\n')
    return str(path)


def _load_with(loader: str, path: str) -> None:
    if loader == 'load_checkpoint':
        load_checkpoint(EPSANet(50, **TINY), path)
    else:
        EPSANet(50, **TINY, init_cfg=dict(type='Pretrained',
                                          checkpoint=path)).init_weights()


@pytest.mark.parametrize('loader', ['load_checkpoint', 'init_cfg'])
@pytest.mark.parametrize('how,error,match', [
    ('zip-truncated', RuntimeError,
     r'cannot load checkpoint {}: RuntimeError: PytorchStreamReader failed '
     r'reading zip archive'),
    ('legacy-truncated', RuntimeError,
     r'cannot load checkpoint {}: RuntimeError: unexpected EOF'),
    ('empty', RuntimeError, r'cannot load checkpoint {}: EOFError: Ran out of input \(the '
     r'file is truncated, or not a PyTorch checkpoint\)'),
    ('html', pickle.UnpicklingError, r'refused to load checkpoint {}: '
     r'.*or it is damaged.*invalid load key'),
])
def test_damaged_checkpoint_names_the_file(good_checkpoint, tmp_path, loader,
                                           how, error, match):
    path = _damage(good_checkpoint, tmp_path, how)
    with pytest.raises(error, match=f'(?s)^{match.format(re.escape(path))}'):
        _load_with(loader, path)


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = str(tmp_path / 'epoch_12.pth')
    with pytest.raises(FileNotFoundError,
                       match=f'^checkpoint {re.escape(missing)} not found'):
        load_checkpoint(EPSANet(50, **TINY), missing)


class _LogRecords(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def mmengine_log():
    """What mmengine logs through its current logger during the test (the
    ``logger='current'`` of ``init_cfg=dict(type='Pretrained')``)."""
    handler = _LogRecords()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture(scope='module')
def resnet_checkpoint(tmp_path_factory):
    """mmdet ResNet-50 weights (narrow, as TINY): same stem, downsample and
    1x1 conv names as EPSANet, a plain 3x3 ``conv2`` instead of the PSA."""
    from mmdet.models.backbones import ResNet
    with DefaultScope.overwrite_default_scope('mmdet'):
        resnet = ResNet(50, stem_channels=16, base_channels=16)
    path = tmp_path_factory.mktemp('resnet') / 'resnet50.pth'
    torch.save({'state_dict': resnet.state_dict()}, path)
    return str(path)


UNEXPECTED_RESNET = r'unexpected key in source state_dict: ' \
    r'layer1\.0\.conv2\.weight, layer1\.1\.conv2\.weight'
MISSING_PSA = r'missing keys in source state_dict: ' \
    r'layer1\.0\.conv2\.conv_1\.weight, layer1\.0\.conv2\.conv_2\.weight'


def test_other_architecture_lists_the_mismatched_keys(resnet_checkpoint,
                                                      capsys, mmengine_log):
    # load_checkpoint (no logger): printed
    load_checkpoint(EPSANet(50, **TINY), resnet_checkpoint)
    printed = capsys.readouterr().out
    assert re.search(UNEXPECTED_RESNET, printed)
    assert re.search(MISSING_PSA, printed)
    # init_cfg Pretrained: logged as a warning
    EPSANet(50, **TINY, init_cfg=dict(
        type='Pretrained', checkpoint=resnet_checkpoint)).init_weights()
    logged = '\n'.join(mmengine_log)
    assert re.search(UNEXPECTED_RESNET, logged)
    assert re.search(MISSING_PSA, logged)


def test_other_architecture_strict_is_an_error(resnet_checkpoint):
    with pytest.raises(RuntimeError,
                       match=rf'(?s)do not match exactly.*{UNEXPECTED_RESNET}'
                       rf'.*{MISSING_PSA}'):
        load_checkpoint(EPSANet(50, **TINY), resnet_checkpoint, strict=True)


@pytest.fixture(scope='module')
def mmpretrain_checkpoint(tmp_path_factory):
    """An mmpretrain ImageClassifier checkpoint as its Runner saves it:
    ``backbone.``/``head.`` weights, meta, the message hub's HistoryBuffers
    (numpy arrays) and the optimizer state."""
    from mmpretrain.models import ImageClassifier
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(type='EPSANet', depth=50, out_indices=(3, ),
                          **TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=4, in_channels=512,
                      loss=dict(type='CrossEntropyLoss')))
    for p in classifier.parameters():
        nn.init.normal_(p)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1,
                                momentum=0.9)
    hub = MessageHub('mmpretrain_checkpoint_test')
    hub.update_scalar('train/loss', 1.25)
    hub.update_info('epoch', 3)
    path = tmp_path_factory.mktemp('mmpretrain') / 'epsanet50_in1k.pth'
    torch.save(
        {
            'meta': dict(epoch=3, iter=300, seed=0, mmengine_version='0.10.7',
                         dataset_meta=dict(classes=('a', 'b', 'c', 'd'))),
            'state_dict': classifier.state_dict(),
            'message_hub': hub.state_dict(),
            'optimizer': optimizer.state_dict(),
        }, path)
    return str(path), classifier.backbone.state_dict()


def test_mmpretrain_checkpoint_without_prefix_lists_missing_keys(
        mmpretrain_checkpoint, mmengine_log):
    """Without prefix='backbone.' no weight matches: every backbone key is
    reported missing (and the model keeps its initial weights)."""
    path, weights = mmpretrain_checkpoint
    model = EPSANet(50, **TINY, init_cfg=dict(type='Pretrained',
                                              checkpoint=path))
    model.init_weights()
    logged = '\n'.join(mmengine_log)
    assert re.search(r'missing keys in source state_dict: conv1\.weight, '
                     r'bn1\.weight', logged), logged[-2000:]
    assert re.search(r'unexpected key in source state_dict: '
                     r'backbone\.conv1\.weight', logged)
    assert not torch.equal(model.conv1.weight, weights['conv1.weight'])


def test_mmpretrain_checkpoint_with_prefix_loads(mmpretrain_checkpoint,
                                                 mmengine_log):
    path, weights = mmpretrain_checkpoint
    model = EPSANet(50, **TINY, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assert not any('missing keys' in m for m in mmengine_log)
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_original_epsanet_checkpoint_loads(tmp_path, mmengine_log, legacy):
    """The authors' training script saves ``{'epoch', 'arch', 'state_dict'
    (DataParallel's ``module.`` names and the classifier ``fc.*``),
    'best_acc1', 'optimizer'}``; old torch versions wrote the legacy
    format."""
    torch.manual_seed(0)
    source = EPSANet(50, **TINY)
    for p in source.parameters():
        nn.init.normal_(p)
    fc = nn.Linear(512, 1000)
    params = list(source.parameters()) + list(fc.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    sum(p.sum() for p in params).backward()
    optimizer.step()  # momentum buffers in the optimizer state
    state = dict(source.state_dict(),
                 **{f'fc.{k}': v for k, v in fc.state_dict().items()})
    path = tmp_path / 'epsanet50_small.pth.tar'
    torch.save(
        {
            'epoch': 120,
            'arch': 'epsanet50',
            'state_dict': {f'module.{k}': v for k, v in state.items()},
            'best_acc1': torch.tensor(77.49),
            'optimizer': optimizer.state_dict(),
        },
        path,
        _use_new_zipfile_serialization=not legacy)
    model = EPSANet(50, **TINY, init_cfg=dict(type='Pretrained',
                                              checkpoint=str(path)))
    model.init_weights()
    logged = '\n'.join(mmengine_log)
    assert 'missing keys' not in logged
    assert re.search(r'unexpected key in source state_dict: fc\.weight, '
                     r'fc\.bias', logged)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


# --------------------------------------------------------------------------
# 5. Untrusted checkpoints: refused, and nothing in them runs


class _CreateFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


def _crafted(path: pathlib.Path, marker: pathlib.Path,
             legacy: bool = False) -> str:
    """A checkpoint that looks like a resume checkpoint but whose pickle
    would create ``marker``."""
    weights = EPSANet(50, **TINY).state_dict()
    torch.save(
        {
            'meta': dict(epoch=1, iter=2),
            'state_dict': weights,
            'message_hub': {'payload': _CreateFile(marker)},
        },
        path,
        _use_new_zipfile_serialization=not legacy)
    return str(path)


REFUSED = r'refused to load checkpoint {}: it holds objects other than tensors'


@pytest.mark.parametrize('loader', ['load_checkpoint', 'init_cfg'])
@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_crafted_checkpoint_is_refused(tmp_path, loader, legacy):
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epsanet.pth', marker, legacy)
    with pytest.raises(pickle.UnpicklingError,
                       match=REFUSED.format(re.escape(path))):
        _load_with(loader, path)
    assert not marker.exists()


def test_crafted_checkpoint_from_a_url_is_refused(tmp_path, monkeypatch,
                                                  good_checkpoint):
    """``http(s)://`` checkpoints: torch.hub's loader, which mmengine uses,
    defaults to weights_only=False; mmepsa's passes True. The files are put
    in torch.hub's cache beforehand, so nothing is downloaded."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    marker = tmp_path / 'pwned'
    _crafted(cache / 'evil.pth', marker)
    shutil.copy(good_checkpoint, cache / 'good.pth')

    url = 'https://example.invalid/models/evil.pth'
    with pytest.raises(pickle.UnpicklingError,
                       match=REFUSED.format(
                           re.escape(f'{url} (cached as {cache}/evil.pth)'))):
        _load_with('init_cfg', url)
    assert not marker.exists()
    model = EPSANet(50, **TINY)
    load_checkpoint(model, 'https://example.invalid/models/good.pth',
                    strict=True)


def test_crafted_checkpoint_refused_whatever_the_environment(tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns weights_only off wherever it
    is not passed explicitly, as mmengine's own loader does not; mmepsa's
    loader passes it."""
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epsanet.pth', marker)
    code = ('import mmepsa\n'
            'from mmengine.runner import load_checkpoint\n'
            'from mmepsa.models import EPSANet\n'
            f'load_checkpoint(EPSANet(50, **{TINY!r}), {path!r})\n')
    env = dict(tool_env(), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    proc = subprocess.run([PYTHON, '-c', code], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300)
    assert proc.returncode != 0
    assert re.search(REFUSED.format(re.escape(path)), proc.stdout), \
        proc.stdout[-3000:]
    assert not marker.exists()


def test_train_resume_refuses_crafted_checkpoint(project, tmp_path):
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epoch_1.pth', marker)
    proc = run_tool([PYTHON, osp.join(TOOLS, 'train.py'), project['config'],
                     '--work-dir', str(tmp_path / 'work_dir'), '--resume',
                     path], check=False)
    assert proc.returncode != 0
    assert re.search(REFUSED.format(re.escape(path)), proc.stdout), \
        proc.stdout[-3000:]
    assert not marker.exists()
