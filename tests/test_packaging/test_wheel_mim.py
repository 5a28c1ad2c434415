# Copyright (c) mmepsa contributors. All rights reserved.
"""A user with an mmdet environment adds mmepsa from a wheel, without
touching torch or mmcv (docs/compatibility.md): ``pip install --no-deps
mmepsa-*.whl``, then ``mim search mmepsa`` and ``mim train mmepsa <demo
config>``.

The "existing environment" is the one running the tests (under
``make test-compat``, the torch 2.1 one), seen through a fresh venv whose
only own package is the mmepsa wheel: a path entry onto this environment's
packages gives it torch, mmcv, mmdet, mmengine and mim, and not this
checkout's editable mmepsa (whose link is a ``.pth`` file there, which a
path entry does not process). So nothing of this environment changes.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = 'retinanet_epsanet50-s_fpn_demo-shapes.py'

pytestmark = pytest.mark.skipif(
    not osp.isfile(osp.join(osp.dirname(sys.executable), 'mim')),
    reason='openmim is not installed')


def _run(args, cwd, env=None, timeout=600):
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    return proc


@pytest.fixture(scope='module')
def wheel_env(tmp_path_factory):
    """(python, env, site-packages) of a venv with the mmepsa wheel
    installed with --no-deps over this environment's packages."""
    tmp = tmp_path_factory.mktemp('wheel_env')
    # Build from a copy of the checkout, so the build never touches it.
    src = tmp / 'src'
    ignore = shutil.ignore_patterns('.git', '.venv*', '.wheelhouse',
                                    'work_dirs', 'data', 'build', 'dist',
                                    '*.egg-info', '.mim', '__pycache__',
                                    '*.pyc', 'checkpoints', '*.pth')
    shutil.copytree(REPO, src, ignore=ignore)
    dist = tmp / 'dist'
    proc = _run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '-w',
        str(dist),
        str(src)
    ],
                cwd=str(tmp))
    assert proc.returncode == 0, proc.stdout[-3000:]
    wheels = list(dist.glob('mmepsa-*.whl'))
    assert len(wheels) == 1, wheels

    venv = tmp / 'env'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip',
                    str(venv)],
                   check=True)
    py = str(venv / 'bin' / 'python')
    site = _run([
        py, '-c', 'import sysconfig; '
        'print(sysconfig.get_paths()["purelib"])'
    ],
                cwd=str(tmp)).stdout.strip()
    with open(osp.join(site, 'existing-env.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    # this environment's pip, run by the venv's python, installs there
    proc = _run([py, '-m', 'pip', 'install', '--no-deps',
                 str(wheels[0])],
                cwd=str(tmp),
                env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return py, env, site


def test_wheel_imports_from_its_own_site(wheel_env, tmp_path):
    py, env, site = wheel_env
    proc = _run([
        py, '-c', 'import mmepsa, torch, mmcv.ops; '
        'from mim.utils import get_installed_path; '
        'print(mmepsa.__file__); print(get_installed_path("mmepsa"))'
    ],
                cwd=str(tmp_path),
                env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    module, located = proc.stdout.strip().splitlines()[-2:]
    assert module == osp.join(site, 'mmepsa', '__init__.py')
    assert located == osp.join(site, 'mmepsa')
    for name in ('train.py', 'test.py'):
        assert osp.isfile(osp.join(located, '.mim', 'tools', name))
    assert osp.isfile(osp.join(located, '.mim', 'model-index.yml'))


def test_mim_search(wheel_env, tmp_path):
    py, env, _ = wheel_env
    proc = _run([py, '-m', 'mim', 'search', 'mmepsa'],
                cwd=str(tmp_path),
                env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'config id:' in proc.stdout, proc.stdout[-3000:]


def test_mim_train_demo_two_iterations(wheel_env, tmp_path):
    py, env, site = wheel_env
    proc = _run([
        py, '-m', 'mmepsa.demo.data', '--root', 'data/demo_shapes',
        '--num-train', '8', '--num-val', '4', '--img-size', '64'
    ],
                cwd=str(tmp_path),
                env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    work_dir = tmp_path / 'work'
    # the config by name: mim finds it in the installed package; 8 images
    # in batches of 4 for one epoch = 2 iterations
    proc = _run([
        py, '-m', 'mim', 'train', 'mmepsa', DEMO, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_epochs=1'
    ],
                cwd=str(tmp_path),
                env=env)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert osp.join(site, 'mmepsa', '.mim', 'tools', 'train.py') in \
        proc.stdout
    # no --gpus (our train.py -h does not mention it)
    assert '--gpus' not in proc.stdout.split('Training command is')[1] \
        .splitlines()[0]
    assert 'Epoch(train) [1][2/2]' in proc.stdout, proc.stdout[-5000:]
    assert osp.isfile(work_dir / 'epoch_1.pth')
