# Copyright (c) mmepsa contributors. All rights reserved.
"""Fixtures shared by the test folders; the plain helpers behind them are in
``tests/utils.py``."""
import copy
import json
import os
import os.path as osp

import pytest
import torch
from filelock import FileLock
from mmengine.registry import DefaultScope

from tests.utils import make_tiny_project, run_tool

if os.environ.get('PYTEST_XDIST_WORKER'):
    # `make test` runs pytest-xdist's workers, one per core: each computes
    # on one thread (as the tool subprocesses do), since several OpenMP
    # pools on the same cores slow each other down many times over.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def restore_default_scope():
    """Tests switch mmengine's default scope (mmdet, mmpretrain, mmseg, by
    building a Runner or calling init_default_scope); give the next test, in
    any file, the scope it had before."""
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


def once_per_session(tmp_path_factory, name: str, make) -> dict:
    """``make(folder)`` run once for the whole session, whichever xdist
    worker asks first (the others wait on a lock, then read its result):
    the folder and the dict ``make`` returned (JSON-able)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent  # shared by the workers of this session
    folder = root / name
    result_file = root / f'{name}.json'
    with FileLock(str(root / f'{name}.lock')):
        if not result_file.exists():
            folder.mkdir(exist_ok=True)
            result = make(str(folder))
            result_file.write_text(json.dumps(result))
        return json.loads(result_file.read_text())


@pytest.fixture(scope='session')
def tiny_project(tmp_path_factory):
    """The tiny RetinaNet config and its 4-image COCO set, written once per
    session (read-only for the tests: write children of the config beside
    it, never modify it)."""
    return once_per_session(
        tmp_path_factory, 'tiny_project',
        lambda tmp: dict(tmp=tmp, config=make_tiny_project(tmp)))


@pytest.fixture(scope='session')
def tiny_trained(tmp_path_factory, tiny_project):
    """The tiny config trained once by tools/train.py for 1 epoch (2
    iterations): its work dir, for the tools that need a checkpoint
    (read-only: copy it to change it)."""

    def train(folder):
        work_dir = osp.join(folder, 'work_dir')
        run_tool('train.py', tiny_project['config'], '--work-dir', work_dir)
        return dict(tiny_project, work_dir=work_dir)

    return once_per_session(tmp_path_factory, 'tiny_trained', train)
