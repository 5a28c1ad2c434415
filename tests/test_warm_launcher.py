# Copyright (c) mmepsa contributors. All rights reserved.
"""The tests' warm launcher (tests/warm_launcher.py) runs a script as a fresh
interpreter would: same output, exit status, traceback, argv, sys.path,
working directory and environment, atexit handlers run."""
import os
import os.path as osp
import subprocess
import textwrap

import pytest

from tests.utils import PYTHON, WarmLauncher, run, tool_env

SCRIPT = textwrap.dedent('''\
    import atexit
    import os
    import sys

    import helper  # from PYTHONPATH

    atexit.register(lambda: print('atexit ran'))
    print('argv', sys.argv)
    print('path0', sys.path[0])
    print('cwd', os.getcwd())
    print('env', os.environ.get('LAUNCHER_TEST'))
    print('mmepsa imported', 'mmepsa' in sys.modules)
    print('main', __name__, helper.NAME)
    sys.stdout.flush()
    what = sys.argv[1]
    if what == 'code':
        sys.exit(3)
    if what == 'message':
        sys.exit('a message')
    if what == 'raise':
        raise ValueError('boom')
    ''')


@pytest.fixture
def script(tmp_path):
    (tmp_path / 'lib').mkdir()
    (tmp_path / 'lib' / 'helper.py').write_text("NAME = 'helper'\n")
    (tmp_path / 'bin').mkdir()
    path = tmp_path / 'bin' / 'script.py'
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize('what', ['ok', 'code', 'message', 'raise'])
def test_same_as_a_fresh_interpreter(script, tmp_path, what):
    env = tool_env(str(tmp_path / 'lib'), LAUNCHER_TEST='x y')
    args = [PYTHON, script, what, '--flag']
    assert WarmLauncher.serves([str(a) for a in args])
    warm, fresh = (
        run(args,
            env=env,
            cwd=tmp_path,
            check=False,
            merge_stderr=False,
            fresh=f) for f in (False, True))
    assert (warm.returncode, warm.stdout,
            warm.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert warm.returncode == {
        'ok': 0,
        'code': 3,
        'message': 1,
        'raise': 1
    }[what]
    assert f"argv ['{script}', '{what}', '--flag']" in warm.stdout
    assert f'path0 {osp.dirname(script)}' in warm.stdout
    assert f'cwd {tmp_path}' in warm.stdout
    assert 'env x y' in warm.stdout and 'main __main__ helper' in warm.stdout
    assert 'mmepsa imported False' in warm.stdout
    assert warm.stdout.endswith('atexit ran\n')
    if what == 'raise':
        assert warm.stderr.startswith('Traceback (most recent call last):\n'
                                      f'  File "{script}", line ')
        assert warm.stderr.endswith('ValueError: boom\n')


def test_dash_c_same_as_a_fresh_interpreter(tmp_path):
    code = ('import sys; print(sys.argv, repr(sys.path[0]), __name__); '
            'raise SystemExit(4)')
    warm, fresh = (
        run([PYTHON, '-c', code, 'a'], cwd=tmp_path, check=False, fresh=f)
        for f in (False, True))
    assert (warm.returncode, warm.stdout) == (fresh.returncode, fresh.stdout)
    assert warm.returncode == 4
    assert warm.stdout == "['-c', 'a'] '' __main__\n"


def test_import_time_variables_start_a_fresh_interpreter():
    launcher_env = tool_env()
    assert not WarmLauncher.serves(['bash', 'tools/dist_train.sh'])
    from tests.utils import warm_launcher
    launcher = warm_launcher()
    assert launcher.accepts(
        dict(
            launcher_env,
            PYTHONPATH='/x',
            PORT='1',
            PYTHON=PYTHON,
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1',  # read by torch.load
            TORCH_FORCE_WEIGHTS_ONLY_LOAD='1'))
    for name in ('TORCH_CPP_LOG_LEVEL', 'OMP_NUM_THREADS',
                 'CUDA_VISIBLE_DEVICES', 'PYTHONHASHSEED'):
        assert not launcher.accepts(dict(launcher_env, **{name: '7'})), name


def test_workers_and_their_processes_compute_on_one_thread():
    """Under xdist, the conftest gives each worker one torch thread, and
    every process a test starts with this environment an OpenMP/BLAS thread
    count (1 unless the user set one: the workers already share the
    cores)."""
    if not os.environ.get('PYTEST_XDIST_WORKER'):
        pytest.skip('not an xdist worker')
    import torch
    assert torch.get_num_threads() == 1
    names = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')
    code = f'import os; print(*(os.environ[n] for n in {names!r}))'
    proc = subprocess.run([PYTHON, '-c', code],
                          env=dict(os.environ),
                          capture_output=True,
                          text=True,
                          check=True)
    assert proc.stdout.split() == [os.environ[n] for n in names]
