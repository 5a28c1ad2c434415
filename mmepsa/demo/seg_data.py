# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo shapes, as a semantic-segmentation dataset for mmsegmentation.

The images come from the same generator as the instance dataset of the
detection demo (:func:`mmepsa.demo.data.make_demo_dataset`, same
parameters and seed give the same pictures); each image gets a label PNG
rasterised from its COCO polygons, drawn in annotation order (the
generator's drawing order), so later shapes occlude earlier ones as in the
picture.

Label convention (no ``reduce_zero_label``): one ``uint8`` value per pixel,

    0 background, 1 circle, 2 rectangle, 3 triangle

so the dataset has 4 classes, background included (mmseg's ``IoUMetric``
then averages the IoU of the 4). Should the instance generator drop a shape
because it is mostly hidden (it places shapes so that this is rare), that
shape has no polygon and its visible remnant is labelled as whatever lies
under it: label noise inherited from the source dataset.

Layout written under ``root`` (mmseg's ``BaseSegDataset`` layout)::

    root/
      img_dir/train/000000.jpg ...    img_dir/val/...
      ann_dir/train/000000.png ...    ann_dir/val/...
      generator.json                  # versions and parameters

``make_demo_seg_dataset`` is idempotent (nothing is done when
``generator.json`` matches and the files are there) and atomic (built in a
temporary sibling directory, then renamed into place).

This module does not import mmsegmentation (only
:func:`evaluate_untrained` does, when called). Command line::

    python -m mmepsa.demo.seg_data --root data/demo_shapes_seg
    # the mIoU of a demo config's model before any training (the baseline
    # that training must beat), on the val split:
    python -m mmepsa.demo.seg_data --eval-untrained \
        configs/seg_demo/fpn_epsanet50-s_demo-shapes.py
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from .data import DEMO_CLASSES, DEMO_PALETTE, make_demo_dataset, write_dataset

__all__ = [
    'make_demo_seg_dataset', 'polygons_to_label_map', 'evaluate_untrained',
    'SEG_CLASSES', 'SEG_PALETTE', 'SEG_GENERATOR_VERSION'
]

#: Bump when the conversion changes, so that old datasets get regenerated.
SEG_GENERATOR_VERSION = 1
SEG_CLASSES = ('background', ) + tuple(DEMO_CLASSES)
SEG_PALETTE = [(0, 0, 0)] + [tuple(c) for c in DEMO_PALETTE]
_SPLITS = ('train', 'val')


def _source_version() -> int:
    from . import data
    return int(getattr(data, 'GENERATOR_VERSION', 0))


def polygons_to_label_map(annotations: Sequence[dict], height: int,
                          width: int) -> np.ndarray:
    """Rasterise COCO polygon annotations into a semantic label map.

    Args:
        annotations (Sequence[dict]): COCO annotations of one image, in
            drawing order (later ones are painted over earlier ones); each
            has ``category_id`` (1-based) and ``segmentation`` (polygons).
        height (int): Image height.
        width (int): Image width.

    Returns:
        np.ndarray: ``(height, width)`` uint8, 0 for background and the
        ``category_id`` elsewhere.
    """
    label = np.zeros((height, width), np.uint8)
    for ann in annotations:
        polys = [
            np.round(np.asarray(p, np.float64).reshape(-1, 2)).astype(np.int32)
            for p in ann['segmentation'] if len(p) >= 6
        ]
        if polys:
            cv2.fillPoly(label, polys, int(ann['category_id']))
    return label


def _convert_split(coco_root: str, out_root: str, split: str) -> None:
    with open(osp.join(coco_root, 'annotations',
                       f'instances_{split}.json')) as f:
        coco = json.load(f)
    by_image: Dict[int, List[dict]] = {img['id']: [] for img in coco['images']}
    for ann in sorted(coco['annotations'], key=lambda a: a['id']):
        by_image[ann['image_id']].append(ann)
    img_dir = osp.join(out_root, 'img_dir', split)
    ann_dir = osp.join(out_root, 'ann_dir', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for img in coco['images']:
        name = img['file_name']
        stem = osp.splitext(name)[0]
        os.replace(osp.join(coco_root, split, name), osp.join(img_dir, name))
        label = polygons_to_label_map(by_image[img['id']], img['height'],
                                      img['width'])
        if not cv2.imwrite(osp.join(ann_dir, stem + '.png'), label):
            raise OSError(f'could not write {stem}.png in {ann_dir}')


def _params(num_train, num_val, img_size, max_objects, seed) -> Dict:
    return dict(
        seg_version=SEG_GENERATOR_VERSION,
        source_version=_source_version(),
        num_train=int(num_train),
        num_val=int(num_val),
        img_size=int(img_size),
        max_objects=int(max_objects),
        seed=int(seed),
        classes=list(SEG_CLASSES))


def _expected_files(params: Dict) -> List[str]:
    files = []
    for split in _SPLITS:
        last = f"{params[f'num_{split}'] - 1:06d}"
        files += [
            osp.join('img_dir', split, last + '.jpg'),
            osp.join('ann_dir', split, last + '.png')
        ]
    return files


def make_demo_seg_dataset(root: str = 'data/demo_shapes_seg',
                          num_train: int = 300,
                          num_val: int = 50,
                          img_size: int = 96,
                          max_objects: int = 3,
                          seed: int = 0,
                          force: bool = False,
                          verbose: bool = True) -> str:
    """Generate the segmentation demo dataset under ``root`` unless it is
    already there.

    The arguments mean what they mean for
    :func:`mmepsa.demo.data.make_demo_dataset` (which draws the
    images); ``force`` regenerates even if a matching dataset exists.

    Returns:
        str: ``root``.
    """
    params = _params(num_train, num_val, img_size, max_objects, seed)

    def build(out_root: str) -> None:
        coco_root = osp.join(out_root, 'coco')
        # validates the arguments (ValueError) and draws the images
        make_demo_dataset(
            coco_root,
            num_train=num_train,
            num_val=num_val,
            img_size=img_size,
            max_objects=max_objects,
            seed=seed,
            force=True,
            verbose=False)
        for split in _SPLITS:
            _convert_split(coco_root, out_root, split)
        shutil.rmtree(coco_root)

    return write_dataset(root, params, _expected_files(params), build,
                         'demo segmentation dataset', force, verbose)


def evaluate_untrained(config: str,
                       data_root: Optional[str] = None,
                       work_dir: Optional[str] = None) -> Dict[str, float]:
    """Evaluate a segmentation config's model as initialised, untrained.

    Builds mmengine's Runner from ``config`` (its seed, so the weights are
    those training starts from), initialises the weights as training would,
    and runs the config's test loop and evaluator (mmseg's ``IoUMetric`` in
    the demo config). Imports mmengine and mmseg only when called.

    Args:
        config (str): Config file.
        data_root (str, optional): Override the test dataset's
            ``data_root``.
        work_dir (str, optional): Where the Runner writes its logs; a
            temporary directory, removed afterwards, if not given.

    Returns:
        dict: The evaluator's metrics, e.g. ``{'aAcc': ..., 'mIoU': ...,
        'mAcc': ...}``.
    """
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(config)
    if data_root is not None:
        cfg.test_dataloader.dataset.data_root = data_root
    cfg.load_from = None
    cfg.resume = False
    tmp = None
    if work_dir is None:
        tmp = work_dir = tempfile.mkdtemp(prefix='untrained-')
    cfg.work_dir = work_dir
    try:
        runner = Runner.from_cfg(cfg)
        runner.model.init_weights()
        return dict(runner.test())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes dataset of the '
        'segmentation demo (mmseg layout: img_dir/, ann_dir/; labels 0 '
        'background, 1 circle, 2 rectangle, 3 triangle).')
    parser.add_argument('--root', default='data/demo_shapes_seg')
    parser.add_argument('--num-train', type=int, default=300)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--img-size', type=int, default=96)
    parser.add_argument('--max-objects', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--force',
        action='store_true',
        help='regenerate even if an up-to-date copy exists')
    parser.add_argument(
        '--eval-untrained',
        metavar='CONFIG',
        help='then evaluate CONFIG\'s model, untrained, on the val split '
        '(its data_root is set to --root) and print the metrics')
    parser.add_argument(
        '--work-dir',
        help='work dir of --eval-untrained (default: a '
        'temporary one)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        make_demo_seg_dataset(args.root, args.num_train, args.num_val,
                              args.img_size, args.max_objects, args.seed,
                              args.force)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if args.eval_untrained:
        metrics = evaluate_untrained(
            args.eval_untrained,
            data_root=osp.normpath(args.root) + os.sep,
            work_dir=args.work_dir)
        print('untrained model: ' + ', '.join(f'{k}: {v}'
                                              for k, v in metrics.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
