# Copyright (c) mmepsa contributors. All rights reserved.
"""tools/analysis_tools/load_test.py: a short stream of generated images
(grey, colour, RGBA; extreme aspect ratios) through DetInferencer with the
demo Mask R-CNN config, run as users run it (a subprocess; the memory
figures are checked for their consistency, not their size)."""
import json
import os.path as osp
from pathlib import Path

import pytest

from tests.utils import REPO, once_per_session, run_tool

TOOL = 'analysis_tools/load_test.py'
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')
DEMO_CLASSES = ['circle', 'rectangle', 'triangle']
NUM, WARMUP, MAX_SIZE = 30, 20, 320


def load_test(*args):
    """tools/analysis_tools/load_test.py, stdout and stderr apart."""
    return run_tool(TOOL, *args, check=False, merge_stderr=False)


@pytest.fixture(scope='module')
def stream(tmp_path_factory):
    """30 images of 64-320 px, randomly initialised demo Mask R-CNN (run
    once per session, whichever xdist worker comes first)."""

    def make(tmp):
        img_dir, out_dir = osp.join(tmp, 'images'), osp.join(tmp, 'out')
        proc = load_test('--num-images', NUM, '--warmup', WARMUP, '--max-size',
                         MAX_SIZE, '--img-dir', img_dir, '--out-dir', out_dir)
        assert proc.returncode == 0, (
            proc.stdout[-3000:] + proc.stderr[-3000:])
        return dict(stdout=proc.stdout, img_dir=img_dir, out_dir=out_dir)

    run = once_per_session(tmp_path_factory, 'load_test_stream', make)
    img_dir, out_dir = Path(run['img_dir']), Path(run['out_dir'])
    with open(out_dir / 'load_test.json') as f:
        summary = json.load(f)
    return dict(
        stdout=run['stdout'],
        summary=summary,
        img_dir=img_dir,
        out_dir=out_dir)


def test_stream_summary(stream):
    s = stream['summary']
    assert s['failures'] == []
    assert s['num_images'] == NUM and len(s['images']) == NUM
    assert osp.samefile(osp.join(REPO, s['config']), DEMO_CONFIG)  # default
    assert s['checkpoint'] is None and 'randomly initialised' in s['note']
    assert s['machine']['cpu'] and s['machine']['threads'] >= 1
    assert s['machine']['torch'] and s['machine']['mmcv']
    assert s['wall_seconds'] > 0
    assert s['images_per_second'] == pytest.approx(
        NUM / s['wall_seconds'], rel=0.01)
    assert [m['image'] for m in s['memory']] == [1, WARMUP, NUM]
    for m in s['memory']:
        assert 0 < m['rss_mib'] <= m['peak_rss_mib']
    assert all(r['detections'] >= 0 and r['seconds'] > 0 for r in s['images'])
    # sizes within the bounds, both orientations present
    assert all(64 <= r[k] <= MAX_SIZE for r in s['images']
               for k in ('width', 'height'))
    assert any(r['width'] > r['height'] for r in s['images'])
    assert any(r['width'] < r['height'] for r in s['images'])
    # the markdown summary, printed and written
    md = (stream['out_dir'] / 'load_test.md').read_text()
    assert md in stream['stdout']
    assert 'images/s' in md and f'RSS after image 1 / {WARMUP} / {NUM}' in md


def test_grey_and_rgba_files_load_as_3_channels(stream):
    import cv2
    s = stream['summary']
    assert all(n > 0 for n in s['kinds'].values()), s['kinds']
    by_channels = {1: 0, 3: 0, 4: 0}
    for r in s['images']:
        # the file itself, read back independently of the tool
        on_disk = cv2.imread(
            str(stream['img_dir'] / r['file']), cv2.IMREAD_UNCHANGED)
        channels = 1 if on_disk.ndim == 2 else on_disk.shape[2]
        assert channels == r['file_channels'] == (1 if r['kind'].startswith(
            'gray') else 4 if r['kind'].startswith('rgba') else 3), r
        by_channels[channels] += 1
        # what the inferencer's pipeline loaded
        assert r['loaded_shape'] == [r['height'], r['width'], 3], r
    assert by_channels[1] == s['grey_files'] >= 8  # 2 grey kinds x 4 corners
    assert by_channels[4] >= 4
    assert s['grey_loaded_as_3_channels'] == s['grey_files']


def test_memory_growth_is_computed(stream):
    s = stream['summary']
    mem = {m['image']: m for m in s['memory']}
    ref, last = mem[WARMUP], mem[NUM]
    assert s['rss_growth'] == pytest.approx(
        last['rss_mib'] / ref['rss_mib'] - 1, abs=1e-3)
    assert s['peak_rss_growth'] == pytest.approx(
        last['peak_rss_mib'] / ref['peak_rss_mib'] - 1, abs=1e-3)
    assert s['peak_rss_growth'] >= 0  # VmHWM never goes down
    assert s['max_growth'] == 0.10
    assert s['growth_ok'] == (
        max(s['rss_growth'], s['peak_rss_growth']) <= s['max_growth'])
    assert isinstance(s['rss_slope_mib_per_100_images'], float)


def test_checks_can_fail(tmp_path):
    """With a checkpoint; a grey loader (the model then gets 1 channel) makes
    every image fail, and a negative limit fails the memory check."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import mmepsa  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    ckpt = tmp_path / 'demo.pth'
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dict(classes=tuple(DEMO_CLASSES)))), ckpt)
    out_dir = tmp_path / 'out'
    proc = load_test(
        '--checkpoint', ckpt, '--num-images', 4, '--warmup', 2, '--max-size',
        96, '--max-growth', -1, '--out-dir', out_dir, '--cfg-options',
        'test_dataloader.dataset.pipeline.0.color_type=grayscale')
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'error: 4 of 4 images failed' in proc.stderr
    assert 'error: memory grew by more than -100.0 %' in proc.stderr
    with open(out_dir / 'load_test.json') as f:
        s = json.load(f)
    assert s['checkpoint'] == str(ckpt) and s['note'] is None
    assert s['classes'] == DEMO_CLASSES
    assert [f['index'] for f in s['failures']] == [1, 2, 3, 4]
    # the loader gave 2-D grey images, which the model cannot take
    assert [r['loaded_shape'] for r in s['images']
            ] == [[r['height'], r['width']] for r in s['images']]
    assert s['grey_loaded_as_3_channels'] == 0
    assert s['growth_ok'] is False


@pytest.mark.parametrize('argv,match', [
    (['missing_config.py'], 'config file not found: missing_config.py'),
    (['--checkpoint', 'missing.pth'
      ], 'checkpoint file not found: missing.pth'),
])
def test_missing_files(argv, match):
    proc = load_test(*argv)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f'error: {match}'
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('argv,match', [
    (['--num-images', '30'], '--warmup must be >= 1 and less than'),
    (['--num-images', '1'], '--num-images must be >= 2'),
    (['--min-size', '500', '--max-size', '100'], 'need 1 <= --min-size'),
])
def test_bad_options(argv, match):
    proc = load_test(*argv)
    assert proc.returncode == 2
    assert match in proc.stderr
