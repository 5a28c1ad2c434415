# Copyright (c) mmepsa contributors. All rights reserved.
"""Helpers shared by the tests (as mmdet's
``tests/test_models/test_backbones/utils.py``): the tiny backbone settings,
the tiny RetinaNet project the tools run on, and the one subprocess runner.
The fixtures built from them are in ``tests/conftest.py``."""
import atexit
import importlib.util
import json
import os
import os.path as osp
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy as np
import pytest
import torch
from filelock import FileLock
from torch.nn.modules import GroupNorm
from torch.nn.modules.batchnorm import _BatchNorm

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
PYTHON = sys.executable

# A narrow EPSANet: 16 base channels split into 4 PSA branches of 4 channels,
# so the PSA groups must divide 4 (the default (1, 4, 8, 16) needs >= 64);
# SE squeeze 4. The tiny RetinaNet config below uses the same settings.
TINY_BACKBONE = dict(
    stem_channels=16, base_channels=16, conv_groups=(1, 2, 4, 4), se_ratio=4)

CLASSES = ('square', 'disk')

# A narrow EPSANet: 16 base channels split into 4 branches of 4 channels, so
# the PSA groups must divide 4 (the default (1, 4, 8, 16) needs >= 64).
TINY_CONFIG = """
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmepsa'], allow_failed_imports=False)
data_root = {data_root!r}
metainfo = dict(classes={classes!r}, palette=[(220, 20, 60), (0, 0, 142)])
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='EPSANet',
        depth=50,
        {tiny_backbone},
        out_indices=(1, 2, 3),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512], out_channels=16, num_outs=3,
              start_level=0, add_extra_convs='on_input'),
    bbox_head=dict(
        num_classes=2, in_channels=16, feat_channels=16, stacked_convs=1,
        anchor_generator=dict(strides=[8, 16, 32])),
    test_cfg=dict(score_thr=0.0, max_per_img=20))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
dataset = dict(
    type='CocoDataset', data_root=data_root, metainfo=metainfo,
    ann_file='annotations.json', data_prefix=dict(img='images/'))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    batch_sampler=None,
    dataset=dict(dataset, pipeline=pipeline,
                 filter_cfg=dict(filter_empty_gt=False, min_size=0)))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(dataset, pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=100)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
optim_wrapper = dict(optimizer=dict(lr=0.001))
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=1))
log_processor = dict(window_size=1)
env_cfg = dict(cudnn_benchmark=False)
"""


def once_per_session(tmp_path_factory, name: str, make) -> dict:
    """``make(folder)`` run once for the whole session, whichever xdist
    worker asks first (the others wait on a lock, then read its result):
    the folder and the dict ``make`` returned (JSON-able)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent  # shared by the workers of this session
    folder = root / name
    result_file = root / f'{name}.json'
    with FileLock(str(root / f'{name}.lock')):
        if not result_file.exists():
            folder.mkdir(exist_ok=True)
            result = make(str(folder))
            result_file.write_text(json.dumps(result))
        return json.loads(result_file.read_text())


def make_tiny_dataset(root: str, num_images: int = 4, size: int = 64):
    """A COCO set of ``num_images`` ``size``-px images, each with a bright
    square and a disk on a dark background."""
    import cv2
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    rng = np.random.RandomState(0)
    images, annotations = [], []
    for i in range(num_images):
        img = np.full((size, size, 3), 30, np.uint8)
        x, y, s = (int(v) for v in rng.randint(4, size // 2 - 4, 3))
        s = max(s, 10)
        img[y:y + s, x:x + s] = (40, 200, 240)
        cx, cy, r = size - 18, size - 18, 10
        cv2.circle(img, (cx, cy), r, (230, 90, 20), -1)
        name = f'img_{i}.png'
        cv2.imwrite(osp.join(root, 'images', name), img)
        images.append(dict(id=i, file_name=name, width=size, height=size))
        for cat, (bx, by, bw, bh) in ((1, (x, y, s, s)), (2, (cx - r, cy - r,
                                                              2 * r, 2 * r))):
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i,
                    category_id=cat,
                    bbox=[bx, by, bw, bh],
                    area=bw * bh,
                    iscrowd=0))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    with open(osp.join(root, 'annotations.json'), 'w') as f:
        json.dump(
            dict(
                images=images, annotations=annotations, categories=categories),
            f)


def make_tiny_project(tmp: str) -> str:
    """Write the synthetic data set and the tiny config; return its path."""
    data_root = osp.join(tmp, 'data') + '/'
    make_tiny_dataset(data_root)
    config = osp.join(tmp, 'retinanet_epsanet_tiny.py')
    with open(config, 'w') as f:
        f.write(
            TINY_CONFIG.format(
                data_root=data_root,
                classes=CLASSES,
                tiny_backbone=', '.join(f'{k}={v!r}'
                                        for k, v in TINY_BACKBONE.items())))
    return config


def child_config(project: dict, folder, name: str, body: str) -> str:
    """Write ``folder/name``: a config inheriting the tiny project's config
    (:func:`make_tiny_project`) with ``body`` added; returns its path."""
    path = osp.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(f'_base_ = {project["config"]!r}\n' + body)
    return path


def tool_env(*pythonpath: str, **extra: str) -> dict:
    """The environment of a tool subprocess: quiet, single-threaded, no GPU;
    ``extra`` variables set. With ``pythonpath`` folders (e.g. one holding a
    hooks module a config imports), those, then the checkout, go first on
    ``PYTHONPATH``."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONWARNINGS='ignore',
        MPLBACKEND='Agg')
    # A GPU is not needed, and CPU runs must not pick one up.
    env['CUDA_VISIBLE_DEVICES'] = ''
    if pythonpath:
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (*pythonpath, REPO, env.get('PYTHONPATH')) if p)
    env.update(extra)
    return env


# Variables read when an interpreter starts or imports the stack (thread
# pools, CUDA, torch's loading defaults, Python's own): a run whose
# environment differs from the warm launcher's in one of these starts a
# fresh interpreter. Exceptions: PYTHONPATH is applied by the launcher's
# child, PYTHON (the interpreter tools/dist_*.sh run) is read by those
# scripts, not by Python, and torch.load reads the TORCH_FORCE_*_LOAD
# switches at each call (torch/serialization.py, torch 2.1 to 2.14).
_IMPORT_TIME_VARIABLES = ('TORCH', 'PYTORCH', 'OMP_', 'MKL', 'KMP_',
                          'OPENBLAS', 'NUMEXPR', 'CUDA', 'LD_', 'MPL',
                          'PYTHON', 'MMEPSA_TEST_FRESH')
_NOT_READ_AT_START = ('PYTHONPATH', 'PYTHON', 'TORCH_FORCE_WEIGHTS_ONLY_LOAD',
                      'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')


class WarmLauncher:
    """Client of ``tests/warm_launcher.py`` (one per test process): runs a
    tool script in a forked child of an interpreter that has imported the
    third-party stack once. See that file and docs/testing.md."""

    SCRIPT = osp.join(REPO, 'tests', 'warm_launcher.py')

    def __init__(self):
        self.env = tool_env()
        self._log = tempfile.NamedTemporaryFile(
            'w+', prefix='warm_launcher_', suffix='.log')
        self.proc = subprocess.Popen([PYTHON, self.SCRIPT],
                                     cwd=REPO,
                                     env=self.env,
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self._log)
        self._buffer = b''
        if 'ready' not in self._reply(300):
            self._fail('did not start')

    def _fail(self, what: str):
        self._log.seek(0)
        pytest.fail(f'tests/warm_launcher.py {what}:\n'
                    f'{self._log.read()[-6000:]}')

    def _reply(self, timeout: Optional[float]) -> dict:
        """The launcher's next JSON line; ``{}`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b'\n' not in self._buffer:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return {}
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._fail('exited')
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b'\n', 1)
        return json.loads(line)

    @staticmethod
    def serves(args: list) -> bool:
        """Whether ``args`` is ``python script.py ...`` or ``python -c CODE
        ...``."""
        if len(args) < 2 or args[0] != PYTHON:
            return False
        return (len(args) >= 3
                and args[1] == '-c') or (args[1].endswith('.py')
                                         and osp.isfile(args[1]))

    def accepts(self, env: dict) -> bool:
        """Whether a run with ``env`` imports the stack as the launcher
        did."""
        for key in set(env) | set(self.env):
            if (key not in _NOT_READ_AT_START
                    and env.get(key) != self.env.get(key)
                    and key.startswith(_IMPORT_TIME_VARIABLES)):
                return False
        return True

    def start(self,
              args: list,
              env: dict,
              cwd: str,
              stdout: str,
              stderr: Optional[str] = None) -> 'LaunchedRun':
        """Fork a child that runs ``args`` with its output in the files
        ``stdout`` (and ``stderr``, else the same file)."""
        request = dict(
            argv=args, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        self.proc.stdin.write(json.dumps(request).encode() + b'\n')
        self.proc.stdin.flush()
        return LaunchedRun(self, self._reply(60)['pid'])

    def run(self, args: list, env: dict, cwd: str, timeout: float,
            merge_stderr: bool) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out = osp.join(tmp, 'stdout')
            err = None if merge_stderr else osp.join(tmp, 'stderr')
            child = self.start(args, env, cwd, out, err)
            try:
                rc = child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                raise subprocess.TimeoutExpired(args, timeout) from None

            def read(path):
                with open(path, errors='replace') as f:
                    return f.read()

            return subprocess.CompletedProcess(
                args, rc, read(out), None if err is None else read(err))

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


class LaunchedRun:
    """A run in a child of the :class:`WarmLauncher`, with the part of
    :class:`subprocess.Popen` the tests use: ``pid``, ``poll``, ``wait``,
    ``kill``, ``returncode``."""

    def __init__(self, launcher: WarmLauncher, pid: int):
        self.launcher, self.pid, self.returncode = launcher, pid, None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            self.returncode = self.launcher._reply(0).get('rc')
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        if self.returncode is None:
            self.returncode = self.launcher._reply(timeout).get('rc')
            if self.returncode is None:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.returncode

    def kill(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended; the launcher reaped it
                pass


_launcher: Optional[WarmLauncher] = None


def warm_launcher() -> WarmLauncher:
    """This process's :class:`WarmLauncher`, started on first use."""
    global _launcher
    if _launcher is None or _launcher.proc.poll() is not None:
        _launcher = WarmLauncher()
        atexit.register(_launcher.close)
    return _launcher


def _warm(args: list, env: dict) -> bool:
    """Whether :func:`run` and :func:`start` give ``args`` to the warm
    launcher: not under ``MMEPSA_TEST_FRESH=1``, a script or ``-c`` run, an
    environment it can serve."""
    return (os.environ.get('MMEPSA_TEST_FRESH') != '1'
            and WarmLauncher.serves(args) and warm_launcher().accepts(env))


def run(args: Sequence,
        env: Optional[dict] = None,
        cwd: Optional[str] = None,
        timeout: int = 300,
        check: bool = True,
        merge_stderr: bool = True,
        fresh: bool = False) -> subprocess.CompletedProcess:
    """Run ``args`` (a tool, mim, a shell script) as a user would, in
    ``cwd`` (default: the checkout) with ``env`` (default:
    :func:`tool_env`). With ``check``, a non-zero exit fails the test with
    the end of the output. stderr goes into stdout unless
    ``merge_stderr=False``.

    ``python tools/<tool>.py ...`` and ``python -c CODE`` run in a child of
    the warm launcher (:class:`WarmLauncher`) unless ``fresh`` (a test that
    measures a fresh process), ``MMEPSA_TEST_FRESH=1`` or an environment the
    launcher cannot serve asks for a new interpreter."""
    args = [str(a) for a in args]
    env = tool_env() if env is None else env
    cwd = str(cwd or REPO)
    if not fresh and _warm(args, env):
        proc = warm_launcher().run(args, env, cwd, timeout, merge_stderr)
    else:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(args)} exited with {proc.returncode}:\n'
                    f'{proc.stdout[-6000:]}{proc.stderr or ""}')
    return proc


def start(args: Sequence, env: dict, cwd: str, stdout: str):
    """Start ``args`` without waiting (as :class:`subprocess.Popen`, output
    to the file ``stdout``), in a child of the warm launcher when
    :func:`run` would use it; returns the Popen or :class:`LaunchedRun`."""
    args = [str(a) for a in args]
    if _warm(args, env):
        return warm_launcher().start(args, env, cwd, stdout)
    with open(stdout, 'w') as out:
        return subprocess.Popen(
            args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def load_tool(relpath: str):
    """A tool script as a module, to call its ``main`` in this process
    (where the check's cases can be made tiny)."""
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(relpath)[:-3], osp.join(TOOLS, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(relpath: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """``python tools/<relpath> args...``: :func:`run` of a tool script."""
    return run([PYTHON, osp.join(TOOLS, relpath), *args], **kwargs)


def assert_train_step_equal(ref, ours, x) -> int:
    """A training step (train-mode BN) of the authors' formulation ``ref``
    (``mmepsa.testing.RefEPSANet``) and of ``ours`` (an EPSANet with its
    weights), both converted to float64 with ``x``: outputs equal to 1e-9,
    every parameter's gradient to 1e-7. Float64, because in float32
    batch-statistics BN amplifies rounding until even the original differs
    from itself run channels-last by ~1e-2 in gradients. Returns the number
    of gradients compared."""
    ref, ours = ref.double().train(), ours.double().train()
    x = x.double()
    theirs, outs = ref.stages(x), ours(x)
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    sum((o * w).mean() for o, w in zip(outs, weights)).backward()
    sum((o * w).mean() for o, w in zip(theirs, weights)).backward()
    for a, b in zip(outs, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    ref_params = dict(ref.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(
            p.grad, ref_params[name].grad, rtol=1e-7, atol=1e-10, msg=name)
        checked += 1
    return checked


def check_norm_state(modules, train_state: bool) -> bool:
    """Whether every norm layer in ``modules`` is in ``train_state`` (as
    mmdet's tests/test_models/test_backbones/utils.py)."""
    for mod in modules:
        if isinstance(mod, (_BatchNorm, GroupNorm)):
            if mod.training != train_state:
                return False
    return True


# The demo configs, shrunk for tests: a generated dataset of 8 train / 4 val
# images of 64 px and one epoch (2 iterations of batch 4); the full-size
# backbone is kept.
DEMO_MASK_RCNN = osp.join(REPO, 'configs', 'demo',
                          'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')
DEMO_RETINANET = osp.join(REPO, 'configs', 'demo',
                          'retinanet_epsanet50-s_fpn_demo-shapes.py')
# an (almost) untrained model scores below the usual 0.05 threshold, and
# CocoMetric returns no metrics at all for empty results
_DEMO_KEEP_ALL = {
    DEMO_MASK_RCNN: ['model.test_cfg.rcnn.score_thr=0'],
    DEMO_RETINANET: ['model.test_cfg.score_thr=0'],
}


def tiny_demo_args(config: str, tmp_path) -> list:
    """tools/run_demo.py's arguments for a 2-iteration run of ``config``
    (one of the demo configs) in ``tmp_path``."""
    return [
        '--config', config, '--work-dir',
        str(tmp_path / 'work'), '--data-root',
        str(tmp_path / 'data'), '--epochs', '1', '--img-size', '64',
        '--cfg-options', 'demo_data.num_train=8', 'demo_data.num_val=4',
        *_DEMO_KEEP_ALL[config]
    ]
