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


def add_mim_extension() -> None:
    """Put tools, configs and model-index.yml into ``mmepsa/.mim``.

    As mmdet's setup.py does: symlinks for editable/develop installs, copies
    for wheels and sdists, so that ``mim train mmepsa CONFIG`` finds them.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mmepsa', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in ('tools', 'configs', 'demo', 'model-index.yml'):
        src = osp.join(ROOT, name)
        if not osp.exists(src):
            continue
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
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
            'Programming Language :: Python :: 3.11',
        ],
        install_requires=parse_requirements('mminstall.txt'),
        extras_require={
            'all': parse_requirements('runtime.txt') +
            parse_requirements('optional.txt'),
            'tests': parse_requirements('tests.txt'),
            'seg': parse_requirements('optional.txt'),
            'mim': parse_requirements('mim.txt') +
            parse_requirements('mim_nodeps.txt'),
        },
        zip_safe=False)
