# Copyright (c) mmepsa contributors. All rights reserved.
"""A small synthetic COCO-format instance-segmentation dataset for the demo.

Coloured circles, rectangles and triangles on noisy, textured backgrounds,
drawn deterministically from a seed with numpy and OpenCV only. Objects may
overlap; each instance's mask is its *visible* part (later-drawn objects
occlude earlier ones), stored as COCO polygons, with the box and area of the
visible part. Instances left mostly hidden are dropped.

Layout written under ``root``::

    root/
      annotations/instances_train.json
      annotations/instances_val.json
      train/000000.jpg ...
      val/000000.jpg ...
      generator.json      # generator version and parameters

``make_demo_dataset`` is idempotent (it does nothing when ``generator.json``
matches the requested parameters and all files are present) and atomic (the
dataset is built in a temporary sibling directory, then renamed into place),
so an interrupted run never leaves a half-written dataset behind.

Command line::

    python -m mmepsa.demo.data --root data/demo_shapes
"""
import argparse
import inspect
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    'make_demo_dataset', 'DEMO_CLASSES', 'DEMO_PALETTE', 'GENERATOR_VERSION'
]

#: Bump when the drawing changes, so that old datasets get regenerated.
GENERATOR_VERSION = 2
DEMO_CLASSES = ('circle', 'rectangle', 'triangle')
DEMO_PALETTE = [(220, 20, 60), (0, 128, 255), (40, 200, 40)]
_META_FILE = 'generator.json'
_PLACEMENT_TRIES = 10
_MAX_OCCLUDED = 0.3  # fraction of an object a later one may cover
_SPLITS = ('train', 'val')
#: A (min, max) range.
_Range = Tuple[float, float]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, noisy background: gradient + blurred blobs + lines +
    pixel noise."""
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-60, 60, size=(2, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    img = (
        base[None, None] + yy[..., None] * tilt[0] + xx[..., None] * tilt[1])
    # low-frequency colour blobs
    blobs = rng.normal(0, 1, size=(8, 8, 3)).astype(np.float32)
    blobs = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
    img += blobs * rng.uniform(5, 25)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # thin random lines (clutter that is not an object)
    for _ in range(int(rng.integers(0, 6))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, color, int(rng.integers(1, 3)), cv2.LINE_AA)
    noise = rng.normal(0, rng.uniform(4, 14), size=img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _shape_color(rng: np.random.Generator,
                 bg_mean: np.ndarray) -> Tuple[int, int, int]:
    """A saturated colour that stands out from the background mean."""
    for _ in range(20):
        color = rng.integers(0, 256, 3)
        if np.abs(color - bg_mean).sum() > 150:
            break
    return tuple(int(v) for v in color)


def _draw_shape(canvas: np.ndarray, cls: int, cx: float, cy: float, r: float,
                angle: float, color, line_type: int) -> None:
    """Draw shape ``cls`` (filled) centred at (cx, cy), of radius ~r."""
    if cls == 0:  # circle
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), int(round(r)),
                   color, -1, line_type)
        return
    if cls == 1:  # rectangle, rotated, aspect ratio 0.5..1
        w, h = r * 2 * 0.85, r * 2 * 0.85 * (0.5 + 0.5 * abs(np.cos(angle)))
        pts = cv2.boxPoints(((cx, cy), (w, h), np.degrees(angle) % 90))
    else:  # triangle, roughly equilateral
        angs = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + r * np.cos(angs), cy + r * np.sin(angs)], 1)
    pts = np.round(pts).astype(np.int32)
    cv2.fillPoly(canvas, [pts], color, line_type)


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) < 3 or cv2.contourArea(c) < 4:
            continue
        polys.append([float(v) for v in c.reshape(-1)])
    return polys


def _make_image(rng: np.random.Generator, size: int, max_objects: int,
                obj_size: _Range) -> Tuple[np.ndarray, List[dict]]:
    img = _background(rng, size)
    bg_mean = img.reshape(-1, 3).mean(0)
    num = int(rng.integers(1, max_objects + 1))
    ids = np.zeros((size, size), np.int32)  # visible instance id per pixel
    objects = []
    for k in range(num):
        cls = int(rng.integers(0, len(DEMO_CLASSES)))
        r = rng.uniform(*obj_size) * size
        angle = rng.uniform(0, 2 * np.pi)
        color = _shape_color(rng, bg_mean)
        # Some overlap, but no object hidden for the most part: a hidden
        # object could be neither annotated nor erased from the image.
        for _ in range(_PLACEMENT_TRIES):
            cx, cy = rng.uniform(r, size - r, 2)
            full = np.zeros((size, size), np.uint8)
            _draw_shape(full, cls, cx, cy, r, angle, 1, cv2.LINE_8)
            area = int(full.sum())
            covered = ids[full > 0]
            if area >= 30 and all(
                (covered == obj['id']).sum() <= _MAX_OCCLUDED *
                    obj['full_area'] for obj in objects):
                break
        else:
            continue
        _draw_shape(img, cls, cx, cy, r, angle, color, cv2.LINE_AA)
        ids[full > 0] = k + 1
        objects.append(dict(cls=cls, id=k + 1, full_area=area))
    anns = []
    for obj in objects:
        visible = ids == obj['id']
        vis_area = int(visible.sum())
        # drop instances that are mostly occluded (rare, see placement)
        if vis_area < 0.4 * obj['full_area'] or vis_area < 30:
            continue
        polys = _mask_to_polygons(visible)
        if not polys:
            continue
        ys, xs = np.nonzero(visible)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        anns.append(
            dict(
                category_id=obj['cls'] + 1,
                bbox=[float(x0),
                      float(y0),
                      float(x1 - x0),
                      float(y1 - y0)],
                area=float(vis_area),
                segmentation=polys,
                iscrowd=0))
    return img, anns


def _write_split(out_root: str, split: str, num: int, size: int,
                 max_objects: int, obj_size: _Range, seed: int) -> None:
    img_dir = osp.join(out_root, split)
    os.makedirs(img_dir, exist_ok=True)
    # independent, reproducible streams per split
    rng = np.random.default_rng([seed, _SPLITS.index(split)])
    images, annotations = [], []
    for i in range(num):
        img, anns = _make_image(rng, size, max_objects, obj_size)
        file_name = f'{i:06d}.jpg'
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover
            raise RuntimeError(f'could not encode {file_name}')
        with open(osp.join(img_dir, file_name), 'wb') as f:
            f.write(buf.tobytes())
        images.append(
            dict(id=i + 1, file_name=file_name, width=size, height=size))
        for ann in anns:
            ann.update(id=len(annotations) + 1, image_id=i + 1)
            annotations.append(ann)
    coco = dict(
        info=dict(
            description=f'mmepsa demo shapes ({split})',
            version=str(GENERATOR_VERSION)),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=i + 1, name=name, supercategory='shape')
            for i, name in enumerate(DEMO_CLASSES)
        ])
    ann_dir = osp.join(out_root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    with open(osp.join(ann_dir, f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f, sort_keys=True)


def _params(num_train, num_val, img_size, max_objects, obj_size, seed) -> Dict:
    return dict(
        obj_size=[float(v) for v in obj_size],
        version=GENERATOR_VERSION,
        num_train=int(num_train),
        num_val=int(num_val),
        img_size=int(img_size),
        max_objects=int(max_objects),
        seed=int(seed))


def dataset_is_complete(root: str, params: Dict, files: Sequence[str]) -> bool:
    """Whether ``root`` holds a finished dataset made with ``params``: its
    parameter file (written last, by :func:`write_dataset`) matches
    ``params`` and every one of ``files`` (relative to ``root``)
    exists. Shared by the demo generators."""
    try:
        with open(osp.join(root, _META_FILE)) as f:
            if json.load(f) != params:
                return False
    except (OSError, ValueError):
        return False
    return all(osp.isfile(osp.join(root, name)) for name in files)


def _expected_files(params: Dict) -> List[str]:
    files = []
    for split in _SPLITS:
        num = params[f'num_{split}']
        files.append(osp.join('annotations', f'instances_{split}.json'))
        if num:
            files.append(osp.join(split, f'{num - 1:06d}.jpg'))
    return files


def swap_into_place(tmp: str, root: str) -> None:
    """Replace ``root`` by the finished folder ``tmp`` (same parent) with
    renames only, so a reader never sees a half-written dataset; an older
    ``root`` is moved aside first and deleted last."""
    parent = osp.dirname(osp.abspath(root))
    old = None
    if osp.lexists(root):
        old = tempfile.mkdtemp(prefix=osp.basename(root) + '.old-', dir=parent)
        os.rename(root, osp.join(old, 'data'))
    os.rename(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_dataset(root: str,
                  params: Dict,
                  files: Sequence[str],
                  build: Callable[[str], None],
                  name: str,
                  force: bool = False,
                  verbose: bool = True) -> str:
    """Make the dataset ``name`` under ``root`` unless it is already there.

    Idempotent: nothing is done when ``root`` holds a finished dataset made
    with ``params`` (:func:`dataset_is_complete` with ``files``), unless
    ``force``. Atomic: ``build(tmp)`` writes the dataset in a temporary
    sibling folder, the parameter file is written last, then
    :func:`swap_into_place` puts it in place; the temporary folder is
    removed if anything fails. Shared by the demo generators.

    Args:
        root (str): Output directory.
        params (dict): The generator's parameters, written to
            ``generator.json``; its ``num_train``, ``num_val`` and
            ``img_size`` are printed.
        files (Sequence[str]): Files (relative to ``root``) that a
            finished dataset has.
        build (Callable[[str], None]): Writes the dataset into the folder
            it is given.
        name (str): What is made, for the messages.
        force (bool): Regenerate even if a matching dataset exists.
        verbose (bool): Print what is done.

    Returns:
        str: ``root``, normalised.
    """
    root = osp.normpath(root)
    if not force and dataset_is_complete(root, params, files):
        if verbose:
            print(f'{name} up to date: {root}')
        return root
    parent = osp.dirname(osp.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=osp.basename(root) + '.tmp-', dir=parent)
    try:
        if verbose:
            print(f"generating {name} ({params['num_train']} train / "
                  f"{params['num_val']} val images of {params['img_size']}px)"
                  f' in {root} ...')
        build(tmp)
        with open(osp.join(tmp, _META_FILE), 'w') as f:
            json.dump(params, f, sort_keys=True)
        swap_into_place(tmp, root)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f'{name} written: {root}')
    return root


def make_demo_dataset(root: str = 'data/demo_shapes',
                      num_train: int = 900,
                      num_val: int = 50,
                      img_size: int = 160,
                      max_objects: int = 3,
                      obj_size: _Range = (0.12, 0.28),
                      seed: int = 0,
                      force: bool = False,
                      verbose: bool = True) -> str:
    """Generate the demo dataset under ``root`` unless it is already there.

    Args:
        root (str): Output directory.
        num_train (int): Training images.
        num_val (int): Validation images.
        img_size (int): Side of the square images, in pixels.
        max_objects (int): Shapes drawn per image, 1 to ``max_objects``
            (a mostly hidden one is dropped from the annotations).
        obj_size (tuple[float, float]): Range of the shapes' radius, as a
            fraction of ``img_size``.
        seed (int): Random seed; the same parameters give identical files.
        force (bool): Regenerate even if a matching dataset exists.
        verbose (bool): Print what is done.

    Returns:
        str: ``root``.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    if img_size < 32:
        raise ValueError(f'img_size must be >= 32, got {img_size}')
    if max_objects < 1:
        raise ValueError(f'max_objects must be >= 1, got {max_objects}')
    if len(obj_size) != 2 or not 0 < obj_size[0] <= obj_size[1] < 0.5:
        raise ValueError('obj_size must be (min, max) radius fractions with '
                         f'0 < min <= max < 0.5, got {obj_size}')
    params = _params(num_train, num_val, img_size, max_objects, obj_size, seed)

    def build(out_root: str) -> None:
        for split, num in (('train', num_train), ('val', num_val)):
            _write_split(out_root, split, num, img_size, max_objects, obj_size,
                         seed)

    return write_dataset(root, params, _expected_files(params), build,
                         'demo dataset', force, verbose)


def dataset_defaults() -> dict:
    """:func:`make_demo_dataset`'s parameters and their defaults, the one
    place they are written (the CLI takes its defaults from here)."""
    return {
        name: param.default
        for name, param in inspect.signature(
            make_demo_dataset).parameters.items()
    }


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    default = dataset_defaults()
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes dataset of the demo.')
    parser.add_argument('--root', default=default['root'])
    for name in ('num_train', 'num_val', 'img_size', 'max_objects'):
        parser.add_argument(
            '--' + name.replace('_', '-'), type=int, default=default[name])
    parser.add_argument(
        '--obj-size',
        type=float,
        nargs=2,
        default=default['obj_size'],
        metavar=('MIN', 'MAX'),
        help="range of the shapes' radius, as a fraction "
        'of the image size')
    parser.add_argument('--seed', type=int, default=default['seed'])
    parser.add_argument(
        '--force',
        action='store_true',
        help='regenerate even if an up-to-date copy exists')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        make_demo_dataset(args.root, args.num_train,
                          args.num_val, args.img_size, args.max_objects,
                          tuple(args.obj_size), args.seed, args.force)
    except (ValueError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
