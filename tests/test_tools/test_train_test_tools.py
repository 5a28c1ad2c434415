# Copyright (c) mmepsa contributors. All rights reserved.
"""The command-line tools, run as users run them (subprocesses), on a tiny
RetinaNet with a narrow EPSANet and a synthetic 4-image COCO set."""
import json
import os.path as osp
import re
import shutil

import pytest
import torch

import mmepsa  # noqa: F401  (torch.load allow-list for mmengine checkpoints)
from tests.utils import PYTHON, run, run_tool


def test_train_writes_checkpoint(tiny_trained):
    work_dir = tiny_trained['work_dir']
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_1.pth')
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    assert any(
        k.startswith('backbone.layer1.0.conv2.conv_4')
        for k in ckpt['state_dict'])


def test_train_resume_auto(tiny_trained, tmp_path):
    # Copy the finished run, then ask for 2 epochs with a bare --resume: it
    # must continue from epoch_1.pth (iteration 2), not start over.
    work_dir = str(tmp_path / 'resumed')
    shutil.copytree(tiny_trained['work_dir'], work_dir)
    proc = run_tool('train.py', tiny_trained['config'], '--work-dir', work_dir,
                    '--resume', '--cfg-options', 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1, iter: 2' in proc.stdout, proc.stdout[-3000:]
    ckpt = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu')
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4


def test_mmdet_own_train_py_accepts_our_config(tiny_trained, tmp_path):
    """mmdet's tools/train.py, as installed with mmdet, knows nothing of
    mmepsa: the config's custom_imports registers EPSANet."""
    import mmdet
    mmdet_train = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(mmdet_train):
        pytest.skip(f'mmdet ships no tools/train.py at {mmdet_train}')
    work_dir = str(tmp_path / 'mmdet_train')
    run([PYTHON, mmdet_train, tiny_trained['config'], '--work-dir', work_dir],
        cwd=str(tmp_path))
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu')
    assert 'backbone.layer2.0.conv2.se.fc1.weight' in ckpt['state_dict']


def test_train_missing_config(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    proc = run_tool('train.py', missing, check=False)
    assert proc.returncode != 0
    assert proc.stdout.strip() == f'error: config file not found: {missing}'
    assert 'Traceback' not in proc.stdout


def test_train_help_has_no_gpus_option():
    # mim adds --gpus/--device to the command only when -h mentions --gpus.
    proc = run_tool('train.py', '-h')
    assert '--gpus' not in proc.stdout
    for option in ('--work-dir', '--amp', '--auto-scale-lr', '--resume',
                   '--cfg-options', '--launcher'):
        assert option in proc.stdout


def test_test_computes_map(tiny_trained, tmp_path):
    out = str(tmp_path / 'results.pkl')
    proc = run_tool('test.py', tiny_trained['config'],
                    osp.join(tiny_trained['work_dir'], 'epoch_1.pth'),
                    '--work-dir', tmp_path / 'test', '--out', out)
    assert re.search(r'coco/bbox_mAP: -?\d', proc.stdout), \
        proc.stdout[-3000:]
    assert osp.isfile(out)


def test_get_flops_paper_figures():
    # The paper's EPSANet-50 (Small) ImageNet figures: 22.56 M, 3.62 GFLOPs
    # (one multiply-add counted as one FLOP, as mmengine's counter does).
    out = run_tool('analysis_tools/get_flops.py', '--arch', 'epsanet50',
                   '--mode', 'classifier', '--shape', '224').stdout
    assert 'FLOPs: 3.62 G' in out, out
    assert 'Params: 22.56 M (22561715)' in out, out


def test_get_flops_detector_config(tiny_project):
    out = run_tool('analysis_tools/get_flops.py', tiny_project['config'],
                   '--shape', '64').stdout
    assert re.search(r'FLOPs: \d+\.\d\d G', out), out
    assert 'Input shape: (1, 3, 64, 64)' in out


def _benchmark_rows(out):
    """(model, input, batch, device, ms, img/s) rows of benchmark.py."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('---'))
    return [line.split() for line in lines[start + 1:] if line.strip()]


def test_benchmark(tiny_project):
    out = run_tool('analysis_tools/benchmark.py', tiny_project['config'],
                   '--shape', '64', '--device', 'cpu', '--warmup', '1',
                   '--runs', '2').stdout
    rows = _benchmark_rows(out)
    assert [r[0] for r in rows] == ['retinanet_epsanet_tiny'], out
    assert rows[0][1:4] == ['64x64', '1', 'cpu'] and float(rows[0][5]) > 0
    assert 'median of 2 runs after 1 warm-up runs' in out
    assert 'threads; torch ' in out and 'mmcv ' in out  # the machine
    out = run_tool('analysis_tools/benchmark.py', '--arch', 'epsanet50',
                   '--shape', '32', '--warmup', '0', '--runs', '1').stdout
    assert [r[:2] for r in _benchmark_rows(out)] == [['epsanet50',
                                                      'backbone']], out


@pytest.mark.parametrize('argv,message', [
    (['--shape', '1', '2', '3'], '--shape takes H or H W'),
    (['--runs', '0'], '--runs and --batch-size must be >= 1'),
    (['no_such_config.py'], 'error: config file not found: no_such_config'),
])
def test_benchmark_bad_arguments(argv, message):
    proc = run_tool('analysis_tools/benchmark.py', *argv, check=False)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout


def test_image_demo_writes_png(tiny_trained, tmp_path):
    out_dir = str(tmp_path / 'demo')
    image = osp.join(tiny_trained['tmp'], 'data', 'images', 'img_0.png')
    run_tool('image_demo.py', image, tiny_trained['config'],
             osp.join(tiny_trained['work_dir'], 'epoch_1.pth'), '--out-dir',
             out_dir, '--device', 'cpu', '--pred-score-thr', '0.0')
    png = osp.join(out_dir, 'vis', 'img_0.png')
    import cv2
    drawn = cv2.imread(png)
    assert drawn is not None and drawn.shape[:2] == (64, 64)
    assert osp.isfile(osp.join(out_dir, 'preds', 'img_0.json'))


def test_plot_curves(tmp_path):
    log = tmp_path / 'vis_data' / 'scalars.json'
    log.parent.mkdir()
    lines = [
        dict(
            lr=0.01,
            loss=2.0 - 0.1 * i,
            loss_cls=1.0,
            loss_bbox=1.0 - i / 20,
            epoch=1,
            iter=i,
            step=i) for i in range(1, 11)
    ] + [{
        'coco/bbox_mAP': 0.1 * e,
        'coco/bbox_mAP_50': 0.2 * e,
        'step': e
    } for e in (1, 2)]
    log.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')

    from mmepsa.visualization import load_scalars, plot_curves
    assert len(load_scalars(str(tmp_path))) == 12
    out = str(tmp_path / 'curves.png')
    result = plot_curves(str(log), out)
    assert result['keys'] == ['loss', 'loss_cls', 'loss_bbox', 'coco/bbox_mAP']
    assert open(out, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'

    # the CLI, on the work dir
    out_cli = str(tmp_path / 'cli.png')
    out = run_tool('analysis_tools/plot_curves.py', tmp_path, '--out', out_cli,
                   '--keys', 'loss', 'coco/bbox_mAP').stdout
    assert osp.isfile(out_cli)
    assert f'plotted loss, coco/bbox_mAP -> {out_cli}' in out
    with pytest.raises(ValueError, match='none of the keys'):
        plot_curves(str(log), out, keys=['no_such_key'])


def test_plot_curves_of_real_run(tiny_trained, tmp_path):
    from mmepsa.visualization import find_scalars_json, plot_curves
    log = find_scalars_json(tiny_trained['work_dir'])
    assert log.endswith('scalars.json')
    result = plot_curves(log, str(tmp_path / 'run.png'))
    assert 'loss' in result['keys']


def _fake_original_checkpoint(path: str, depth: int = 50):
    """A checkpoint in the authors' format from a random EPSANet."""
    from mmepsa.models import EPSANet
    torch.manual_seed(0)
    model = EPSANet(depth=depth)
    model.init_weights()
    state = {f'module.{k}': v.clone() for k, v in model.state_dict().items()}
    # random BN statistics, so that buffers are checked too
    for k, v in state.items():
        if k.endswith(('running_mean', 'running_var')):
            state[k] = torch.rand_like(v) + 0.5
    state['module.fc.weight'] = torch.randn(1000, 2048)
    state['module.fc.bias'] = torch.randn(1000)
    torch.save(
        dict(
            epoch=120,
            arch=f'epsanet{depth}',
            state_dict=state,
            best_acc1=torch.tensor(77.5)), path)
    return {
        k[len('module.'):]: v
        for k, v in state.items() if not k.startswith('module.fc.')
    }


def test_converter_round_trip(tmp_path):
    from mmepsa.models import EPSANet
    src = str(tmp_path / 'epsanet50.pth.tar')
    dst = str(tmp_path / 'out' / 'epsanet50_backbone.pth')
    expected = _fake_original_checkpoint(src)
    converter = 'model_converters/epsanet_to_mmdet.py'
    run_tool(converter, src, dst, '--depth', '50')

    saved = torch.load(dst, map_location='cpu')
    assert set(saved) == {'state_dict', 'meta'}
    assert not any(
        k.startswith(('module.', 'fc.')) for k in saved['state_dict'])

    model = EPSANet(depth=50, init_cfg=dict(type='Pretrained', checkpoint=dst))
    model.init_weights()
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k

    # mmpretrain format: backbone.* kept, head dropped
    mmpre = str(tmp_path / 'mmpretrain.pth')
    torch.save(
        dict(
            state_dict={
                **{f'backbone.{k}': v
                   for k, v in expected.items()}, 'head.fc.weight':
                torch.zeros(1000, 2048),
                'head.fc.bias': torch.zeros(1000)
            }), mmpre)
    dst2 = str(tmp_path / 'from_mmpretrain.pth')
    run_tool(converter, mmpre, dst2, '--from-mmpretrain')
    state2 = torch.load(dst2, map_location='cpu')['state_dict']
    assert set(state2) == set(expected)

    # wrong depth: keys listed, non-zero exit, nothing written
    dst3 = str(tmp_path / 'wrong.pth')
    proc = run_tool(converter, src, dst3, '--depth', '101', check=False)
    assert proc.returncode == 1
    err = proc.stdout
    assert 'missing keys' in err and 'layer3.22.conv2.conv_1.weight' in err
    assert not osp.exists(dst3)
