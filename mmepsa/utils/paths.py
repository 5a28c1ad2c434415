# Copyright (c) mmepsa contributors. All rights reserved.
"""The local paths a config needs, checked before anything is built
(``tools/train.py`` calls :func:`check_data_paths`), and the image paths
the demo tools take (:func:`list_images`)."""
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(paths: Sequence[str]) -> List[str]:
    """The image files ``paths`` name: a folder stands for its images
    (:data:`IMG_EXTENSIONS`, sorted), any other path for itself, existing
    or not (the caller reports a missing one). Raises ValueError if there
    are none."""
    images = []
    for path in paths:
        if osp.isdir(path):
            images += sorted(
                osp.join(path, f) for f in os.listdir(path)
                if f.lower().endswith(IMG_EXTENSIONS))
        else:
            images.append(path)
    if not images:
        raise ValueError(f'no images in {", ".join(paths)}')
    return images


def check_data_paths(cfg: Config) -> Optional[str]:
    """An error message naming the first local path that training needs and
    that does not exist, or the first empty file in a data folder; None when
    all is there.

    Checked: the data folders (``data_root``, ``data_prefix``) and annotation
    files of the train and val datasets (through ``dataset``/``datasets``
    wrappers), the val evaluator's ``ann_file``, every ``Pretrained``
    checkpoint in ``model``, and ``load_from`` when not resuming (the resume
    checkpoint is checked by
    :func:`mmepsa.utils.resume.check_resume_checkpoint`). Without this,
    mmdet fails on a missing annotation file only after building the model,
    and on a missing image folder or val file once training has started, in
    a traceback. Remote paths (``://``, non-local ``backend_args``) are
    skipped.

    The files directly in each ``data_prefix`` folder are checked for
    emptiness too (one ``stat`` each, not in subfolders): OpenCV fails on a
    0-byte image with ``!buf.empty()`` and mmcv passes that on without the
    file's name, mid-training.
    """
    checks = []  # (config field, path, what it is, is a folder)
    image_folders = []  # (config field, folder): data_prefix folders

    def is_local(node):
        return (node.get('backend_args') or {}).get('backend',
                                                    'local') == 'local'

    def add_dataset(field, dataset):
        if not isinstance(dataset, dict):
            return
        add_dataset(f'{field}.dataset', dataset.get('dataset'))
        for i, sub in enumerate(dataset.get('datasets') or []):
            add_dataset(f'{field}.datasets[{i}]', sub)
        if not is_local(dataset):
            return
        root = dataset.get('data_root') or ''
        if root:
            checks.append((f'{field}.data_root', root, 'data folder', True))
        if dataset.get('ann_file'):
            checks.append(
                (f'{field}.ann_file', osp.join(root, dataset['ann_file']),
                 'annotation file', False))
        prefix = dataset.get('data_prefix') or {}
        if isinstance(prefix, str):  # mmpretrain allows a plain folder
            prefix = {None: prefix}
        for key, folder in prefix.items():
            if isinstance(folder, str) and folder:
                name = 'data_prefix' if key is None else f'data_prefix.{key}'
                entry = (f'{field}.{name}', osp.join(root, folder))
                checks.append(entry + ('data folder', True))
                image_folders.append(entry)

    def add_pretrained(field, node):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained' and isinstance(
                    node.get('checkpoint'), str):
                checks.append((f'{field}.checkpoint', node['checkpoint'],
                               'pretrained checkpoint', False))
            for key, value in node.items():
                add_pretrained(f'{field}.{key}', value)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                add_pretrained(f'{field}[{i}]', value)

    add_dataset('train_dataloader.dataset', (cfg.get('train_dataloader')
                                             or {}).get('dataset'))
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):
        add_dataset('val_dataloader.dataset',
                    cfg.val_dataloader.get('dataset'))
        evaluator = cfg.get('val_evaluator')
        evaluators = ([('val_evaluator', evaluator)] if isinstance(
            evaluator, dict) else [(f'val_evaluator[{i}]', e)
                                   for i, e in enumerate(evaluator or [])])
        for field, item in evaluators:
            if isinstance(item, dict) and item.get('ann_file') and \
                    is_local(item):
                checks.append((f'{field}.ann_file', item['ann_file'],
                               'annotation file', False))
    add_pretrained('model', cfg.get('model'))
    if cfg.get('load_from') and not cfg.get('resume'):
        checks.append(('load_from', cfg.load_from, 'checkpoint', False))

    for field, path, what, is_folder in checks:
        if '://' in path:
            continue
        local = osp.expanduser(path)
        if not (osp.isdir(local) if is_folder else osp.isfile(local)):
            if not osp.isabs(local):
                path = f'{path} (resolved to {osp.abspath(local)})'
            return f'{what} not found: {path} ({field})'
    scanned = set()  # train and val often share a folder: scan it once
    for field, folder in image_folders:
        local = osp.expanduser(folder)
        real = osp.realpath(local)
        if '://' in folder or real in scanned:
            continue
        scanned.add(real)
        first, count = _empty_files(local)
        if first is not None:
            more = f'; {count} empty files there' if count > 1 else ''
            return (f'empty file: {first} ({field}{more}; list them with '
                    f'find {folder} -maxdepth 1 -type f -size 0)')
    return None


def _empty_files(folder: str) -> Tuple[Optional[str], int]:
    """The first (by name) 0-byte file directly in ``folder`` and how many
    there are."""
    empty = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.is_file() and entry.stat().st_size == 0:
                    empty.append(entry.path)
            except OSError:  # e.g. a dangling link: the loader names it
                continue
    return (min(empty) if empty else None), len(empty)
