# Copyright (c) mmepsa contributors. All rights reserved.
"""The lint set: ``make lint`` runs the tools .pre-commit-config.yaml pins,
at the same versions (requirements/lint.txt, installed in .venv-lint), with
the settings of setup.cfg."""
import configparser
import json
import os.path as osp
import re
import shutil
import subprocess

import pytest
import yaml

from tests.utils import REPO

PIN = re.compile(r'^([A-Za-z0-9_.-]+)==(\S+)$')
#: The environment ``make lint`` makes for the tools.
LINT_PY = osp.join(REPO, '.venv-lint', 'bin', 'python')
needs_lint_env = pytest.mark.skipif(
    not osp.isfile(osp.join(REPO, '.venv-lint', '.stamp')),
    reason='no .venv-lint (made by `make lint`)')


def lint_pins() -> dict:
    """``{package: version}`` of requirements/lint.txt."""
    pins = {}
    with open(osp.join(REPO, 'requirements', 'lint.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if line:
                match = PIN.match(line)
                assert match, f'lint.txt pins exact versions: {line!r}'
                pins[match.group(1).lower()] = match.group(2)
    return pins


def hook_revs() -> dict:
    """``{package: version}`` of .pre-commit-config.yaml: a repository's
    name is its package's (``mirrors-yapf``: yapf), its rev the version
    (``v0.32.0``: 0.32.0)."""
    with open(osp.join(REPO, '.pre-commit-config.yaml')) as f:
        config = yaml.safe_load(f)
    revs = {}
    for repo in config['repos']:
        name = repo['repo'].rstrip('/').split('/')[-1]
        name = re.sub(r'\.git$', '', re.sub(r'^mirrors-', '', name))
        revs[name.lower()] = re.sub(r'^v', '', str(repo['rev']))
    return revs


def test_lint_pins_equal_the_hook_revs():
    assert lint_pins() == hook_revs()
    assert {'flake8', 'isort', 'yapf'} <= set(lint_pins())


@needs_lint_env
def test_lint_env_has_the_pinned_tools():
    code = ('import importlib.metadata as m, json, sys; '
            'print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))')
    out = subprocess.run([LINT_PY, '-c', code, *lint_pins()],
                         capture_output=True,
                         text=True,
                         check=True).stdout
    assert json.loads(out) == lint_pins()


def test_setup_cfg_has_the_tool_sections_only():
    """setup.cfg configures the tools as mmdet's does; the package's
    metadata stays in setup.py."""
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(REPO, 'setup.cfg'))
    assert set(cfg.sections()) == {'isort', 'yapf', 'flake8', 'codespell'}
    assert cfg['isort']['known_first_party'] == 'mmepsa'
    assert cfg['isort']['line_length'] == cfg['flake8']['max-line-length']
    assert cfg['yapf']['BASED_ON_STYLE'] == 'pep8'


@pytest.mark.skipif(
    shutil.which('make') is None, reason='make is not installed')
def test_make_lint_checks_and_format_applies():

    def commands(target):
        out = subprocess.run(['make', '-n', target],
                             cwd=REPO,
                             capture_output=True,
                             text=True,
                             check=True).stdout
        return [ln for ln in out.splitlines() if ' -m ' in ln]

    lint = ' '.join(commands('lint'))
    for tool in ('-m flake8 ', '-m isort --check-only --diff ',
                 '-m yapf --diff --recursive '):
        assert tool + 'mmepsa tools tests configs setup.py' in lint
    assert '--in-place' not in lint
    fmt = ' '.join(commands('format'))
    assert '-m isort mmepsa' in fmt and '-m yapf --in-place' in fmt
    with open(osp.join(REPO, '.ci', 'run')) as f:
        ci = f.read()
    assert ci.index('make lint') < ci.index('for target in test test-compat')


@needs_lint_env
@pytest.mark.parametrize('tool', ['flake8', 'isort', 'yapf'])
def test_tools_find_what_the_settings_forbid(tool, tmp_path):
    """Each tool runs with setup.cfg's settings: a clean file passes, a bad
    one is reported."""
    clean = tmp_path / 'clean.py'
    clean.write_text('import os\nimport sys\n\nimport numpy as np\n\n'
                     'print(os.sep, sys.path, np.pi)\n')
    bad = tmp_path / 'bad.py'
    bad.write_text('import numpy as np\nimport sys\nimport os\n'
                   'print(os.sep,sys.path, np.pi)\n')
    cfg = osp.join(REPO, 'setup.cfg')
    argv = {
        'flake8': ['--config', cfg],
        'isort': ['--settings-path', cfg, '--check-only'],
        'yapf': ['--style', cfg, '--diff'],
    }[tool]

    def run(path):
        return subprocess.run([LINT_PY, '-m', tool, *argv,
                               str(path)],
                              cwd=tmp_path,
                              capture_output=True,
                              text=True)

    ok = run(clean)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert run(bad).returncode != 0
