# Copyright (c) mmepsa contributors. All rights reserved.
"""check_data_paths (what tools/train.py checks before building anything)
names the first missing path of a config and the config field holding it,
and the first empty file in a data folder."""
import re
import shutil

import pytest
from mmengine.config import Config

from mmepsa.utils.paths import check_data_paths
from tests.utils import child_config

MISSING_PATHS = [
    pytest.param(
        "train_dataloader = dict(dataset=dict(data_root='{tmp}/no_data/'))",
        r'data folder not found: {tmp}/no_data/ '
        r'\(train_dataloader\.dataset\.data_root\)',
        id='data_root'),
    pytest.param(
        "train_dataloader = dict(dataset=dict(ann_file='missing.json'))",
        r'annotation file not found: {tmp}/data/missing\.json '
        r'\(train_dataloader\.dataset\.ann_file\)',
        id='ann_file'),
    pytest.param(
        "train_dataloader = dict(dataset=dict(data_prefix=dict(img='imgs/')))",
        r'data folder not found: {tmp}/data/imgs/ '
        r'\(train_dataloader\.dataset\.data_prefix\.img\)',
        id='image-folder'),
    pytest.param(
        "val_dataloader = dict(dataset=dict(ann_file='val.json'))",
        r'annotation file not found: {tmp}/data/val\.json '
        r'\(val_dataloader\.dataset\.ann_file\)',
        id='val-ann_file'),
    pytest.param(
        "val_evaluator = dict(ann_file='{tmp}/data/val.json')",
        r'annotation file not found: {tmp}/data/val\.json '
        r'\(val_evaluator\.ann_file\)',
        id='val_evaluator-ann_file'),
    pytest.param(
        'train_dataloader = dict(dataset=dict(_delete_=True, '
        "type='RepeatDataset', times=2, dataset=dict(type='CocoDataset', "
        "data_root='{tmp}/data/', ann_file='missing.json', "
        "data_prefix=dict(img='images/'), pipeline=[])))",
        r'annotation file not found: {tmp}/data/missing\.json '
        r'\(train_dataloader\.dataset\.dataset\.ann_file\)',
        id='wrapped-dataset'),
    pytest.param(
        'model = dict(backbone=dict(init_cfg=dict(_delete_=True, '
        "type='Pretrained', "
        "checkpoint='{tmp}/checkpoints/epsanet50-s_imagenet.pth')))",
        r'pretrained checkpoint not found: '
        r'{tmp}/checkpoints/epsanet50-s_imagenet\.pth '
        r'\(model\.backbone\.init_cfg\.checkpoint\)',
        id='pretrained'),
    pytest.param(
        "load_from = 'work_dirs/no_such_run/epoch_12.pth'",
        r'checkpoint not found: work_dirs/no_such_run/epoch_12\.pth '
        r'\(resolved to .*/work_dirs/no_such_run/epoch_12\.pth\) '
        r'\(load_from\)',
        id='load_from'),
]


@pytest.mark.parametrize('override,match', MISSING_PATHS)
def test_check_data_paths_names_the_missing_path(tiny_project, tmp_path,
                                                 override, match):
    tmp = tiny_project['tmp']
    config = child_config(tiny_project, tmp_path, 'missing.py',
                          override.format(tmp=tmp))
    message = check_data_paths(Config.fromfile(config))
    assert re.fullmatch(match.format(tmp=re.escape(tmp)), message), message


def test_check_data_paths_accepts_the_complete_project(tiny_project):
    cfg = Config.fromfile(tiny_project['config'])
    assert check_data_paths(cfg) is None
    cfg.val_evaluator = [cfg.val_evaluator]
    cfg.train_dataloader.dataset = dict(
        type='ConcatDataset', datasets=[cfg.train_dataloader.dataset] * 2)
    assert check_data_paths(cfg) is None
    # an empty or unset data_prefix entry is neither checked nor scanned
    for dataset in cfg.train_dataloader.dataset.datasets:
        dataset.data_prefix = dict(seg=None, img='images/', sem='')
    assert check_data_paths(cfg) is None


def test_check_data_paths_names_an_empty_image(tiny_project, tmp_path):
    """A 0-byte file among the images: named with the field and the count
    (OpenCV would fail on it mid-training without its name); a subfolder
    and a non-empty file are not reported."""
    data = tmp_path / 'data'
    shutil.copytree(tiny_project['tmp'] + '/data', data)
    images = data / 'images'
    (images / 'nested').mkdir()
    (images / 'nested' / 'deep.png').write_bytes(b'')  # not in subfolders
    config = child_config(
        tiny_project, tmp_path, 'empty.py',
        f"train_dataloader = dict(dataset=dict(data_root='{data}/'))")
    assert check_data_paths(Config.fromfile(config)) is None
    for name in ('img_3.png', 'img_1.png'):
        (images / name).write_bytes(b'')
    message = check_data_paths(Config.fromfile(config))
    assert message == (
        f'empty file: {images}/img_1.png '
        '(train_dataloader.dataset.data_prefix.img; 2 empty files there; '
        f'list them with find {data}/images/ -maxdepth 1 -type f -size 0)')
