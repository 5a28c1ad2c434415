# Copyright (c) mmepsa contributors. All rights reserved.
"""What ``tools/setup_env.sh`` leaves behind in the environment running the
tests (docs/install.md), where that script made it."""
import importlib.util
import os
import os.path as osp
import sys
import sysconfig

import pytest

pytestmark = pytest.mark.skipif(
    not osp.isfile(osp.join(sys.prefix, '.mmepsa-stamp')),
    reason='this environment was not made by tools/setup_env.sh')


@pytest.mark.parametrize('package', ['torch', 'mmdet', 'mmengine'])
def test_installed_packages_are_byte_compiled(package):
    """pip installs with --no-compile and the script byte-compiles the whole
    environment afterwards (on every core): every module of the packages
    pip installed has its .pyc, imported by this process or not (with
    PYTHONDONTWRITEBYTECODE=1, as on this project's machines, Python would
    otherwise compile each of them again at every start)."""
    root = osp.dirname(importlib.util.find_spec(package).origin)
    assert root.startswith(sysconfig.get_paths()['purelib'])
    sources = missing = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            sources += 1
            if not osp.isfile(importlib.util.cache_from_source(path)):
                missing += 1
    assert sources > 50
    # a few templates that are not Python (they do not parse) stay as
    # they are, as pip leaves them
    assert missing <= sources // 100, (package, missing, sources)
