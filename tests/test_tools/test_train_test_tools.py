# Copyright (c) mmepsa contributors. All rights reserved.
"""The command-line tools, run as users run them (subprocesses), on a tiny
RetinaNet with a narrow EPSANet and a synthetic 4-image COCO set."""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import mmepsa  # noqa: F401  (torch.load allow-list for mmengine checkpoints)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
PYTHON = sys.executable

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
        base_channels=16,
        stem_channels=16,
        se_ratio=4,
        conv_groups=(1, 2, 4, 4),
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
        for cat, (bx, by, bw, bh) in ((1, (x, y, s, s)),
                                      (2, (cx - r, cy - r, 2 * r, 2 * r))):
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i,
                    category_id=cat,
                    bbox=[bx, by, bw, bh],
                    area=bw * bh,
                    iscrowd=0))
    categories = [
        dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)
    ]
    with open(osp.join(root, 'annotations.json'), 'w') as f:
        json.dump(
            dict(
                images=images,
                annotations=annotations,
                categories=categories), f)


def make_tiny_project(tmp: str) -> str:
    """Write the synthetic data set and the tiny config; return its path."""
    data_root = osp.join(tmp, 'data') + '/'
    make_tiny_dataset(data_root)
    config = osp.join(tmp, 'retinanet_epsanet_tiny.py')
    with open(config, 'w') as f:
        f.write(TINY_CONFIG.format(data_root=data_root, classes=CLASSES))
    return config


def tool_env() -> dict:
    """The environment of a tool subprocess: quiet, single-threaded."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONWARNINGS='ignore',
        MPLBACKEND='Agg')
    # A GPU is not needed, and CPU runs must not pick one up.
    env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def run_tool(args, cwd=None, timeout=300, check=True):
    proc = subprocess.run(
        args,
        cwd=cwd or REPO,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, args))} exited with '
                    f'{proc.returncode}:\n{proc.stdout[-6000:]}')
    return proc


def load_tool(relpath: str):
    """A tool script as a module, to call its ``main(argv)`` in-process
    (cheaper than a subprocess for the tools that train nothing)."""
    import importlib.util
    path = osp.join(TOOLS, relpath)
    name = 'tool_' + osp.splitext(relpath)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """The tiny config, trained once for 1 epoch (2 iterations)."""
    tmp = str(tmp_path_factory.mktemp('tiny'))
    config = make_tiny_project(tmp)
    work_dir = osp.join(tmp, 'work_dir')
    run_tool([PYTHON, osp.join(TOOLS, 'train.py'), config, '--work-dir',
              work_dir])
    return dict(tmp=tmp, config=config, work_dir=work_dir)


def test_train_writes_checkpoint(tiny):
    work_dir = tiny['work_dir']
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_1.pth')
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    assert any(k.startswith('backbone.layer1.0.conv2.conv_4')
               for k in ckpt['state_dict'])


def test_train_resume_auto(tiny, tmp_path):
    # Copy the finished run, then ask for 2 epochs with a bare --resume: it
    # must continue from epoch_1.pth (iteration 2), not start over.
    work_dir = str(tmp_path / 'resumed')
    shutil.copytree(tiny['work_dir'], work_dir)
    proc = run_tool([
        PYTHON,
        osp.join(TOOLS, 'train.py'), tiny['config'], '--work-dir', work_dir,
        '--resume', '--cfg-options', 'train_cfg.max_epochs=2'
    ])
    assert 'resumed epoch: 1, iter: 2' in proc.stdout, proc.stdout[-3000:]
    ckpt = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu')
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4


def test_mmdet_own_train_py_accepts_our_config(tiny, tmp_path):
    """mmdet's tools/train.py, as installed with mmdet, knows nothing of
    mmepsa: the config's custom_imports registers EPSANet."""
    import mmdet
    mmdet_train = osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    if not osp.isfile(mmdet_train):
        pytest.skip(f'mmdet ships no tools/train.py at {mmdet_train}')
    work_dir = str(tmp_path / 'mmdet_train')
    run_tool([PYTHON, mmdet_train, tiny['config'], '--work-dir', work_dir],
             cwd=str(tmp_path))
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'), map_location='cpu')
    assert 'backbone.layer2.0.conv2.se.fc1.weight' in ckpt['state_dict']


def test_train_missing_config(tmp_path):
    missing = str(tmp_path / 'no_such_config.py')
    proc = run_tool([PYTHON, osp.join(TOOLS, 'train.py'), missing],
                    check=False)
    assert proc.returncode != 0
    assert proc.stdout.strip() == f'error: config file not found: {missing}'
    assert 'Traceback' not in proc.stdout


def test_train_help_has_no_gpus_option():
    # mim adds --gpus/--device to the command only when -h mentions --gpus.
    proc = run_tool([PYTHON, osp.join(TOOLS, 'train.py'), '-h'])
    assert '--gpus' not in proc.stdout
    for option in ('--work-dir', '--amp', '--auto-scale-lr', '--resume',
                   '--cfg-options', '--launcher'):
        assert option in proc.stdout


def test_test_computes_map(tiny, tmp_path):
    out = str(tmp_path / 'results.pkl')
    proc = run_tool([
        PYTHON,
        osp.join(TOOLS, 'test.py'), tiny['config'],
        osp.join(tiny['work_dir'], 'epoch_1.pth'), '--work-dir',
        str(tmp_path / 'test'), '--out', out
    ])
    assert re.search(r'coco/bbox_mAP: -?\d', proc.stdout), \
        proc.stdout[-3000:]
    assert osp.isfile(out)


def test_get_flops_paper_figures(capsys):
    # The paper's EPSANet-50 (Small) ImageNet figures: 22.56 M, 3.62 GFLOPs
    # (one multiply-add counted as one FLOP, as mmengine's counter does).
    get_flops = load_tool('analysis_tools/get_flops.py')
    result = get_flops.main(
        ['--arch', 'epsanet50', '--mode', 'classifier', '--shape', '224'])
    out = capsys.readouterr().out
    assert 'FLOPs: 3.62 G' in out, out
    assert 'Params: 22.56 M' in out, out
    assert result['params'] == 22561715


def test_get_flops_detector_config(tiny, capsys):
    get_flops = load_tool('analysis_tools/get_flops.py')
    get_flops.main([tiny['config'], '--shape', '64'])
    out = capsys.readouterr().out
    assert re.search(r'FLOPs: \d+\.\d\d G', out), out
    assert 'Input shape: (1, 3, 64, 64)' in out


def test_benchmark(tiny, capsys):
    benchmark = load_tool('analysis_tools/benchmark.py')
    rows = benchmark.main([
        tiny['config'], '--shape', '64', '--device', 'cpu', '--warmup', '1',
        '--runs', '2'
    ])
    out = capsys.readouterr().out
    assert [r[0] for r in rows] == ['retinanet_epsanet_tiny'], out
    assert rows[0][2] > 0 and 'img/s' in out
    rows = benchmark.main(
        ['--arch', 'epsanet50', '--shape', '32', '--warmup', '0', '--runs',
         '1'])
    assert rows[0][0] == 'epsanet50 backbone'


def test_image_demo_writes_png(tiny, tmp_path):
    out_dir = str(tmp_path / 'demo')
    image = osp.join(tiny['tmp'], 'data', 'images', 'img_0.png')
    run_tool([
        PYTHON,
        osp.join(TOOLS, 'image_demo.py'), image, tiny['config'],
        osp.join(tiny['work_dir'], 'epoch_1.pth'), '--out-dir', out_dir,
        '--device', 'cpu', '--pred-score-thr', '0.0'
    ])
    png = osp.join(out_dir, 'vis', 'img_0.png')
    import cv2
    drawn = cv2.imread(png)
    assert drawn is not None and drawn.shape[:2] == (64, 64)
    assert osp.isfile(osp.join(out_dir, 'preds', 'img_0.json'))


def test_plot_curves(tmp_path):
    log = tmp_path / 'vis_data' / 'scalars.json'
    log.parent.mkdir()
    lines = [
        dict(lr=0.01, loss=2.0 - 0.1 * i, loss_cls=1.0, loss_bbox=1.0 - i / 20,
             epoch=1, iter=i, step=i) for i in range(1, 11)
    ] + [
        {'coco/bbox_mAP': 0.1 * e, 'coco/bbox_mAP_50': 0.2 * e, 'step': e}
        for e in (1, 2)
    ]
    log.write_text('\n'.join(json.dumps(x) for x in lines) + '\n')

    from mmepsa.visualization import load_scalars, plot_curves
    assert len(load_scalars(str(tmp_path))) == 12
    out = str(tmp_path / 'curves.png')
    result = plot_curves(str(log), out)
    assert result['keys'] == ['loss', 'loss_cls', 'loss_bbox',
                              'coco/bbox_mAP']
    assert open(out, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'

    # the CLI, on the work dir
    out_cli = str(tmp_path / 'cli.png')
    load_tool('analysis_tools/plot_curves.py').main(
        [str(tmp_path), '--out', out_cli, '--keys', 'loss', 'coco/bbox_mAP'])
    assert osp.isfile(out_cli)
    with pytest.raises(ValueError, match='none of the keys'):
        plot_curves(str(log), out, keys=['no_such_key'])


def test_plot_curves_of_real_run(tiny, tmp_path):
    from mmepsa.visualization import find_scalars_json, plot_curves
    log = find_scalars_json(tiny['work_dir'])
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
        dict(epoch=120, arch=f'epsanet{depth}', state_dict=state,
             best_acc1=torch.tensor(77.5)), path)
    return {k[len('module.'):]: v for k, v in state.items()
            if not k.startswith('module.fc.')}


def test_converter_round_trip(tmp_path, capsys):
    import mmepsa  # noqa: F401
    from mmepsa.models import EPSANet
    src = str(tmp_path / 'epsanet50.pth.tar')
    dst = str(tmp_path / 'out' / 'epsanet50_backbone.pth')
    expected = _fake_original_checkpoint(src)
    converter = load_tool('model_converters/epsanet_to_mmdet.py')
    converter.main([src, dst, '--depth', '50'])

    saved = torch.load(dst, map_location='cpu')
    assert set(saved) == {'state_dict', 'meta'}
    assert not any(k.startswith(('module.', 'fc.')) for k in saved[
        'state_dict'])

    model = EPSANet(
        depth=50, init_cfg=dict(type='Pretrained', checkpoint=dst))
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
                **{f'backbone.{k}': v for k, v in expected.items()},
                'head.fc.weight': torch.zeros(1000, 2048),
                'head.fc.bias': torch.zeros(1000)
            }), mmpre)
    dst2 = str(tmp_path / 'from_mmpretrain.pth')
    converter.main([mmpre, dst2, '--from-mmpretrain'])
    state2 = torch.load(dst2, map_location='cpu')['state_dict']
    assert set(state2) == set(expected)

    # wrong depth: keys listed, non-zero exit, nothing written
    dst3 = str(tmp_path / 'wrong.pth')
    with pytest.raises(SystemExit) as exit_info:
        converter.main([src, dst3, '--depth', '101'])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert 'missing keys' in err and 'layer3.22.conv2.conv_1.weight' in err
    assert not osp.exists(dst3)
