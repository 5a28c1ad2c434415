# Copyright (c) mmepsa contributors. All rights reserved.
"""Checkpoints that cannot be loaded are named, with the reason: damaged
files, checkpoints of other models or formats; untrusted checkpoints are
refused and nothing in them runs. (The README's "Troubleshooting" section
lists the cases.)
"""
import logging
import os
import pathlib
import pickle
import re
import shutil

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

import mmepsa  # noqa: F401  (registers EPSANet, safe checkpoint loading)
from mmepsa.models import EPSANet
from tests.utils import PYTHON
from tests.utils import TINY_BACKBONE as TINY
from tests.utils import run, run_tool, tool_env


@pytest.fixture(scope='module')
def good_checkpoint(tmp_path_factory):
    model = EPSANet(50, **TINY)
    path = tmp_path_factory.mktemp('good') / 'epsanet.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def _damage(good: pathlib.Path, tmp: pathlib.Path, how: str) -> str:
    path = tmp / f'{how}.pth'
    if how == 'zip-truncated':
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == 'legacy-truncated':
        torch.save(
            torch.load(good),
            tmp / 'legacy.pth',
            _use_new_zipfile_serialization=False)
        data = (tmp / 'legacy.pth').read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == 'empty':
        path.write_bytes(b'')
    else:  # a web server's error page saved under the checkpoint's name
        path.write_text('<html><body>404 Not Found</body></html>\n')
    return str(path)


def _load_with(loader: str, path: str) -> None:
    if loader == 'load_checkpoint':
        load_checkpoint(EPSANet(50, **TINY), path)
    else:
        EPSANet(
            50, **TINY, init_cfg=dict(type='Pretrained',
                                      checkpoint=path)).init_weights()


@pytest.mark.parametrize('loader', ['load_checkpoint', 'init_cfg'])
@pytest.mark.parametrize('how,error,match', [
    ('zip-truncated', RuntimeError,
     r'cannot load checkpoint {}: RuntimeError: PytorchStreamReader failed '
     r'reading zip archive'),
    ('legacy-truncated', RuntimeError,
     r'cannot load checkpoint {}: RuntimeError: unexpected EOF'),
    ('empty', RuntimeError, r'cannot load checkpoint {}: EOFError: Ran out '
     r'of input \(the file is truncated, or not a PyTorch checkpoint\)'),
    ('html', pickle.UnpicklingError, r'refused to load checkpoint {}: '
     r'.*or it is damaged.*invalid load key'),
])
def test_damaged_checkpoint_names_the_file(good_checkpoint, tmp_path, loader,
                                           how, error, match):
    path = _damage(good_checkpoint, tmp_path, how)
    with pytest.raises(error, match=f'(?s)^{match.format(re.escape(path))}'):
        _load_with(loader, path)


def test_missing_checkpoint_names_the_file(tmp_path):
    missing = str(tmp_path / 'epoch_12.pth')
    with pytest.raises(
            FileNotFoundError,
            match=f'^checkpoint {re.escape(missing)} not found'):
        load_checkpoint(EPSANet(50, **TINY), missing)


class _LogRecords(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def mmengine_log():
    """What mmengine logs through its current logger during the test (the
    ``logger='current'`` of ``init_cfg=dict(type='Pretrained')``)."""
    handler = _LogRecords()
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


@pytest.fixture(scope='module')
def resnet_checkpoint(tmp_path_factory):
    """mmdet ResNet-50 weights (narrow, as TINY): same stem, downsample and
    1x1 conv names as EPSANet, a plain 3x3 ``conv2`` instead of the PSA."""
    from mmdet.models.backbones import ResNet
    with DefaultScope.overwrite_default_scope('mmdet'):
        resnet = ResNet(50, stem_channels=16, base_channels=16)
    path = tmp_path_factory.mktemp('resnet') / 'resnet50.pth'
    torch.save({'state_dict': resnet.state_dict()}, path)
    return str(path)


UNEXPECTED_RESNET = r'unexpected key in source state_dict: ' \
    r'layer1\.0\.conv2\.weight, layer1\.1\.conv2\.weight'
MISSING_PSA = r'missing keys in source state_dict: ' \
    r'layer1\.0\.conv2\.conv_1\.weight, layer1\.0\.conv2\.conv_2\.weight'


def test_other_architecture_lists_the_mismatched_keys(resnet_checkpoint,
                                                      capsys, mmengine_log):
    # load_checkpoint (no logger): printed
    load_checkpoint(EPSANet(50, **TINY), resnet_checkpoint)
    printed = capsys.readouterr().out
    assert re.search(UNEXPECTED_RESNET, printed)
    assert re.search(MISSING_PSA, printed)
    # init_cfg Pretrained: logged as a warning
    EPSANet(
        50,
        **TINY,
        init_cfg=dict(type='Pretrained',
                      checkpoint=resnet_checkpoint)).init_weights()
    logged = '\n'.join(mmengine_log)
    assert re.search(UNEXPECTED_RESNET, logged)
    assert re.search(MISSING_PSA, logged)


def test_other_architecture_strict_is_an_error(resnet_checkpoint):
    with pytest.raises(
            RuntimeError,
            match=rf'(?s)do not match exactly.*{UNEXPECTED_RESNET}'
            rf'.*{MISSING_PSA}'):
        load_checkpoint(EPSANet(50, **TINY), resnet_checkpoint, strict=True)


@pytest.fixture(scope='module')
def mmpretrain_checkpoint(tmp_path_factory):
    """An mmpretrain ImageClassifier checkpoint as its Runner saves it:
    ``backbone.``/``head.`` weights, meta, the message hub's HistoryBuffers
    (numpy arrays) and the optimizer state."""
    from mmpretrain.models import ImageClassifier
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        classifier = ImageClassifier(
            backbone=dict(type='EPSANet', depth=50, out_indices=(3, ), **TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(
                type='LinearClsHead',
                num_classes=4,
                in_channels=512,
                loss=dict(type='CrossEntropyLoss')))
    for p in classifier.parameters():
        nn.init.normal_(p)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1, momentum=0.9)
    hub = MessageHub('mmpretrain_checkpoint_test')
    hub.update_scalar('train/loss', 1.25)
    hub.update_info('epoch', 3)
    path = tmp_path_factory.mktemp('mmpretrain') / 'epsanet50_in1k.pth'
    torch.save(
        {
            'meta':
            dict(
                epoch=3,
                iter=300,
                seed=0,
                mmengine_version='0.10.7',
                dataset_meta=dict(classes=('a', 'b', 'c', 'd'))),
            'state_dict':
            classifier.state_dict(),
            'message_hub':
            hub.state_dict(),
            'optimizer':
            optimizer.state_dict(),
        }, path)
    return str(path), classifier.backbone.state_dict()


def test_mmpretrain_checkpoint_without_prefix_lists_missing_keys(
        mmpretrain_checkpoint, mmengine_log):
    """Without prefix='backbone.' no weight matches: every backbone key is
    reported missing (and the model keeps its initial weights)."""
    path, weights = mmpretrain_checkpoint
    model = EPSANet(
        50, **TINY, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    logged = '\n'.join(mmengine_log)
    assert re.search(
        r'missing keys in source state_dict: conv1\.weight, '
        r'bn1\.weight', logged), logged[-2000:]
    assert re.search(
        r'unexpected key in source state_dict: '
        r'backbone\.conv1\.weight', logged)
    assert not torch.equal(model.conv1.weight, weights['conv1.weight'])


def test_mmpretrain_checkpoint_with_prefix_loads(mmpretrain_checkpoint,
                                                 mmengine_log):
    path, weights = mmpretrain_checkpoint
    model = EPSANet(
        50,
        **TINY,
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    assert not any('missing keys' in m for m in mmengine_log)
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_original_epsanet_checkpoint_loads(tmp_path, mmengine_log, legacy):
    """The authors' training script saves ``{'epoch', 'arch', 'state_dict'
    (DataParallel's ``module.`` names and the classifier ``fc.*``),
    'best_acc1', 'optimizer'}``; old torch versions wrote the legacy
    format."""
    torch.manual_seed(0)
    source = EPSANet(50, **TINY)
    for p in source.parameters():
        nn.init.normal_(p)
    fc = nn.Linear(512, 1000)
    params = list(source.parameters()) + list(fc.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    sum(p.sum() for p in params).backward()
    optimizer.step()  # momentum buffers in the optimizer state
    state = dict(source.state_dict(),
                 **{f'fc.{k}': v
                    for k, v in fc.state_dict().items()})
    path = tmp_path / 'epsanet50_small.pth.tar'
    torch.save(
        {
            'epoch': 120,
            'arch': 'epsanet50',
            'state_dict': {f'module.{k}': v
                           for k, v in state.items()},
            'best_acc1': torch.tensor(77.49),
            'optimizer': optimizer.state_dict(),
        },
        path,
        _use_new_zipfile_serialization=not legacy)
    model = EPSANet(
        50, **TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    logged = '\n'.join(mmengine_log)
    assert 'missing keys' not in logged
    assert re.search(
        r'unexpected key in source state_dict: fc\.weight, '
        r'fc\.bias', logged)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


# --------------------------------------------------------------------------
# 5. Untrusted checkpoints: refused, and nothing in them runs


class _CreateFile:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


def _crafted(path: pathlib.Path,
             marker: pathlib.Path,
             legacy: bool = False) -> str:
    """A checkpoint that looks like a resume checkpoint but whose pickle
    would create ``marker``."""
    weights = EPSANet(50, **TINY).state_dict()
    torch.save(
        {
            'meta': dict(epoch=1, iter=2),
            'state_dict': weights,
            'message_hub': {
                'payload': _CreateFile(marker)
            },
        },
        path,
        _use_new_zipfile_serialization=not legacy)
    return str(path)


REFUSED = r'refused to load checkpoint {}: it holds objects other than tensors'


@pytest.mark.parametrize('loader', ['load_checkpoint', 'init_cfg'])
@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_crafted_checkpoint_is_refused(tmp_path, loader, legacy):
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epsanet.pth', marker, legacy)
    with pytest.raises(
            pickle.UnpicklingError, match=REFUSED.format(re.escape(path))):
        _load_with(loader, path)
    assert not marker.exists()


def test_crafted_checkpoint_from_a_url_is_refused(tmp_path, monkeypatch,
                                                  good_checkpoint):
    """``http(s)://`` checkpoints: torch.hub's loader, which mmengine uses,
    defaults to weights_only=False; mmepsa's passes True. The files are put
    in torch.hub's cache beforehand, so nothing is downloaded."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    marker = tmp_path / 'pwned'
    _crafted(cache / 'evil.pth', marker)
    shutil.copy(good_checkpoint, cache / 'good.pth')

    url = 'https://example.invalid/models/evil.pth'
    with pytest.raises(
            pickle.UnpicklingError,
            match=REFUSED.format(
                re.escape(f'{url} (cached as {cache}/evil.pth)'))):
        _load_with('init_cfg', url)
    assert not marker.exists()
    model = EPSANet(50, **TINY)
    load_checkpoint(
        model, 'https://example.invalid/models/good.pth', strict=True)


def test_crafted_checkpoint_refused_whatever_the_environment(tmp_path):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns weights_only off wherever it
    is not passed explicitly, as mmengine's own loader does not; mmepsa's
    loader passes it."""
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epsanet.pth', marker)
    code = ('import mmepsa\n'
            'from mmengine.runner import load_checkpoint\n'
            'from mmepsa.models import EPSANet\n'
            f'load_checkpoint(EPSANet(50, **{TINY!r}), {path!r})\n')
    proc = run([PYTHON, '-c', code],
               env=tool_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1'),
               check=False)
    assert proc.returncode != 0
    assert re.search(REFUSED.format(re.escape(path)), proc.stdout), \
        proc.stdout[-3000:]
    assert not marker.exists()


def test_train_resume_refuses_crafted_checkpoint(tiny_project, tmp_path):
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epoch_1.pth', marker)
    proc = run_tool(
        'train.py',
        tiny_project['config'],
        '--work-dir',
        tmp_path / 'work_dir',
        '--resume',
        path,
        check=False)
    assert proc.returncode != 0
    assert re.search(REFUSED.format(re.escape(path)), proc.stdout), \
        proc.stdout[-3000:]
    assert not marker.exists()


def test_converter_refuses_crafted_checkpoint(tmp_path):
    """tools/model_converters/epsanet_to_mmdet.py loads its source through
    the same unpickler, environment variables or not; nothing written."""
    marker = tmp_path / 'pwned'
    path = _crafted(tmp_path / 'epsanet.pth', marker)
    dst = tmp_path / 'converted.pth'
    proc = run_tool(
        'model_converters/epsanet_to_mmdet.py',
        path,
        dst,
        env=tool_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1'),
        check=False)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert f'error: {path} could not be loaded by the safe loader' in \
        proc.stdout and 'posix.system is not allowed' in proc.stdout
    assert not marker.exists() and not dst.exists()
