# Copyright (c) mmepsa contributors. All rights reserved.
"""EPSANet inside the OpenMMLab stack: registries, mmdet detectors built from
mmdet's own base configs, an mmpretrain training step, and mmengine
checkpoint save/resume under torch's safe ``weights_only`` loading."""
import os
import pickle
import re
import shutil

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmepsa  # noqa: F401  (registers EPSANet, allow-lists mmengine types)
from mmepsa.models import REGISTERED_IN, EPSANet
from tests.utils import PYTHON
from tests.utils import TINY_BACKBONE as TINY
from tests.utils import run


def test_registered_in_every_installed_codebase():
    from mmdet.registry import MODELS as DET
    from mmpretrain.registry import MODELS as PRETRAIN
    assert {'mmdet', 'mmpretrain'} <= set(REGISTERED_IN)
    for registry in (DET, PRETRAIN):
        model = registry.build(dict(type='EPSANet', depth=50, **TINY))
        assert isinstance(model, EPSANet)
    pytest.importorskip('mmseg', reason='mmsegmentation is not installed')
    from mmseg.registry import MODELS as SEG
    assert 'mmseg' in REGISTERED_IN
    assert isinstance(SEG.build(dict(type='EPSANet', **TINY)), EPSANet)


def test_mmseg_pretrained_argument(tmp_path):
    """mmseg's EncoderDecoder still passes ``pretrained=`` to backbones."""
    model = EPSANet(50, pretrained=str(tmp_path / 'x.pth'), **TINY)
    assert model.init_cfg == dict(
        type='Pretrained', checkpoint=str(tmp_path / 'x.pth'))


@pytest.mark.parametrize('base,with_mask', [('mask-rcnn_r50_fpn', True),
                                            ('retinanet_r50_fpn', False)])
def test_mmdet_detector_losses_and_predictions(tmp_path, base, with_mask):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    cfg_file = tmp_path / 'det.py'
    cfg_file.write_text(
        f"_base_ = 'mmdet::_base_/models/{base}.py'\n"
        "custom_imports = dict(imports=['mmepsa'], "
        'allow_failed_imports=False)\n'
        'model = dict(backbone=dict(_delete_=True, type="EPSANet", '
        'depth=50, frozen_stages=1, norm_eval=True),\n'
        '             neck=dict(in_channels=[256, 512, 1024, 2048]))\n')
    cfg = Config.fromfile(str(cfg_file))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model.backbone, EPSANet)
    packed = demo_mm_inputs(
        2, [[3, 128, 160], [3, 96, 128]], num_classes=80, with_mask=with_mask)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.layer4[0].conv2.conv_1.weight.grad is not None
    assert model.backbone.layer1[0].conv1.weight.grad is None  # frozen
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert len(results) == 2
    for res in results:
        assert res.pred_instances.bboxes.shape[-1] == 4
        if with_mask:
            assert 'masks' in res.pred_instances


def test_mmpretrain_classifier_trains_one_step():
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = _classifier()
    model.init_weights()
    model.train()
    optim = torch.optim.SGD(model.parameters(), lr=0.05)
    inputs = [
        torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(4)
    ]
    samples = [DataSample().set_gt_label(i % 4) for i in range(4)]
    before = model.backbone.conv1.weight.detach().clone()
    data = model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    optim.step()
    assert not torch.equal(before, model.backbone.conv1.weight)


def _classifier():
    from mmpretrain.models import ImageClassifier
    return ImageClassifier(
        backbone=dict(
            type='EPSANet',
            depth=50,
            out_indices=(3, ),
            norm_eval=False,
            **TINY),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=4,
            in_channels=512,
            loss=dict(type='CrossEntropyLoss')),
        data_preprocessor=dict(
            type='ClsDataPreprocessor',
            mean=[123.7, 116.3, 103.5],
            std=[58.4, 57.1, 57.4],
            to_rgb=True))


# --------------------------------------------------------------------------
# mmengine Runner: save + resume round trip, and untrusted checkpoints


class _ToyDataset(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(idx)
        return dict(
            inputs=torch.rand(3, 32, 32, generator=g),
            label=torch.tensor(idx % 2))


def _toy_model():
    from mmengine.model import BaseModel

    class ToyClassifier(BaseModel):

        def __init__(self):
            super().__init__()
            self.backbone = EPSANet(
                50, out_indices=(3, ), norm_eval=False, **TINY)
            self.head = nn.Linear(512, 2)

        def forward(self, inputs, label=None, mode='tensor'):
            logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
            if mode == 'loss':
                return dict(loss=nn.functional.cross_entropy(logits, label))
            return logits

    return ToyClassifier()


def _runner(work_dir, max_epochs, resume=False, load_from=None):
    from mmengine.runner import Runner
    return Runner(
        model=_toy_model(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4,
            num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        resume=resume,
        load_from=load_from,
        default_scope='mmengine')


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """The toy classifier trained once by mmengine's Runner for 1 epoch."""
    work_dir = tmp_path_factory.mktemp('toy_run')
    _runner(work_dir, max_epochs=1).train()
    return work_dir


def _copy_run(toy_run, tmp_path):
    """A copy of the toy run in ``tmp_path``, its ``last_checkpoint``
    pointing into the copy (for tests that resume or alter it)."""
    shutil.copytree(toy_run, tmp_path, dirs_exist_ok=True)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    return tmp_path


def test_runner_save_and_resume_round_trip(toy_run, tmp_path):
    _copy_run(toy_run, tmp_path)
    ckpt = tmp_path / 'epoch_1.pth'
    assert ckpt.exists()
    # the checkpoint holds what weights_only refuses by default
    assert 'message_hub' in torch.load(ckpt, map_location='cpu')
    saved = torch.load(ckpt, map_location='cpu')['state_dict']

    resumed = _runner(tmp_path, max_epochs=2, resume=True)
    resumed.train()
    assert resumed.epoch == 2 and resumed.iter == 4
    assert (tmp_path / 'epoch_2.pth').exists()
    hub = resumed.message_hub
    assert len(hub.get_scalar('train/loss').data[0]) >= 2
    # the run went on from the saved weights, not from scratch
    assert not torch.equal(saved['backbone.conv1.weight'],
                           resumed.model.state_dict()['backbone.conv1.weight'])


def test_mmengine_checkpoint_needs_the_allow_list(toy_run):
    """Without mmepsa's allow-list, torch's weights_only loader refuses the
    very checkpoint mmengine wrote (mmengine#1655; the default since torch
    2.6); mmepsa's loader reads it on every torch."""
    from mmepsa.utils.safe_pickle import torch_load
    assert 'message_hub' in torch_load(str(toy_run / 'epoch_1.pth'))
    code = ('import torch, sys\n'
            f'torch.load({str(toy_run / "epoch_1.pth")!r}, '
            'weights_only=True)\n')
    proc = run([PYTHON, '-c', code], check=False, merge_stderr=False)
    assert proc.returncode != 0
    assert 'weights_only' in proc.stderr.lower() or \
        'Weights only load failed' in proc.stderr


class _CreateFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


class _GetattrEscape:
    """A payload that reaches a non-statistics attribute through getattr."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def _save_raw(obj, path):
    # torch.save pickles arbitrary objects, as an attacker's file would.
    torch.save(obj, path)


def test_untrusted_checkpoint_is_refused(tmp_path):
    from mmengine.runner import load_checkpoint

    from mmepsa.utils.safe_pickle import torch_load
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    _save_raw({'state_dict': {'conv1.weight': _CreateFile(marker)}}, evil)
    model = EPSANet(50, **TINY)
    with pytest.raises(
            pickle.UnpicklingError,
            match=f'refused to load checkpoint {re.escape(str(evil))}'):
        load_checkpoint(model, str(evil))
    with pytest.raises(pickle.UnpicklingError):
        EPSANet(
            50, **TINY, init_cfg=dict(type='Pretrained',
                                      checkpoint=str(evil))).init_weights()
    assert not marker.exists()

    escape = tmp_path / 'escape.pth'
    _save_raw({'meta': _GetattrEscape()}, escape)
    with pytest.raises(
            pickle.UnpicklingError, match=r"refused getattr\(.*'__init__'\)"):
        torch_load(str(escape))
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4
        # torch's own loader, with the types import mmepsa added to its list
        with pytest.raises(
                pickle.UnpicklingError,
                match=r"refused getattr\(.*'__init__'\)"):
            torch.load(escape, weights_only=True)


def test_resume_refuses_untrusted_checkpoint(toy_run, tmp_path):
    marker = tmp_path / 'pwned'
    _copy_run(toy_run, tmp_path)
    ckpt = torch.load(tmp_path / 'epoch_1.pth')
    ckpt['meta']['payload'] = _CreateFile(marker)
    _save_raw(ckpt, tmp_path / 'epoch_1.pth')
    resumed = _runner(tmp_path, max_epochs=2, resume=True)
    with pytest.raises(pickle.UnpicklingError):
        resumed.train()
    assert not marker.exists()


def test_checkpoint_loads_in_a_fresh_process(toy_run):
    """A new process (as ``tools/test.py`` or ``--resume`` starts) has made
    no HistoryBuffer yet; ``import mmepsa`` alone must let it load."""
    code = ('import torch, mmepsa\n'
            f'ckpt = torch.load({str(toy_run / "epoch_1.pth")!r})\n'
            "print(ckpt['message_hub']['log_scalars']['train/loss'].mean())\n")
    proc = run([PYTHON, '-c', code], check=False, merge_stderr=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) > 0


@pytest.mark.parametrize('blocked', [('mmseg', ), ('mmseg', 'mmpretrain')])
def test_optional_codebases_may_be_missing(blocked):
    """Without mmsegmentation (or mmpretrain) installed, mmepsa imports and
    EPSANet is registered in the codebases that are there."""
    code = ('import sys\n'
            f'for name in {blocked!r}:\n'
            '    sys.modules[name] = None  # import of it raises ImportError\n'
            'import mmepsa\n'
            'from mmepsa.models import REGISTERED_IN\n'
            'from mmdet.registry import MODELS\n'
            "assert MODELS.get('EPSANet') is mmepsa.EPSANet\n"
            'print(sorted(REGISTERED_IN))\n')
    # a fresh interpreter: the warm launcher has mmpretrain imported
    proc = run([PYTHON, '-c', code],
               check=False,
               merge_stderr=False,
               fresh=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = sorted({'mmdet', 'mmpretrain', 'mmseg'} - set(blocked))
    assert proc.stdout.strip().splitlines()[-1] == repr(expected)
