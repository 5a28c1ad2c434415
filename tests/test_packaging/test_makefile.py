"""The README's make targets pass the docs' test arguments to pytest as
docs/testing.md says: a subset by name runs within tests/, a named file runs
alone (not the whole suite beside it)."""
import shlex
import shutil
import subprocess

import pytest

from tests.utils import REPO

pytestmark = pytest.mark.skipif(
    shutil.which('make') is None, reason='make is not installed')


def pytest_argv(target: str, pytest_args: str) -> list:
    """The pytest arguments ``make -n TARGET PYTEST_ARGS=...`` would run."""
    out = subprocess.run(['make', '-n', target, f'PYTEST_ARGS={pytest_args}'],
                         cwd=REPO,
                         capture_output=True,
                         text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if ' -m pytest ' in ln)
    argv = shlex.split(line)
    return argv[argv.index('pytest') + 1:]


@pytest.mark.parametrize('target', ['test', 'test-compat', 'test-newest'])
def test_named_file_runs_alone(target):
    path = 'tests/test_models/test_backbones/test_epsanet.py'
    argv = pytest_argv(target, f'-q {path}')
    assert 'tests' not in argv
    assert argv[-2:] == ['-q', path]
    assert argv[argv.index('--dist') + 1] == 'loadfile'


@pytest.mark.parametrize('args',
                         ['-q -k parity', '', '-q -p no:cacheprovider'])
def test_without_paths_the_whole_suite_runs(args):
    argv = pytest_argv('test', args)
    assert argv[0] == 'tests'
    assert argv[len(argv) - len(args.split()):] == args.split()
