# Copyright (c) mmepsa contributors. All rights reserved.
"""``mim test/search mmepsa`` (openmim 0.3.9) against this install (``mim
train``: from a wheel, tests/test_packaging/test_wheel_mim.py).

mim 0.3.9 locates a package through ``pkg_resources``: the scripts it runs
are ``<location>/mmepsa/.mim/tools/{train,test}.py`` and ``mim search`` reads
``<location>/mmepsa/.mim/model-index.yml``. A wheel install has them in
site-packages. A PEP 660 editable install (what ``pip install -e .`` does
with setuptools >= 64; setuptools >= 80 has no legacy ``develop`` left)
reports site-packages as the location although nothing of mmepsa is there,
so mim then needs the checkout first on the path: ``PYTHONPATH=<repo>``
makes pkg_resources find ``<repo>/mmepsa.egg-info`` (written by the editable
build) and so ``<repo>/mmepsa/.mim`` (symlinks made by setup.py). The tests
use whatever this environment needs and say which.
"""
import glob
import os
import os.path as osp
import sys

import pytest

from tests.utils import REPO, run, tool_env

BIN = osp.dirname(sys.executable)
MIM = osp.join(BIN, 'mim')

pytestmark = pytest.mark.skipif(
    not osp.isfile(MIM), reason=f'openmim is not installed ({MIM} missing)')

_LOCATE = ('import warnings; warnings.simplefilter("ignore"); '
           'from mim.utils import get_installed_path; '
           'print(get_installed_path("mmepsa"))')


def _mim_root(env: dict) -> str:
    """Where mim, started with ``env``, believes mmepsa is installed."""
    proc = run([sys.executable, '-c', _LOCATE],
               env=env,
               cwd='/',
               merge_stderr=False)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def mim_env():
    """An environment in which mim finds mmepsa's .mim folder."""
    env = tool_env()
    root = _mim_root(env)
    if osp.isfile(osp.join(root, '.mim', 'tools', 'train.py')):
        return dict(env=env, root=root, how='installed package')
    # PEP 660 editable install: put the checkout first (see module doc).
    if not osp.isdir(osp.join(REPO, 'mmepsa.egg-info')):
        pytest.skip('editable install without mmepsa.egg-info in the '
                    'checkout: rerun `pip install -e .` so mim can find '
                    'mmepsa')
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (REPO, env.get('PYTHONPATH')) if p)
    root = _mim_root(env)
    assert root == osp.join(REPO, 'mmepsa'), root
    if not osp.isfile(osp.join(root, '.mim', 'tools', 'train.py')):
        pytest.fail(f'{root}/.mim/tools/train.py missing: rerun '
                    '`pip install -e .` (setup.py links tools, configs and '
                    'model-index.yml into mmepsa/.mim)')
    return dict(env=env, root=root, how='PYTHONPATH=<repo> (PEP 660)')


def _mim(args, env, cwd):
    return run([MIM] + args, env=env, cwd=cwd, check=False)


def test_mim_test(mim_env, tiny_trained, tmp_path):
    """``mim test`` runs our test.py, found through this install (``mim
    train`` from a wheel: tests/test_packaging/test_wheel_mim.py)."""
    checkpoint = osp.join(tiny_trained['work_dir'], 'epoch_1.pth')
    proc = _mim([
        'test', 'mmepsa', tiny_trained['config'], '--checkpoint', checkpoint,
        '--work-dir',
        str(tmp_path / 'test')
    ],
                mim_env['env'],
                cwd=str(tmp_path))
    assert proc.returncode == 0, (mim_env['how'], proc.stdout[-5000:])
    assert osp.join(mim_env['root'], '.mim', 'tools', 'test.py') in \
        proc.stdout
    assert 'coco/bbox_mAP' in proc.stdout


def test_mim_finds_configs_by_name(mim_env):
    """``mim train mmepsa NAME.py`` looks NAME.py up under the package; it
    must be there once, for every config of the repository."""
    from mim.utils import recursively_find
    names = sorted({
        osp.basename(p)
        for p in glob.glob(
            osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    })
    if not names:
        pytest.skip('no configs in configs/ yet')
    for name in names:
        found = recursively_find(mim_env['root'], name, followlinks=True)
        assert len(found) == 1, (name, found)


def test_mim_search(mim_env):
    if not osp.isfile(osp.join(REPO, 'model-index.yml')):
        pytest.skip('no model-index.yml at the repository top yet (it '
                    'lists configs/*/metafile.yml)')
    proc = _mim(['search', 'mmepsa'], mim_env['env'], cwd=REPO)
    assert proc.returncode == 0, (mim_env['how'], proc.stdout[-5000:])
    assert 'config id:' in proc.stdout, proc.stdout[-3000:]
