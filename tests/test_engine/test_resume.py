# Copyright (c) mmepsa contributors. All rights reserved.
"""Kill and resume loses nothing: a training run killed with SIGKILL in the
middle of an epoch and finished with ``tools/train.py --resume`` ends with
exactly the weights of a run that was never interrupted; a damaged last
checkpoint stops ``--resume`` with its name.

The config is the RetinaNet demo config
(``configs/demo/retinanet_epsanet50-s_fpn_demo-shapes.py``) shrunk to run in
seconds: the same epoch-based schedule shape (linear warm-up, then cosine by
epoch), AdamW with gradient clipping, a checkpoint every epoch (keeping 2),
shuffled data with ``RandomFlip``, BN learning from scratch; on the tiny
EPSANet and 4-image set of ``tests/utils.py``, with a fixed seed and
``deterministic=True``, and a validation after every epoch (the demo
validates at the end only) so that validation's random draws between epochs
are covered too.
"""
import glob
import os
import os.path as osp
import re
import shutil
import signal
import time

import pytest
import torch

from mmepsa.utils.resume import (CheckpointError, check_checkpoint,
                                 check_resume_checkpoint)
from tests.utils import (PYTHON, REPO, TOOLS, make_tiny_project,
                         once_per_session, run_tool, start, tool_env)

MAX_EPOCHS = 3
ITERS = 4  # 4 images, batch 1
HANG_AT = (2, 2)  # killed after iteration 2 of epoch 2 (1-based, as logged)

FAULTS_CONFIG = """
# The RetinaNet demo config shrunk (see tests/test_engine/test_resume.py).
_base_ = './retinanet_epsanet_tiny.py'
custom_imports = dict(
    imports=['mmepsa', 'faults_test_hooks'], allow_failed_imports=False)
randomness = dict(seed=0, deterministic=True)
model = dict(backbone=dict(frozen_stages=-1, norm_eval=False))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(_delete_=True, type='AspectRatioBatchSampler'),
    dataset=dict(pipeline=train_pipeline))
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs={max_epochs}, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=3),
    dict(type='CosineAnnealingLR', eta_min=1e-5, begin=0, end={max_epochs},
         T_max={max_epochs}, by_epoch=True, convert_to_iter_based=True),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10, norm_type=2))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
custom_hooks = [dict(type='HangAtIterHook')]
"""

# Imported by the config (custom_imports); the test's tmp dir is on
# PYTHONPATH.
HOOKS_MODULE = '''
import os
import threading

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class HangAtIterHook(Hook):
    """With MMEPSA_HANG_AT="E,I", blocks for good after iteration I of
    epoch E (1-based, as logged), so that the test kills the process in
    the middle of an epoch without racing it. Inert otherwise."""

    priority = 'LOWEST'  # after LoggerHook has written the iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        spot = f'{runner.epoch + 1},{batch_idx + 1}'
        if os.environ.get('MMEPSA_HANG_AT') == spot:
            threading.Event().wait()
'''

TRAIN_LINE = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/(\d+)\]\s+(.*)')
# The fields that depend on the computation (not on the clock).
COMPUTED = ('lr', 'grad_norm', 'loss', 'loss_cls', 'loss_bbox')


def _env(tmp):
    """The tool environment with ``tmp`` (the hooks module) importable."""
    env = tool_env(tmp)
    env.pop('MMEPSA_HANG_AT', None)
    return env


def _train(tmp, config, work_dir, *extra, check=True):
    return run_tool(
        'train.py',
        config,
        '--work-dir',
        work_dir,
        *extra,
        env=_env(tmp),
        check=check)


def _logs(work_dir):
    """The work dir's run logs (``<timestamp>/<timestamp>.log``), oldest
    first."""
    return sorted(glob.glob(osp.join(work_dir, '*', '*.log')))


def _train_lines(log):
    """``[(epoch, iter, n, {field: value})]`` of a log's training lines."""
    rows = []
    with open(log) as f:
        for line in f:
            m = TRAIN_LINE.search(line)
            if m:
                fields = dict(re.findall(r'(\w+): (\S+)', m.group(4)))
                rows.append((int(m.group(1)), int(m.group(2)), int(m.group(3)),
                             {k: fields[k]
                              for k in COMPUTED if k in fields}))
    return rows


def _steps(rows):
    return [(epoch, i) for epoch, i, _, _ in rows]


def _kill_mid_epoch(tmp, config, work_dir):
    """Train until iteration HANG_AT of epoch 2, then SIGKILL the process."""
    env = _env(tmp)
    env['MMEPSA_HANG_AT'] = '{},{}'.format(*HANG_AT)
    out_path = osp.join(tmp, 'killed_stdout.txt')
    pattern = re.compile(r'Epoch\(train\)\s+\[{}\]\[\s*{}/'.format(*HANG_AT))
    proc = start(
        [PYTHON,
         osp.join(TOOLS, 'train.py'), config, '--work-dir', work_dir],
        env=env,
        cwd=REPO,
        stdout=out_path)
    try:
        deadline = time.monotonic() + 300
        while True:
            # Poll the log: the hook holds the process at that iteration,
            # so there is no race with the kill.
            logs = _logs(work_dir)
            if logs and pattern.search(open(logs[-1]).read()):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail('training ended (or hung) before epoch '
                            f'{HANG_AT[0]}: rc {proc.returncode}\n' +
                            open(out_path).read()[-6000:])
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return proc.returncode


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """An uninterrupted run; a run killed in epoch 2, then finished by
    ``--resume`` (auto) and, from a copy, by ``--resume epoch_1.pth`` (once
    per session, whichever xdist worker comes first)."""
    return once_per_session(tmp_path_factory, 'resume_runs', _resume_runs)


def _resume_runs(tmp: str) -> dict:
    make_tiny_project(tmp)
    config = osp.join(tmp, 'retinanet_epsanet_faults.py')
    with open(config, 'w') as f:
        f.write(FAULTS_CONFIG.format(max_epochs=MAX_EPOCHS))
    with open(osp.join(tmp, 'faults_test_hooks.py'), 'w') as f:
        f.write(HOOKS_MODULE)

    ref = osp.join(tmp, 'uninterrupted')
    _train(tmp, config, ref)

    auto = osp.join(tmp, 'resumed_auto')
    killed_rc = _kill_mid_epoch(tmp, config, auto)
    after_kill = sorted(os.listdir(auto))
    with open(osp.join(auto, 'last_checkpoint')) as f:
        last_after_kill = f.read().strip()
    explicit = osp.join(tmp, 'resumed_explicit')
    shutil.copytree(auto, explicit)

    resumed = {
        'auto':
        _train(tmp, config, auto, '--resume').stdout,
        'explicit':
        _train(tmp, config, explicit, '--resume',
               osp.join(explicit, 'epoch_1.pth')).stdout,
    }
    return dict(
        tmp=tmp,
        config=config,
        ref=ref,
        killed_rc=killed_rc,
        after_kill=after_kill,
        last_after_kill=last_after_kill,
        work_dirs=dict(auto=auto, explicit=explicit),
        resumed=resumed)


def test_killed_in_the_middle_of_epoch_2(runs):
    assert runs['killed_rc'] == -signal.SIGKILL
    # epoch 1 saved, epoch 2 not finished: the kill came mid-epoch.
    ckpts = [n for n in runs['after_kill'] if n.endswith('.pth')]
    assert ckpts == ['epoch_1.pth'], runs['after_kill']
    assert runs['last_after_kill'] == osp.join(runs['work_dirs']['auto'],
                                               'epoch_1.pth')


@pytest.mark.parametrize('how', ['auto', 'explicit'])
def test_resume_ends_with_the_uninterrupted_weights(runs, how):
    work_dir = runs['work_dirs'][how]
    assert 'resumed epoch: 1, iter: 4' in runs['resumed'][how]
    for name in ('epoch_2.pth', f'epoch_{MAX_EPOCHS}.pth'):
        ref = torch.load(osp.join(runs['ref'], name), map_location='cpu')
        got = torch.load(osp.join(work_dir, name), map_location='cpu')
        assert (got['meta']['epoch'], got['meta']['iter']) == \
            (ref['meta']['epoch'], ref['meta']['iter'])
        assert got['state_dict'].keys() == ref['state_dict'].keys()
        # Bit for bit: same seed, deterministic CPU kernels, one thread.
        differ = [
            k for k, v in ref['state_dict'].items()
            if not torch.equal(got['state_dict'][k], v)
        ]
        assert not differ, f'{name}: {len(differ)} tensors differ, ' \
            f'e.g. {differ[:3]}'
        ref_opt, got_opt = ref['optimizer']['state'], got['optimizer']['state']
        assert ref_opt.keys() == got_opt.keys()
        for i in ref_opt:
            for k, v in ref_opt[i].items():
                assert torch.equal(got_opt[i][k], v), (name, i, k)


@pytest.mark.parametrize('how', ['auto', 'explicit'])
def test_resume_skips_and_repeats_no_epoch(runs, how):
    (ref_log, ) = _logs(runs['ref'])
    killed_log, resumed_log = _logs(runs['work_dirs'][how])
    ref = _train_lines(ref_log)
    killed = _train_lines(killed_log)
    resumed = _train_lines(resumed_log)
    everything = [(e, i) for e in range(1, MAX_EPOCHS + 1)
                  for i in range(1, ITERS + 1)]
    assert _steps(ref) == everything
    assert all(n == ITERS for _, _, n, _ in ref + killed + resumed)
    # The killed run: epoch 1 and the first iterations of epoch 2.
    assert _steps(killed) == everything[:ITERS + HANG_AT[1]]
    # The resumed run redoes epoch 2 from its first iteration, then the
    # rest, each iteration once: epoch 1 is not repeated, none is skipped.
    assert _steps(resumed) == everything[ITERS:]
    # ... computing what the uninterrupted run computed (lr, losses and
    # gradient norm as logged, 4 decimals).
    assert resumed == ref[ITERS:]
    assert killed == ref[:ITERS + HANG_AT[1]]


def _damaged_work_dir(runs, tmp_path):
    """epoch_2.pth whole, epoch_3.pth (named by last_checkpoint) truncated to
    half its size, as a copy interrupted by a full disk would leave it."""
    work_dir = str(tmp_path / 'damaged')
    os.makedirs(work_dir)
    for name in ('epoch_2.pth', 'epoch_3.pth'):
        shutil.copy(osp.join(runs['ref'], name), work_dir)
    last = osp.join(work_dir, 'epoch_3.pth')
    with open(last, 'r+b') as f:
        f.truncate(osp.getsize(last) // 2)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(last)
    return work_dir


def test_resume_from_truncated_last_checkpoint_names_it(runs, tmp_path):
    work_dir = _damaged_work_dir(runs, tmp_path)
    proc = _train(
        runs['tmp'], runs['config'], work_dir, '--resume', check=False)
    last = osp.join(work_dir, 'epoch_3.pth')
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert 'Traceback' not in proc.stdout, proc.stdout[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == (
        f'error: cannot resume: {last} (the latest checkpoint, named in '
        f'{osp.join(work_dir, "last_checkpoint")}) is truncated: it starts '
        'as the zip archive that torch.save writes, but the end of the '
        'archive (its central directory) is missing. Resume from the previous '
        f'checkpoint with --resume {osp.join(work_dir, "epoch_2.pth")}, or '
        'delete the damaged file.')
    # nothing was trained or written
    assert sorted(os.listdir(work_dir)) == [
        'epoch_2.pth', 'epoch_3.pth', 'last_checkpoint'
    ]


def test_check_resume_checkpoint_explicit_path(runs, tmp_path):
    from mmengine.config import Config
    work_dir = _damaged_work_dir(runs, tmp_path)
    cfg = Config(dict(work_dir=work_dir, resume=True, load_from=None))
    assert 'the latest checkpoint' in check_resume_checkpoint(cfg)
    cfg.load_from = osp.join(work_dir, 'epoch_3.pth')
    message = check_resume_checkpoint(cfg)
    assert message.startswith(f'cannot resume: {cfg.load_from} is truncated')
    cfg.load_from = osp.join(work_dir, 'epoch_2.pth')
    assert check_resume_checkpoint(cfg) is None
    cfg.resume = False  # load_from alone: a fine-tune, not checked here
    cfg.load_from = osp.join(work_dir, 'epoch_3.pth')
    assert check_resume_checkpoint(cfg) is None
    cfg.resume, cfg.load_from = True, str(tmp_path / 'missing.pth')
    assert check_resume_checkpoint(cfg) == (
        f'cannot resume: {cfg.load_from} does not exist.')


def test_check_checkpoint_finds_a_flipped_byte(runs, tmp_path):
    path = str(tmp_path / 'flipped.pth')
    shutil.copy(osp.join(runs['ref'], 'epoch_3.pth'), path)
    check_checkpoint(path)  # whole
    # Flip a byte in the middle of the file: tensor data, which torch.load
    # would read without noticing; the record's CRC-32 does not match.
    with open(path, 'r+b') as f:
        f.seek(osp.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match='fails the CRC check'):
        check_checkpoint(path)


def test_check_checkpoint_empty_and_legacy_files(tmp_path):
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointError, match=r'empty\.pth is empty$'):
        check_checkpoint(str(empty))
    # torch's legacy format is a pickle stream: not unpickled here, left to
    # the loader (which refuses what weights_only refuses).
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {
        'w': torch.ones(2)
    }},
               legacy,
               _use_new_zipfile_serialization=False)
    check_checkpoint(str(legacy))
