# Copyright (c) mmepsa contributors. All rights reserved.
"""The demo's old module paths (mmepsa.apis, mmepsa.datasets) still give the
old names, each with a DeprecationWarning naming the new module."""
import importlib
import runpy
import sys
import warnings

import pytest

from mmepsa.demo import data, seg_data, trainer

#: (old package, its public names, the module they now come from)
PACKAGES = [
    ('mmepsa.apis', ('DemoDataError', 'DemoDiverged', 'load_demo_config',
                     'run_demo'), trainer),
    ('mmepsa.datasets', ('make_demo_dataset', 'DEMO_CLASSES', 'DEMO_PALETTE',
                         'GENERATOR_VERSION'), data),
]
#: (old module, a name it had, the module that now defines it)
MODULES = [
    ('mmepsa.apis.demo', 'ensure_data', trainer),
    ('mmepsa.datasets.demo_data', 'make_demo_dataset', data),
    ('mmepsa.datasets.demo_seg', 'make_demo_seg_dataset', seg_data),
]


def _fresh_import(name):
    """Import ``name`` anew (its warning is issued on import)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


@pytest.mark.parametrize('package,names,new', PACKAGES)
def test_old_package_names_warn_and_are_the_new_ones(package, names, new):
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(names)
    for name in names:
        with pytest.warns(DeprecationWarning, match=new.__name__):
            value = getattr(module, name)
        assert value is getattr(new, name)
    with pytest.raises(AttributeError, match=f'{package}.*no_such_name'):
        module.no_such_name


@pytest.mark.parametrize('old,name,new', MODULES)
def test_old_module_warns_on_import_and_forwards(old, name, new):
    with pytest.warns(
            DeprecationWarning, match=f'{old} moved to {new.__name__}'):
        module = _fresh_import(old)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning per name
        assert getattr(module, name) is getattr(new, name)


def test_new_package_exports_lazily():
    import mmepsa.demo as demo
    assert demo.run_demo is trainer.run_demo
    assert demo.make_demo_seg_dataset is seg_data.make_demo_seg_dataset
    with pytest.raises(AttributeError, match='mmepsa.demo.*nothing'):
        demo.nothing


def test_old_command_line_runs_and_warns(monkeypatch, capsys):
    """``python -m mmepsa.datasets.demo_data``, in this process."""
    monkeypatch.setattr(sys, 'argv', ['demo_data', '--help'])
    sys.modules.pop('mmepsa.datasets.demo_data', None)
    with pytest.warns(DeprecationWarning, match='mmepsa.demo.data'), \
            pytest.raises(SystemExit) as exit_info:
        runpy.run_module('mmepsa.datasets.demo_data', run_name='__main__')
    assert exit_info.value.code == 0
    assert 'synthetic shapes dataset' in capsys.readouterr().out
