# Copyright (c) mmepsa contributors. All rights reserved.
"""The synthetic shapes dataset of the demo (mmepsa.demo.data)."""
import hashlib
import inspect
import json
import os
import os.path as osp

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmepsa.demo import data as demo_data
from mmepsa.demo.data import DEMO_CLASSES, make_demo_dataset

SMALL = dict(num_train=6, num_val=3, img_size=64, max_objects=3, seed=0)


def _digest(root):
    """Hash of every file under root, by relative path."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            path = osp.join(d, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path,
                                root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_deterministic(tmp_path):
    a = make_demo_dataset(str(tmp_path / 'a'), verbose=False, **SMALL)
    b = make_demo_dataset(str(tmp_path / 'b'), verbose=False, **SMALL)
    da, db = _digest(a), _digest(b)
    assert da == db
    assert 'annotations/instances_train.json' in da
    assert 'train/000005.jpg' in da and 'val/000002.jpg' in da
    c = make_demo_dataset(
        str(tmp_path / 'c'), verbose=False, **dict(SMALL, seed=1))
    assert _digest(c) != da


def test_valid_coco(tmp_path):
    root = make_demo_dataset(str(tmp_path / 'd'), verbose=False, **SMALL)
    for split, num in (('train', 6), ('val', 3)):
        coco = COCO(osp.join(root, 'annotations', f'instances_{split}.json'))
        assert len(coco.getImgIds()) == num
        assert [c['name']
                for c in coco.loadCats(coco.getCatIds())] == list(DEMO_CLASSES)
        anns = coco.loadAnns(coco.getAnnIds())
        assert anns, 'every split should have objects'
        for ann in anns:
            img = coco.loadImgs(ann['image_id'])[0]
            assert (img['width'], img['height']) == (64, 64)
            assert osp.isfile(osp.join(root, split, img['file_name']))
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and ann['iscrowd'] == 0
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
            assert all(
                len(p) >= 6 and len(p) % 2 == 0 for p in ann['segmentation'])
            m = coco.annToMask(ann).astype(bool)
            assert m.any()
            ys, xs = np.nonzero(m)
            # the polygon mask lies inside its box (1 px of rasterisation)
            assert xs.min() >= x - 1 and xs.max() <= x + w
            assert ys.min() >= y - 1 and ys.max() <= y + h
            # area is that of the visible mask
            rle = mask_utils.merge(
                mask_utils.frPyObjects(ann['segmentation'], 64, 64))
            assert abs(mask_utils.area(rle) - ann['area']) <= max(
                0.35 * ann['area'], 12)


def test_occlusion_visible_masks_disjoint(tmp_path):
    root = make_demo_dataset(
        str(tmp_path / 'o'),
        verbose=False,
        **dict(SMALL, num_train=12, max_objects=4))
    coco = COCO(osp.join(root, 'annotations', 'instances_train.json'))
    for img_id in coco.getImgIds():
        masks = [
            coco.annToMask(a)
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        ]
        if len(masks) < 2:
            continue
        overlap = (np.sum(masks, 0) > 1).sum()
        # visible parts of different objects hardly share pixels (the
        # polygons' rasterisation may share their borders)
        assert overlap <= 0.1 * min(m.sum() for m in masks) + 8


def test_idempotent(tmp_path, capsys):
    root = str(tmp_path / 'i')
    make_demo_dataset(root, verbose=False, **SMALL)
    ann = osp.join(root, 'annotations', 'instances_train.json')
    stamp = os.stat(ann).st_mtime_ns
    before = _digest(root)
    assert make_demo_dataset(root, **SMALL) == root
    assert 'up to date' in capsys.readouterr().out
    assert os.stat(ann).st_mtime_ns == stamp
    # other parameters: regenerated in place
    make_demo_dataset(root, verbose=False, **dict(SMALL, num_val=2))
    assert not osp.exists(osp.join(root, 'val', '000002.jpg'))
    with open(osp.join(root, 'generator.json')) as f:
        assert json.load(f)['num_val'] == 2
    # a damaged copy (a missing file) is regenerated too
    make_demo_dataset(root, verbose=False, **SMALL)
    os.remove(ann)
    make_demo_dataset(root, verbose=False, **SMALL)
    assert _digest(root) == before
    # force regenerates identical content
    make_demo_dataset(root, verbose=False, force=True, **SMALL)
    assert _digest(root) == before
    # nothing left beside the dataset
    assert sorted(os.listdir(tmp_path)) == ['i']


def test_atomic_write(tmp_path, monkeypatch):
    root = str(tmp_path / 'x')
    real = demo_data._write_split

    def broken(out_root, split, *args, **kwargs):
        real(out_root, split, *args, **kwargs)
        if split == 'val':
            raise KeyboardInterrupt('interrupted')

    monkeypatch.setattr(demo_data, '_write_split', broken)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(root, verbose=False, **SMALL)
    # no half dataset and no temporary directory left
    assert os.listdir(tmp_path) == []

    # an existing dataset survives a failed regeneration untouched
    monkeypatch.setattr(demo_data, '_write_split', real)
    make_demo_dataset(root, verbose=False, **SMALL)
    before = _digest(root)
    monkeypatch.setattr(demo_data, '_write_split', broken)
    with pytest.raises(KeyboardInterrupt):
        make_demo_dataset(root, verbose=False, **dict(SMALL, seed=3))
    assert _digest(root) == before
    assert os.listdir(tmp_path) == ['x']


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_train'):
        make_demo_dataset(str(tmp_path / 'b'), num_train=0, verbose=False)
    with pytest.raises(ValueError, match='img_size'):
        make_demo_dataset(str(tmp_path / 'b'), img_size=8, verbose=False)
    assert not osp.exists(tmp_path / 'b')


def test_cli(tmp_path, capsys):
    root = str(tmp_path / 'cli')
    assert demo_data.main([
        '--root', root, '--num-train', '2', '--num-val', '1', '--img-size',
        '48'
    ]) == 0
    assert osp.isfile(osp.join(root, 'annotations', 'instances_val.json'))
    assert demo_data.main(['--root', root, '--num-train', '0']) == 1
    assert 'error' in capsys.readouterr().err


def test_defaults_are_written_once():
    """The CLI's defaults are make_demo_dataset's, and so are the demo
    config's ``demo_data`` (tools/run_demo.py passes those to it)."""
    from mmengine.config import Config
    default = demo_data.dataset_defaults()
    assert default == {
        name: param.default
        for name, param in inspect.signature(
            make_demo_dataset).parameters.items()
    }
    args = vars(demo_data.parse_args([]))
    assert {k: tuple(v) if k == 'obj_size' else v
            for k, v in args.items()} == {k: default[k]
                                          for k in args}
    cfg = Config.fromfile(
        osp.join(
            osp.dirname(__file__), '..', '..', 'configs', 'demo', '_base_',
            'epsanet50-s_demo-shapes.py'))
    assert {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in cfg.demo_data.items()
    } == {k: default[k]
          for k in cfg.demo_data}
