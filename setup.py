#!/usr/bin/env python
# Copyright (c) mmepsa contributors. All rights reserved.
import os
import os.path as osp
import shutil
import sys
from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def readme() -> str:
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'mmepsa', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``requirements/<fname>``, comments dropped."""
    with open(osp.join(ROOT, 'requirements', fname)) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith('-')]


#: What ``mmepsa/.mim`` gets, for ``mim train/test/search mmepsa``.
MIM_FILES = ('tools', 'configs', 'demo', 'model-index.yml')


def _copy_mim_files(mim_path: str) -> None:
    """Copy :data:`MIM_FILES` (those that exist) into ``mim_path``, without
    caches and compiled files."""
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.pyo')
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        if not osp.exists(src):
            continue
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copyfile(src, dst)


def add_mim_extension() -> dict:
    """Put tools, configs, demo and model-index.yml into ``mmepsa/.mim``.

    As mmdet's setup.py does, with one difference:

    * editable installs (``pip install -e .``, PEP 660 ``editable_wheel``, or
      a legacy ``develop``) and ``sdist`` get relative symlinks in the source
      tree's ``mmepsa/.mim`` (gitignored), so a checkout always serves its
      current files (and an sdist packs them as files via package_data);
    * wheels (``bdist_wheel``/``build``) get copies, but made inside the
      build folder by the returned ``build_py`` command, so that building a
      wheel never replaces the symlinks of a developer's checkout with stale
      copies, as mmdet's copy-into-the-source-tree does.

    Returns:
        dict: ``cmdclass`` for :func:`setup`.
    """
    from setuptools.command.build_py import build_py

    class build_py_with_mim(build_py):
        """build_py, then a fresh copy of the mim files into the build."""

        def run(self):
            super().run()
            if getattr(self, 'editable_mode', False):
                return  # editable installs use the source tree's symlinks
            mim_path = osp.join(self.build_lib, 'mmepsa', '.mim')
            # An sdist has no top-level tools/configs: there package_data
            # already brought its mmepsa/.mim files.
            if any(osp.exists(osp.join(ROOT, n)) for n in MIM_FILES):
                os.makedirs(mim_path, exist_ok=True)
                _copy_mim_files(mim_path)

    cmdclass = dict(build_py=build_py_with_mim)
    if not {'develop', 'editable_wheel', 'sdist'} & set(sys.argv):
        return cmdclass
    mim_path = osp.join(ROOT, 'mmepsa', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        if not osp.exists(src):
            continue
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        os.symlink(osp.relpath(src, mim_path), dst)
    return cmdclass


if __name__ == '__main__':
    cmdclass = add_mim_extension()
    setup(
        name='mmepsa',
        version=get_version(),
        description='EPSANet backbone for OpenMMLab (mmdet, mmpretrain, '
        'mmseg)',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='computer vision, object detection, EPSANet, attention',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        package_data={'mmepsa': ['.mim/**/*', '.mim/*']},
        python_requires='>=3.8',
        license='Apache License 2.0',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.8',
            'Programming Language :: Python :: 3.9',
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
        ],
        install_requires=parse_requirements('mminstall.txt'),
        extras_require={
            'all':
            parse_requirements('runtime.txt') +
            parse_requirements('optional.txt') +
            parse_requirements('deploy.txt') +
            parse_requirements('openvino.txt'),
            'deploy':
            parse_requirements('deploy.txt'),
            'openvino':
            parse_requirements('openvino.txt'),
            'tests':
            parse_requirements('tests.txt'),
            'seg':
            parse_requirements('optional.txt'),
            'mim':
            parse_requirements('mim.txt') +
            parse_requirements('mim_nodeps.txt'),
        },
        cmdclass=cmdclass,
        zip_safe=False)
