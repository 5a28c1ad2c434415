# Copyright (c) mmepsa contributors. All rights reserved.
"""Distributed training and testing on 2 CPU processes (gloo), launched as
users launch them: ``tools/dist_train.sh CONFIG 2`` on one node, and
``tools/dist_test.sh CONFIG CHECKPOINT 1`` on two "nodes" of this machine
(the multi-node variables; both scripts pass them to torchrun alike); the
slurm scripts' ``srun`` command (no slurm here)."""
import json
import os
import os.path as osp
import pickle
import re
import socket
from collections import Counter

import numpy as np
import pytest
import torch

import mmepsa  # noqa: F401  (torch.load allow-list for mmengine checkpoints)
from tests.utils import (PYTHON, REPO, TOOLS, make_tiny_project,
                         once_per_session, run, start, tool_env)

MAX_EPOCHS = 2
NUM_VAL = 3  # 3 images on 2 processes: the sampler pads rank 1 with one

# The tiny config with BN frozen (norm_eval=True) as the COCO configs train
# it on several GPUs, shuffled data, and a hook that saves each rank's model
# and the images each rank trained on.
DIST_CONFIG = """
_base_ = './retinanet_epsanet_tiny.py'
custom_imports = dict(
    imports=['mmepsa', 'dist_test_hooks'], allow_failed_imports=False)
randomness = dict(seed=0)
model = dict(backbone=dict(norm_eval=True))
train_dataloader = dict(
    batch_size=1, sampler=dict(type='DefaultSampler', shuffle=True))
train_cfg = dict(max_epochs={max_epochs}, val_interval=100)
val_dataloader = dict(dataset=dict(indices={num_val}))
test_dataloader = dict(dataset=dict(indices={num_val}))
custom_hooks = [dict(type='DumpRankStateHook', out_dir={out_dir!r})]
"""

HOOKS_MODULE = '''
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankStateHook(Hook):
    """Every rank saves its model's state and the image ids of its training
    batches to OUT_DIR/rank<r>.pth."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.seen = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        ids = [int(s.img_id) for s in data_batch['data_samples']]
        self.seen.append((runner.epoch, ids))

    def after_train(self, runner):
        model = runner.model
        if is_model_wrapper(model):
            model = model.module
        torch.save(
            dict(state_dict=model.state_dict(), seen=self.seen,
                 world_size=runner.world_size),
            osp.join(self.out_dir, f'rank{get_rank()}.pth'))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env(tmp, **extra):
    """The tool environment with ``tmp`` (the hooks module) importable, the
    scripts' $PYTHON (default: python on PATH) and a free port."""
    env = tool_env(tmp, PYTHON=PYTHON, PORT=str(_free_port()), **extra)
    env['PATH'] = osp.dirname(PYTHON) + os.pathsep + env.get('PATH', '')
    return env


def _run(cmd, env):
    return run(cmd, env=env).stdout


def _metrics(stdout):
    """``{'coco/bbox_mAP': '0.0120', ...}`` from test.py's last line of
    metrics."""
    lines = [line for line in stdout.splitlines() if 'coco/bbox_mAP:' in line]
    assert lines, stdout[-3000:]
    return dict(re.findall(r'(coco/\w+): (-?[\d.]+)', lines[-1]))


def _pseudo_ground_truth(predictions_pkl, data_root, per_image=3):
    """A COCO annotation file whose boxes are the model's own 3 best
    predictions on each test image.

    The tiny model, trained for 4 iterations, scores 0 against the real
    boxes, and a metric of 0 would not notice a missing rank. Against these
    boxes it scores well, and only if the predictions of every image are
    there: without rank 1's image, a third of the boxes are never found.
    """
    with open(osp.join(data_root, 'annotations.json')) as f:
        coco = json.load(f)
    annotations = []
    for pred in _load_predictions(predictions_pkl):
        inst = pred['pred_instances']
        for j in np.argsort(-np.asarray(inst['scores']))[:per_image]:
            x1, y1, x2, y2 = (float(v) for v in inst['bboxes'][j])
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=int(pred['img_id']),
                    category_id=int(inst['labels'][j]) + 1,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1),
                    iscrowd=0))
    coco['annotations'] = annotations
    path = osp.join(data_root, 'pseudo_ground_truth.json')
    with open(path, 'w') as f:
        json.dump(coco, f)
    return path


@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    """dist_train.sh on 2 processes; the checkpoint tested by dist_test.sh
    on 2 processes and by test.py on 1 (once per session, whichever xdist
    worker comes first)."""
    return once_per_session(tmp_path_factory, 'dist', _dist_runs)


def _two_nodes(tmp: str, cmd: list) -> str:
    """``cmd`` on two "nodes" of this machine at once (NNODES=2, NODE_RANK
    0 and 1, one MASTER_ADDR and PORT), as one job: node 0's output."""
    env = _env(tmp, NNODES='2', MASTER_ADDR='127.0.0.1')
    logs = [osp.join(tmp, f'node{node}.txt') for node in (0, 1)]
    procs = [
        start(cmd, dict(env, NODE_RANK=str(node)), REPO, log)
        for node, log in enumerate(logs)
    ]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = []
    for log in logs:
        with open(log) as f:
            texts.append(f.read())
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    return texts[0]


def _dist_runs(tmp: str) -> dict:
    make_tiny_project(tmp)
    states = osp.join(tmp, 'rank_states')
    os.makedirs(states)
    config = osp.join(tmp, 'retinanet_epsanet_dist.py')
    with open(config, 'w') as f:
        f.write(
            DIST_CONFIG.format(
                max_epochs=MAX_EPOCHS, num_val=NUM_VAL, out_dir=states))
    with open(osp.join(tmp, 'dist_test_hooks.py'), 'w') as f:
        f.write(HOOKS_MODULE)

    work_dir = osp.join(tmp, 'work_dir')
    train_out = _run([
        'bash',
        osp.join(TOOLS, 'dist_train.sh'), config, '2', '--work-dir', work_dir
    ], _env(tmp))
    ckpt = osp.join(work_dir, f'epoch_{MAX_EPOCHS}.pth')

    # Predictions of the 1-process test.py, then its metric and the
    # 2-process dist_test.sh's against a ground truth that makes the metric
    # depend on every image (see _pseudo_ground_truth).
    single_pkl = osp.join(tmp, 'single.pkl')
    _run([
        PYTHON,
        osp.join(TOOLS, 'test.py'), config, ckpt, '--work-dir',
        osp.join(tmp, 'test_predict'), '--out', single_pkl
    ], _env(tmp))
    gt = _pseudo_ground_truth(single_pkl, osp.join(tmp, 'data'))
    gt_option = ['--cfg-options', f'test_evaluator.ann_file={gt}']
    single_out = _run([
        PYTHON,
        osp.join(TOOLS, 'test.py'), config, ckpt, '--work-dir',
        osp.join(tmp, 'test_single'), *gt_option
    ], _env(tmp))
    dist_pkl = osp.join(tmp, 'dist.pkl')
    dist_test_dir = osp.join(tmp, 'test_dist')
    dist_out = _two_nodes(tmp, [
        'bash',
        osp.join(TOOLS, 'dist_test.sh'), config, ckpt, '1', '--work-dir',
        dist_test_dir, '--out', dist_pkl, *gt_option
    ])
    return dict(
        tmp=tmp,
        config=config,
        states=states,
        work_dir=work_dir,
        ckpt=ckpt,
        train_out=train_out,
        single_out=single_out,
        single_pkl=single_pkl,
        dist_out=dist_out,
        dist_pkl=dist_pkl,
        dist_test_dir=dist_test_dir,
        gt_option=gt_option)


def test_dist_train_two_cpu_processes(dist):
    assert 'Distributed training: True' in dist['train_out']
    assert 'GPU number: 2' in dist['train_out']  # mmengine's world size
    # 4 images, 2 processes x batch 1: 2 iterations per epoch.
    ckpt = torch.load(dist['ckpt'], map_location='cpu')
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (MAX_EPOCHS,
                                                             2 * MAX_EPOCHS)


def test_ranks_train_on_disjoint_halves_and_end_identical(dist):
    ranks = [
        torch.load(
            osp.join(dist['states'], f'rank{r}.pth'), map_location='cpu')
        for r in (0, 1)
    ]
    assert [r['world_size'] for r in ranks] == [2, 2]
    # Each epoch the two ranks trained on different images, all 4 between
    # them (the distributed sampler split one shuffled order)...
    for epoch in range(MAX_EPOCHS):
        seen = [[i for e, ids in r['seen'] if e == epoch for i in ids]
                for r in ranks]
        assert sorted(seen[0] + seen[1]) == [0, 1, 2, 3], seen
    # ... and yet end with the same parameters and buffers, bit for bit
    # (DDP averages the gradients; BN is frozen, as in the COCO configs).
    state0, state1 = ranks[0]['state_dict'], ranks[1]['state_dict']
    assert state0.keys() == state1.keys()
    differ = [k for k in state0 if not torch.equal(state0[k], state1[k])]
    assert not differ, differ[:5]
    # The checkpoint (written by rank 0) holds that model, after training.
    saved = torch.load(dist['ckpt'], map_location='cpu')['state_dict']
    assert all(torch.equal(saved[k], v) for k, v in state0.items())
    init = torch.load(
        osp.join(dist['work_dir'], 'epoch_1.pth'),
        map_location='cpu')['state_dict']
    assert not torch.equal(init['bbox_head.retina_cls.weight'],
                           saved['bbox_head.retina_cls.weight'])


def test_only_rank_0_writes_checkpoints_and_logs(dist):
    work_dir = dist['work_dir']
    (log_dir, ) = [
        d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d))
    ]
    assert re.fullmatch(r'\d{8}_\d{6}', log_dir)
    assert sorted(os.listdir(work_dir)) == sorted([
        log_dir, 'epoch_1.pth', 'epoch_2.pth', 'last_checkpoint',
        'retinanet_epsanet_dist.py'
    ])
    assert sorted(os.listdir(osp.join(
        work_dir, log_dir))) == [f'{log_dir}.log', 'vis_data']
    assert sorted(os.listdir(osp.join(work_dir, log_dir, 'vis_data'))) == [
        f'{log_dir}.json', 'config.py', 'scalars.json'
    ]
    # Each iteration logged once (rank 1 does not write to the log).
    with open(osp.join(work_dir, log_dir, f'{log_dir}.log')) as f:
        steps = re.findall(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/2\]',
                           f.read())
    assert Counter(steps) == {(str(e), str(i)): 1
                              for e in range(1, MAX_EPOCHS + 1)
                              for i in (1, 2)}
    # The same for dist_test.sh: one log dir, one copy of the config.
    (test_log_dir, config_copy) = sorted(os.listdir(dist['dist_test_dir']))
    assert re.fullmatch(r'\d{8}_\d{6}', test_log_dir)
    assert config_copy == 'retinanet_epsanet_dist.py'


def _load_predictions(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def test_dist_test_gathers_both_ranks(dist):
    single = _load_predictions(dist['single_pkl'])
    gathered = _load_predictions(dist['dist_pkl'])
    # 3 images, in dataset order: rank 0 predicted images 0 and 2, rank 1
    # image 1 and (padding) image 0 again, which the collection drops.
    assert [p['img_id'] for p in single] == list(range(NUM_VAL))
    assert [p['img_id'] for p in gathered] == list(range(NUM_VAL))
    for a, b in zip(single, gathered):
        for key in ('bboxes', 'scores', 'labels'):
            x, y = a['pred_instances'][key], b['pred_instances'][key]
            assert x.shape == y.shape and x.shape[0] > 0
            np.testing.assert_allclose(
                np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-4)
    single_metrics = _metrics(dist['single_out'])
    assert len(single_metrics) == 6  # mAP, mAP_50, _75, _s, _m, _l
    assert float(single_metrics['coco/bbox_mAP']) > 0.3, single_metrics
    assert _metrics(dist['dist_out']) == single_metrics


def test_dist_test_as_two_nodes(dist):
    """NNODES/NODE_RANK/MASTER_ADDR/PORT: two torchrun agents ("nodes") of
    one process each, on this machine, formed one 2-process job."""
    assert 'GPU number: 2' in dist['dist_out']


@pytest.mark.parametrize('script, positional, tool', [
    ('slurm_train.sh', ['cfg.py', 'work dir'], 'train.py'),
    ('slurm_test.sh', ['cfg.py', 'ckpt.pth'], 'test.py'),
])
def test_slurm_scripts_srun_command(tmp_path, script, positional, tool):
    """The srun command of the slurm scripts (a stand-in srun records its
    arguments): one task per GPU, the tool with --launcher=slurm, the extra
    arguments passed on whole."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    record = tmp_path / 'srun_args.txt'
    srun = bin_dir / 'srun'
    srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > '
                    f'"{record}"\n')
    srun.chmod(0o755)
    env = tool_env()
    env.update(
        PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}',
        GPUS='16',
        GPUS_PER_NODE='8',
        SRUN_ARGS='--time=1:00:00 --qos=high',
        PYTHON='python3')
    extra = [
        '--cfg-options', 'model.backbone.depth=101',
        'model.backbone.out_indices=(1, 2, 3)'
    ]
    run(['bash',
         osp.join(TOOLS, script), 'gpu', 'epsa', *positional, *extra],
        env=env)
    args = record.read_text().splitlines()
    tool_args = ([positional[0], f'--work-dir={positional[1]}']
                 if tool == 'train.py' else positional)
    assert args == [
        '-p', 'gpu', '--job-name=epsa', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        '--time=1:00:00', '--qos=high', 'python3', '-u',
        osp.join(TOOLS, tool), *tool_args, '--launcher=slurm', *extra
    ]
