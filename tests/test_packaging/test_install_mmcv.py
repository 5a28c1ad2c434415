# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/install_mmcv.sh builds from source in an environment that has
neither ``wheel`` nor ``setuptools`` (a fresh Python >= 3.12 venv, or one
whose owner removed them).

There, ``pip download`` of a setup.py-only source archive prepares its
metadata in an isolated build environment with the newest setuptools, which
has no ``pkg_resources`` (82 dropped it); mmcv 2.1.0's setup.py imports it
and dies. The script must install its build requirements first and prepare
the metadata without isolation.

Offline and fast: instead of mmcv's 11-minute build, a small source archive
named mmcv-2.1.0 whose setup.py imports ``pkg_resources`` and contains the
``-std=c++17`` flag the script rewrites, served with the real setuptools
releases (the newest as a source archive, and one below 82), ``wheel`` (and
its ``packaging``) and ``ninja`` from a local folder (``PIP_NO_INDEX``). The
environment sees torch (which the script asks for its version) through a path
entry onto this environment's packages, minus setuptools, pkg_resources, wheel
and mmcv.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'install_mmcv.sh')

FAKE_SETUP = '''\
import pkg_resources  # noqa: F401  as mmcv 2.1.0's setup.py does
from setuptools import setup

CXX_STD = '-std=c++17'  # the script rewrites the flag, as in mmcv's setup.py
with open('mmcv/_build_flags.py', 'w') as f:
    f.write('CXX_STD = %r\\n' % CXX_STD)
setup(name='mmcv', version='2.1.0', packages=['mmcv', 'mmcv.ops'])
'''

#: what the tested environment must not see from this one
HIDDEN = ('setuptools', 'pkg_resources', '_distutils_hack', 'wheel', 'mmcv',
          'pip', 'distutils-precedence.pth')

#: (format, requirement) of what the local index serves. ``pip download
#: --no-binary :all:`` (the script's download of mmcv) passes its format on to
#: an isolated build environment, which therefore builds the newest setuptools
#: and wheel (with wheel's packaging and build backend flit_core) from their
#: source archives, as it would from the registry.
DOWNLOADS = (('--no-binary', 'setuptools>=82'), ('--no-binary', 'wheel'),
             ('--no-binary', 'packaging'), ('--no-binary', 'flit_core'),
             ('--only-binary', 'setuptools>=77,<82'), ('--only-binary',
                                                       'wheel'),
             ('--only-binary', 'packaging'), ('--only-binary', 'ninja'))

#: where :func:`_wheelhouse` keeps the downloads between sessions (the
#: folder install_mmcv.sh keeps its built wheels in; ignored by git)
CACHE = osp.join(REPO, '.wheelhouse', 'test-install-mmcv')


def _wheelhouse(house=CACHE):
    """The files of :data:`DOWNLOADS`, from the registry the first time."""
    if osp.isdir(house) and len(os.listdir(house)) >= len(DOWNLOADS):
        return house
    os.makedirs(house, exist_ok=True)
    for fmt, spec in DOWNLOADS:
        proc = subprocess.run([
            sys.executable, '-m', 'pip', 'download', '--no-deps', fmt, ':all:',
            '-d', house, spec
        ],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              text=True,
                              timeout=300)
        if proc.returncode != 0:
            pytest.skip(f'cannot download {spec} from the package '
                        f'registry: {proc.stdout[-500:]}')
    return house


def _fake_mmcv_sdist(folder):
    src = osp.join(folder, 'mmcv-2.1.0')
    os.makedirs(osp.join(src, 'mmcv', 'ops'))
    with open(osp.join(src, 'setup.py'), 'w') as f:
        f.write(FAKE_SETUP)
    with open(osp.join(src, 'mmcv', '__init__.py'), 'w') as f:
        f.write("__version__ = '2.1.0'\n")
    with open(osp.join(src, 'mmcv', 'ops', '__init__.py'), 'w') as f:
        f.write('def nms(*args, **kwargs):\n    raise NotImplementedError\n')
    archive = osp.join(folder, 'mmcv-2.1.0.tar.gz')
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(src, arcname='mmcv-2.1.0')
    shutil.rmtree(src)
    return archive


def _bare_env(path):
    """A venv with pip only, that imports this environment's torch."""
    subprocess.run([sys.executable, '-m', 'venv', path], check=True)
    py = osp.join(path, 'bin', 'python')
    subprocess.run([py, '-m', 'pip', 'uninstall', '-y', 'setuptools'],
                   stdout=subprocess.DEVNULL,
                   check=True)
    shown = osp.join(path, 'parent-packages')
    os.makedirs(shown)
    site = sysconfig.get_paths()['purelib']
    for name in os.listdir(site):
        base = name.split('-')[0].split('.')[0]
        if (name in HIDDEN or base in HIDDEN or name.endswith('.pth')
                or name.endswith(('.dist-info', '.egg-info', '.egg-link'))):
            continue
        os.symlink(osp.join(site, name), osp.join(shown, name))
    own_site = subprocess.run([
        py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    ],
                              stdout=subprocess.PIPE,
                              text=True,
                              check=True).stdout.strip()
    with open(osp.join(own_site, 'parent-packages.pth'), 'w') as f:
        f.write(shown + '\n')
    return py


def _run(py, code):
    return subprocess.run([py, '-c', code],
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)


@pytest.mark.skipif(shutil.which('bash') is None, reason='needs bash')
def test_builds_from_source_without_wheel_or_setuptools(tmp_path):
    house = _wheelhouse()
    index = tmp_path / 'index'
    shutil.copytree(house, index)
    _fake_mmcv_sdist(str(index))
    py = _bare_env(str(tmp_path / 'env'))
    for module in ('setuptools', 'pkg_resources', 'wheel', 'mmcv'):
        assert _run(py, f'import {module}').returncode != 0, module
    assert _run(py, 'import torch').returncode == 0

    # A copy of the script: its wheelhouses (.wheelhouse, ../shared/wheels)
    # are then empty folders under tmp_path.
    root = tmp_path / 'project'
    (root / 'tools').mkdir(parents=True)
    shutil.copy(SCRIPT, root / 'tools' / 'install_mmcv.sh')
    env = dict(
        os.environ,
        PIP_NO_INDEX='1',
        PIP_FIND_LINKS=str(index),
        PIP_CONFIG_FILE=os.devnull)
    env.pop('MMEPSA_WHEELHOUSE', None)
    env.pop('PYTHONPATH', None)
    proc = subprocess.run(
        ['bash', str(root / 'tools' / 'install_mmcv.sh'), py],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'building mmcv 2.1.0 from source' in proc.stdout

    check = _run(
        py,
        textwrap.dedent('''\
        import mmcv, setuptools
        from mmcv._build_flags import CXX_STD
        from mmcv.ops import nms
        print(mmcv.__version__, CXX_STD, setuptools.__version__)'''))
    assert check.returncode == 0, check.stdout
    version, std, setuptools_version = check.stdout.split()
    assert (version, std) == ('2.1.0', '-std=c++20')
    assert 77 <= int(setuptools_version.split('.')[0]) < 82
    # the built wheel is kept for the next run
    kept = list((root / '.wheelhouse').glob('torch-*/mmcv-2.1.0-*.whl'))
    assert len(kept) == 1, kept
