"""mmepsa.utils.safe_pickle: one allow-list for every torch version."""
import io
import os
import pickle
import subprocess

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmepsa  # noqa: F401
from mmepsa.utils import safe_pickle
from tests.utils import PYTHON, run, tool_env


class _RunCommand:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


def _saved(obj) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


def test_mmengine_training_state_round_trips():
    hub = MessageHub('safe_pickle_test')
    hub.update_scalar('train/loss', np.float32(1.5))
    hub.update_scalar('train/lr', 0.01)
    hub.update_info('epoch', np.int64(3))
    state = {
        'state_dict': {
            'w': torch.arange(6.).reshape(2, 3)
        },
        'message_hub': hub.state_dict(),
        'meta': {
            'array': np.arange(4, dtype=np.uint8),
            'scalar': np.float64(2.5),
            'dtype': np.dtype('int16')
        },
    }
    loaded = safe_pickle.torch_load(_saved(state))
    assert torch.equal(loaded['state_dict']['w'], state['state_dict']['w'])
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.current() == pytest.approx(1.5)
    assert buffer.mean() == pytest.approx(1.5)
    np.testing.assert_array_equal(loaded['meta']['array'], np.arange(4))
    assert loaded['meta']['scalar'] == 2.5
    assert loaded['meta']['dtype'] == np.dtype('int16')


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_code_in_a_checkpoint_is_refused(tmp_path, legacy):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'meta': _RunCommand(marker)},
               path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(
            pickle.UnpicklingError,
            match=r'GLOBAL posix\.system is not allowed'):
        safe_pickle.torch_load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize('name', [
    'builtins.eval', 'builtins.exec', 'os.system', 'subprocess.Popen',
    'torch.load', 'builtins.getattr.__call__'
])
def test_find_class_refuses(name):
    module, _, attr = name.rpartition('.')
    with pytest.raises(pickle.UnpicklingError, match='is not allowed'):
        safe_pickle.Unpickler(io.BytesIO()).find_class(module, attr)


def test_getattr_reaches_only_history_buffer_statistics():
    assert safe_pickle.history_buffer_getattr(HistoryBuffer, 'mean') is \
        HistoryBuffer.mean
    for obj, name in ((HistoryBuffer, '__init__'), (torch, 'load'),
                      (os, 'system')):
        with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
            safe_pickle.history_buffer_getattr(obj, name)


def test_other_code_cannot_widen_the_list():
    """Globals that other code adds to torch's own allow-list (e.g. a
    library registering its classes) are not admitted by mmepsa's."""
    if not hasattr(torch.serialization, 'add_safe_globals'):
        pytest.skip('torch < 2.4 has no add_safe_globals')
    safe_pickle.allowed_globals.cache_clear()
    try:
        torch.serialization.add_safe_globals([subprocess.Popen])
        assert 'subprocess.Popen' not in safe_pickle.allowed_globals()
    finally:
        torch.serialization.clear_safe_globals()
        mmepsa.utils.allow_mmengine_checkpoint_types()


@pytest.mark.parametrize(
    'variable',
    ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_WEIGHTS_ONLY_LOAD'])
def test_environment_cannot_turn_it_off(tmp_path, variable):
    marker = tmp_path / 'pwned'
    evil, good = tmp_path / 'evil.pth', tmp_path / 'good.pth'
    torch.save({'meta': _RunCommand(marker)}, evil)
    hub = MessageHub('env_test')
    hub.update_scalar('loss', 1.0)
    torch.save({'message_hub': hub.state_dict()}, good)
    # torch < 2.4 under TORCH_FORCE_WEIGHTS_ONLY_LOAD: torch's own loader,
    # which cannot be taught mmengine's types there, refuses the good file
    # too (safe, not useful); everywhere else the good file loads
    good_loads = (
        variable == 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'
        or hasattr(torch.serialization, 'add_safe_globals'))
    code = ('import mmepsa, pickle\n'
            'from mmepsa.utils.safe_pickle import torch_load\n'
            'try:\n'
            f'    torch_load({str(good)!r})\n'
            '    print("good loaded")\n'
            'except pickle.UnpicklingError as e:\n'
            '    print("good refused:", e)\n'
            'try:\n'
            f'    torch_load({str(evil)!r})\n'
            'except pickle.UnpicklingError as e:\n'
            '    print("refused:", e)\n')
    proc = run([PYTHON, '-c', code],
               env=tool_env(**{variable: '1'}),
               check=False,
               merge_stderr=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ('good loaded' in proc.stdout) == good_loads, proc.stdout
    assert '\nrefused:' in proc.stdout
    assert not marker.exists()
