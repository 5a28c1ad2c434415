# Copyright (c) mmepsa contributors. All rights reserved.
"""Fixtures shared by the test folders; the plain helpers behind them are in
``tests/utils.py``."""
import os

if os.environ.get('PYTEST_XDIST_WORKER'):
    # `make test` runs pytest-xdist's workers, one per core: each computes
    # on one thread, and so does every process a test starts (tools, pip,
    # mim, torchrun and its ranks, other environments), since several
    # OpenMP/BLAS pools on the same cores slow each other down many times
    # over. Set before torch and numpy are imported; a value the user set
    # is kept.
    for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ.setdefault(_var, '1')

import copy  # noqa: E402
import os.path as osp  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from tests.base_lookup import memoize_base_lookup  # noqa: E402
from tests.utils import make_tiny_project  # noqa: E402
from tests.utils import once_per_session  # noqa: E402
from tests.utils import run_tool  # noqa: E402

if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(1)
memoize_base_lookup()  # mmengine's slow lookup of mmdet:: bases


def _scope_restorer():
    saved = copy.copy(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict = saved


# Tests switch mmengine's default scope (mmdet, mmpretrain, mmseg, by
# building a Runner or calling init_default_scope), and so do module-scoped
# fixtures (which are set up before a test's own fixtures): give the next
# test, and the next file on the same xdist worker, the scope it had before.
restore_default_scope = pytest.fixture(autouse=True)(_scope_restorer)
restore_default_scope_per_module = pytest.fixture(
    scope='module', autouse=True)(
        _scope_restorer)


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
