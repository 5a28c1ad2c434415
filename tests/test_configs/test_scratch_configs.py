# Copyright (c) mmepsa contributors. All rights reserved.
"""configs/scratch: detectors trained without an ImageNet checkpoint, by
mmdet's recipe for that ("Rethinking ImageNet Pre-training": GroupNorm in
backbone, neck and heads, random init, 6x schedule).

The configs are mmdet's own scratch configs with the backbone swapped; the
models they build have no ``Pretrained`` init and GroupNorm in every norm
layer (each EPSA block's ``norm2``, after the PSA module, included); the
Mask R-CNN trains a few iterations on the demo data and is evaluated; with
``norm_cfg=dict(type='SyncBN')`` the config builds, a one-process run
trains once mmengine's Runner has reverted SyncBN to BN, and under a process
group torch's SyncBN refuses CPU tensors.
"""
import copy
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.model.utils import _BatchNormXd, revert_sync_batchnorm
from torch.nn.modules.batchnorm import _NormBase

import mmepsa  # noqa: F401  (registers EPSANet)
from tests.test_configs.utils import (build, load, on_demo_data,
                                      train_two_iterations, without_scope)
from tests.utils import REPO

FASTER = ('configs/scratch/'
          'faster-rcnn_epsanet50-s-scratch_fpn_gn-all_6x_coco.py')
MASK = 'configs/scratch/mask-rcnn_epsanet50-s-scratch_fpn_gn-all_6x_coco.py'
# ours -> mmdet's ResNet-50 config it inherits
MMDET_SCRATCH = {
    FASTER: 'mmdet::scratch/faster-rcnn_r50-scratch_fpn_gn-all_6x_coco.py',
    MASK: 'mmdet::scratch/mask-rcnn_r50-scratch_fpn_gn-all_6x_coco.py',
}
GN = dict(type='GN', num_groups=32, requires_grad=True)
# The norm layers of a model: BN (incl. SyncBN) and InstanceNorm derive from
# _NormBase; GroupNorm and LayerNorm do not.
NORM_TYPES = (_NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# EPSANet-50's norms: the stem's, 3 per block (16 blocks), 1 per stage's
# downsampling shortcut (4).
EPSANET50_NORMS = 1 + 3 * 16 + 4


def norms_of(module: nn.Module) -> dict:
    return {
        name: m
        for name, m in module.named_modules() if isinstance(m, NORM_TYPES)
    }


def find_pretrained(obj, where='') -> list:
    """Where an ``init_cfg`` (or anything) of type Pretrained is in ``obj``:
    nested dicts and lists."""
    found = []
    if isinstance(obj, dict):
        if obj.get('type') == 'Pretrained':
            found.append(where)
        for key, value in obj.items():
            found += find_pretrained(value, f'{where}.{key}')
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found += find_pretrained(value, f'{where}[{i}]')
    return found


# The SyncBN variant as configs/scratch/README.md writes it: a config
# beside the scratch one (``_delete_``: SyncBN takes no ``num_groups``).
SYNC_BN_CHILD = """_base_ = {base!r}
norm_cfg = dict(_delete_=True, type='SyncBN', requires_grad=True)
model = dict(
    backbone=dict(norm_cfg=norm_cfg),
    neck=dict(norm_cfg=norm_cfg),
    roi_head=dict(bbox_head=dict(norm_cfg=norm_cfg){mask_head}))
"""


def syncbn_config(config: str, folder) -> Config:
    """``config`` (a scratch config) with SyncBN wherever it has GN."""
    path = osp.join(str(folder), 'syncbn_' + osp.basename(config))
    mask_head = ', mask_head=dict(norm_cfg=norm_cfg)' if config == MASK else ''
    with open(path, 'w') as f:
        f.write(
            SYNC_BN_CHILD.format(
                base=osp.join(REPO, config), mask_head=mask_head))
    return Config.fromfile(path)


def test_scratch_folder_holds_the_two_configs():
    found = sorted(
        osp.relpath(p, REPO)
        for p in glob.glob(osp.join(REPO, 'configs', 'scratch', '*.py')))
    assert found == sorted([FASTER, MASK])


@pytest.mark.parametrize('config', [FASTER, MASK])
def test_recipe_is_mmdets_with_the_backbone_swapped(config):
    """Everything but the backbone (and the FPN's channels-last type) is
    mmdet's ResNet-50 scratch config; the backbone sets what mmdet's sets."""
    ours, theirs = load(config), get_config(MMDET_SCRATCH[config])
    assert ours.custom_imports == dict(
        imports=['mmepsa'], allow_failed_imports=False)

    # mmdet's scratch recipe, as the README states it
    assert theirs.model.backbone.norm_cfg == GN
    assert theirs.model.neck.norm_cfg == GN
    assert theirs.model.roi_head.bbox_head.type == 'Shared4Conv1FCBBoxHead'
    assert theirs.model.roi_head.bbox_head.norm_cfg == GN
    if config == MASK:
        assert theirs.model.roi_head.mask_head.norm_cfg == GN
    assert theirs.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4)
    assert theirs.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.)
    assert theirs.train_cfg.max_epochs == 73
    warmup, steps = theirs.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR',
                                                              0.001, 500)
    assert (steps.type, steps.milestones, steps.end) == ('MultiStepLR',
                                                         [65, 71], 73)
    assert theirs.train_dataloader.batch_size == 2
    assert theirs.auto_scale_lr == dict(enable=False, base_batch_size=16)

    # ... and ours is the same, but for the backbone and the FPN's type
    ours_dict = without_scope(ours.to_dict())
    theirs_dict = without_scope(theirs.to_dict())
    ours_dict.pop('custom_imports')
    ours_model, theirs_model = ours_dict.pop('model'), theirs_dict.pop('model')
    assert ours_dict == theirs_dict
    ours_backbone = ours_model.pop('backbone')
    theirs_backbone = theirs_model.pop('backbone')
    ours_neck, theirs_neck = ours_model.pop('neck'), theirs_model.pop('neck')
    assert ours_model == theirs_model
    assert ours_neck['type'] == 'ChannelsLastFPN'
    assert dict(ours_neck, type='FPN') == theirs_neck
    assert ours_neck['in_channels'] == [256, 512, 1024, 2048]

    assert theirs_backbone.pop('type') == 'ResNet'
    assert ours_backbone.pop('type') == 'EPSANet'
    assert ours_backbone.pop('variant') == 'small'
    assert ours_backbone.pop('contiguous_outputs') is False
    # norm_eval only puts BN in eval mode: mmdet's inherited True does
    # nothing to GN; ours is False so that a BN/SyncBN swap trains its
    # statistics.
    assert theirs_backbone.pop('norm_eval') is True
    assert ours_backbone.pop('norm_eval') is False
    assert ours_backbone == theirs_backbone
    assert ours_backbone['init_cfg'] is None
    assert ours_backbone['frozen_stages'] == -1
    assert ours_backbone['zero_init_residual'] is False


@pytest.mark.parametrize('config', [FASTER, MASK])
def test_no_pretrained_and_groupnorm_everywhere(config):
    cfg = load(config)
    assert find_pretrained(cfg.to_dict()) == []
    with torch.device('meta'):  # the structure only: no weights filled
        model = build(cfg.model)
    for name, module in model.named_modules():
        where = find_pretrained(getattr(module, 'init_cfg', None))
        assert not where, (name, where)
    # mmdet ResNet's own random init (init_cfg=None, no pretrained)
    init_types = [c['type'] for c in model.backbone.init_cfg]
    assert init_types == ['Kaiming', 'Constant'], model.backbone.init_cfg

    norms = norms_of(model)
    assert norms
    for name, norm in norms.items():
        assert type(norm) is nn.GroupNorm, (name, type(norm).__name__)
        assert norm.num_groups == 32 and norm.affine, name
        assert norm.weight.requires_grad, name
    # in the backbone, the neck and the heads (the RPN head has no norm)
    parts = ['backbone', 'neck', 'roi_head.bbox_head']
    if config == MASK:
        parts.append('roi_head.mask_head')
    for part in parts:
        assert norms_of(model.get_submodule(part)), part
    assert len(norms_of(model.backbone)) == EPSANET50_NORMS
    # every EPSA block's three norms, norm2 (after the PSA module) included
    blocks = [
        m for m in model.backbone.modules() if type(m).__name__ == 'EPSABlock'
    ]
    assert len(blocks) == 16
    for block in blocks:
        assert type(block.conv2).__name__ == 'PSAModule'
        for norm in (block.norm1, block.norm2, block.norm3):
            assert type(norm) is nn.GroupNorm
    assert type(model.backbone.norm1) is nn.GroupNorm  # the stem's
    # nothing frozen
    assert all(p.requires_grad for p in model.parameters())


def test_backbone_initialises_without_a_checkpoint():
    """init_weights needs no file; with zero_init_residual=False (mmdet's
    scratch setting) every GN starts as the identity, norm3 included."""
    cfg = load(MASK)
    assert load(FASTER).model.backbone == cfg.model.backbone
    torch.manual_seed(0)
    backbone = build(cfg.model.backbone)
    backbone.init_weights()
    norms = norms_of(backbone)
    assert len(norms) == EPSANET50_NORMS
    for name, norm in norms.items():
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)), name
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias)), name
    # Kaiming-initialised convs, not zeros or a loaded checkpoint
    assert backbone.layer1[0].conv2.conv_1.weight.std() > 0
    backbone.train()
    assert all(norm.training for norm in norms.values())


# --------------------------------------------------------------- training
# (the demo_data and keep_determinism fixtures: conftest.py)


def momentum_of(optimizer, param):
    return optimizer.state[param].get('momentum_buffer')


def weight_decay_of(optimizer, param) -> float:
    for group in optimizer.param_groups:
        if any(p is param for p in group['params']):
            return group['weight_decay']
    raise AssertionError('parameter not in the optimizer')


def test_mask_rcnn_trains_and_tests_from_scratch(demo_data, tmp_path,
                                                 keep_determinism):
    cfg = on_demo_data(load(MASK), demo_data, str(tmp_path / 'work'))
    runner, losses = train_two_iterations(cfg)  # every loss finite
    for key in ('loss', 'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert key in losses, losses

    model, optimizer = runner.model, runner.optim_wrapper.optimizer
    norms = norms_of(model)
    assert all(type(n) is nn.GroupNorm for n in norms.values())
    # Every GN of the backbone (each block's norm2, after the PSA module,
    # included), the neck and the heads got gradients and an SGD step
    # (momentum buffers are non-zero), and, as mmdet's recipe says
    # (norm_decay_mult=0), no weight decay.
    for name, norm in norms.items():
        for param in (norm.weight, norm.bias):
            buffer = momentum_of(optimizer, param)
            assert buffer is not None and buffer.abs().sum() > 0, name
            assert weight_decay_of(optimizer, param) == 0, name
    blocks = [
        m for m in model.backbone.modules() if type(m).__name__ == 'EPSABlock'
    ]
    assert len(blocks) == 16
    for block in blocks:  # the same, by the blocks' own names
        assert type(block.norm2) is nn.GroupNorm
        assert momentum_of(optimizer, block.norm2.weight).abs().sum() > 0
    conv = model.backbone.layer1[0].conv2.conv_4.weight  # a PSA conv
    assert momentum_of(optimizer, conv).abs().sum() > 0
    assert weight_decay_of(optimizer, conv) == pytest.approx(1e-4)

    metrics = runner.test()
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert key in metrics, metrics


# ----------------------------------------------------------------- SyncBN

SYNC_BN = dict(type='SyncBN', requires_grad=True)


@pytest.mark.parametrize('config', [FASTER, MASK])
def test_syncbn_scratch_config_builds(config, tmp_path):
    cfg = syncbn_config(config, tmp_path)
    for part in (cfg.model.backbone, cfg.model.neck,
                 cfg.model.roi_head.bbox_head):
        assert part.norm_cfg == SYNC_BN
    with torch.device('meta'):
        model = build(cfg.model)
    norms = norms_of(model)
    assert len(norms_of(model.backbone)) == EPSANET50_NORMS
    # mmcv's 'SyncBN': mmengine's subclass of torch's SyncBatchNorm
    kinds = {type(n) for n in norms.values()}
    assert len(kinds) == 1 and issubclass(kinds.pop(), nn.SyncBatchNorm)


def test_syncbn_on_cpu_one_process_is_batchnorm():
    """What a SyncBN layer does where no process group is initialised (one
    process, CPU): torch computes plain batch norm; mmengine's
    revert_sync_batchnorm swaps it for its BatchNormXd with the same
    parameters and results."""
    assert not torch.distributed.is_initialized()
    _, sync = build_norm_layer(SYNC_BN, 8)
    assert isinstance(sync, nn.SyncBatchNorm)
    torch.manual_seed(0)
    with torch.no_grad():
        sync.weight.uniform_(0.5, 1.5)
        sync.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, 8, 5, 5)
    plain = revert_sync_batchnorm(copy.deepcopy(sync)).train()
    assert type(plain) is _BatchNormXd
    out = sync.train()(x)
    torch.testing.assert_close(plain(x), out)
    torch.testing.assert_close(
        out,
        nn.functional.batch_norm(
            x, None, None, sync.weight, sync.bias, training=True))
    torch.testing.assert_close(plain.running_mean, sync.running_mean)


def test_syncbn_on_cpu_under_a_process_group_raises(tmp_path):
    """Under a distributed launch mmengine does not revert SyncBN, and
    torch's SyncBN then takes GPU tensors only, even with one process: why
    the README says to keep GN for distributed CPU runs."""
    import torch.distributed as dist
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip('torch.distributed with gloo is not available')
    assert not dist.is_initialized()
    _, sync = build_norm_layer(SYNC_BN, 8)
    x = torch.randn(4, 8, 5, 5)
    dist.init_process_group(
        'gloo',
        init_method=f'file://{tmp_path / "store"}',
        rank=0,
        world_size=1)
    try:
        with pytest.raises(ValueError, match='tensor to be on GPU'):
            sync.train()(x)
    finally:
        dist.destroy_process_group()
    sync(x)  # no process group again: plain batch norm


def test_syncbn_scratch_config_trains_in_one_process(demo_data, tmp_path,
                                                     keep_determinism):
    """mmengine's Runner, not distributed (as tools/train.py without a
    launcher), reverts every SyncBN to BN (``wrap_model`` calls
    ``revert_sync_batchnorm``); the detector then trains, its BN layers in
    train mode (``norm_eval=False``) updating their statistics."""
    from mmengine.runner import Runner
    cfg = on_demo_data(
        syncbn_config(FASTER, tmp_path), demo_data, str(tmp_path / 'work'))
    runner = Runner.from_cfg(cfg)
    assert not runner.distributed
    norms = norms_of(runner.model)
    assert len(norms_of(runner.model.backbone)) == EPSANET50_NORMS
    kinds = {type(n) for n in norms.values()}
    assert kinds == {_BatchNormXd}, kinds
    assert not any(
        isinstance(m, nn.SyncBatchNorm) for m in runner.model.modules())

    runner.train()
    assert runner.iter == 2
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    for name, norm in norms_of(runner.model).items():
        assert norm.num_batches_tracked.item() == 2, name
        assert norm.running_var.ne(1).any(), name
