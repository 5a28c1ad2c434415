# Copyright (c) mmepsa contributors. All rights reserved.
"""Missing or damaged data, as users see it through tools/train.py: one line
naming the file, no traceback. (Every missing path of a config:
test_utils/test_paths.py.)"""
import os.path as osp
import re
import shutil

import pytest

from tests.utils import child_config, run_tool


def test_train_missing_annotation_file_is_one_line(tiny_project, tmp_path):
    """As users see it: one line on the console, no traceback."""
    config = child_config(
        tiny_project, tmp_path, 'no_ann.py',
        "train_dataloader = dict(dataset=dict(ann_file='missing.json'))")
    proc = run_tool('train.py', config, cwd=tmp_path, check=False)
    missing = osp.join(tiny_project['tmp'], 'data', 'missing.json')
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f'error: annotation file not found: {missing} '
        '(train_dataloader.dataset.ann_file)')


def train_with_bad_image(tiny_project, tmp_path, name, content):
    """tools/train.py on a copy of the tiny project's data whose image
    ``name`` holds ``content``: (the process, the image, the copy's root)."""
    root = tmp_path / 'bad'
    shutil.copytree(osp.join(tiny_project['tmp'], 'data'), root / 'data')
    image = root / 'data' / 'images' / name
    image.write_bytes(content)
    config = child_config(
        tiny_project, tmp_path, 'bad.py',
        f"train_dataloader = dict(dataset=dict(data_root='{root}/data/'))")
    proc = run_tool(
        'train.py', config, '--work-dir', root / 'work_dir', check=False)
    return proc, image, root


def test_train_corrupt_image_names_the_file(tiny_project, tmp_path):
    proc, bad, _ = train_with_bad_image(tiny_project, tmp_path, 'img_1.png',
                                        b'<html>not an image</html>')
    assert proc.returncode != 0
    assert f'failed to load image: {bad}' in proc.stdout, proc.stdout[-3000:]


def test_train_empty_image_is_one_line(tiny_project, tmp_path):
    """A 0-byte image: tools/train.py names it before building anything
    (mmcv's loader would not: below)."""
    proc, empty, root = train_with_bad_image(tiny_project, tmp_path,
                                             'img_2.png', b'')
    assert proc.returncode == 1
    assert proc.stdout.strip() == (
        f'error: empty file: {empty} '
        '(train_dataloader.dataset.data_prefix.img; list them with find '
        f'{root}/data/images/ -maxdepth 1 -type f -size 0)')
    assert not (root / 'work_dir').exists()


@pytest.mark.xfail(
    strict=True,
    reason="mmcv's LoadImageFromFile re-raises "
    "OpenCV's error for an empty file without its name")
def test_empty_image_file_names_the_file(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(Exception, match=re.escape(str(empty))):
        LoadImageFromFile()(dict(img_path=str(empty)))
