# Copyright (c) mmepsa contributors. All rights reserved.
"""The tests' warm launcher: runs ``python tools/<tool>.py ...`` (or
``python -c CODE ...``) in a forked child of an interpreter that has already
imported the third-party stack.

Each tool run in the tests would otherwise spend ~7 s of its time importing
torch, torchvision, mmcv, mmengine and mmdet (and mmdet's registry modules)
before doing anything; the suite makes dozens of them (docs/testing.md).
This script imports those once, then serves requests, one JSON line each on
stdin::

    {"argv": [python, script, args...] or [python, "-c", code, args...],
     "env": {...}, "cwd": "...", "stdout": "<file>",
     "stderr": "<file>" or null}

For each it forks. The child becomes the process ``python`` would start:
``sys.argv``, ``sys.path[0]`` (the script's folder, ``''`` for ``-c``) and
the ``PYTHONPATH`` entries, the environment, the working directory, stdin
from /dev/null, stdout and stderr to the files. It runs the script as
``__main__`` (``runpy.run_path``; ``-c`` code in a new ``__main__`` module)
and exits the way the interpreter would: ``sys.exit`` codes, 1 with the
script's traceback on an uncaught exception, non-daemon threads joined,
atexit handlers run, stdio flushed; then ``os._exit``, skipping only the
teardown of the imported modules (1.7 s of every exit here). mmepsa itself
and the tool are imported in the child, fresh. The launcher answers
``{"pid": ...}`` at the fork and ``{"rc": ...}`` when the child has exited.

Only what the child would import anyway is imported here, and no torch
computation runs before the fork (so no OpenMP pool is forked). Runs whose
environment differs from the launcher's in a variable read at import time
(``tests.utils.run`` decides) and the tests that measure a fresh process
start a fresh interpreter instead. ``MMEPSA_TEST_FRESH=1`` makes every run
fresh. mmengine's lookup of ``mmdet::`` bases is memoized here, as in the test
processes (``tests/base_lookup.py``).
"""
import atexit
import json
import os
import runpy
import sys
import threading
import types

# The third-party stack every tool imports; mmdet's registry modules are
# what a Runner with default_scope='mmdet' imports.
import mmcv.ops  # noqa: F401
import mmengine.runner  # noqa: F401
import torch  # noqa: F401
from base_lookup import memoize_base_lookup  # tests/base_lookup.py
from mmdet.utils import register_all_modules

register_all_modules(init_default_scope=False)
memoize_base_lookup()
# A fork copies only the calling thread: the stack must not have started any.
assert threading.active_count() == 1, threading.enumerate()


def _child(request: dict) -> None:
    """Become ``python script args`` (see the module docstring)."""
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out = os.open(request['stdout'], flags, 0o644)
    os.dup2(out, 1)
    if request['stderr']:
        os.dup2(os.open(request['stderr'], flags, 0o644), 2)
    else:
        os.dup2(out, 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, 'w', buffering=1, closefd=False)
    sys.stderr = open(2, 'w', buffering=1, closefd=False)
    argv = request['argv'][1:]
    if argv[0] == '-c':
        script, source = '<string>', argv[1]
        sys.argv, folder = ['-c', *argv[2:]], ''
    else:
        script = os.path.abspath(argv[0])
        sys.argv, folder = argv, os.path.dirname(script)
    extra = [
        p for p in request['env'].get('PYTHONPATH', '').split(os.pathsep)
        if p and p not in sys.path
    ]
    sys.path[:1] = [folder, *extra]
    try:
        if script == '<string>':
            main = types.ModuleType('__main__')
            sys.modules['__main__'] = main
            exec(compile(source, script, 'exec'), main.__dict__)
        else:
            runpy.run_path(script, run_name='__main__')
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except BaseException as e:  # what the interpreter prints, then exit 1
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _exit_code(code) -> int:
    """The exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xff
    print(code, file=sys.stderr)
    return 1


def main() -> None:
    channel = sys.stdout
    print(json.dumps({'ready': os.getpid()}), file=channel, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)  # never returns
        print(json.dumps({'pid': pid}), file=channel, flush=True)
        _, status = os.waitpid(pid, 0)
        print(
            json.dumps({'rc': os.waitstatus_to_exitcode(status)}),
            file=channel,
            flush=True)


if __name__ == '__main__':
    main()
