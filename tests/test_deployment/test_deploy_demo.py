# Copyright (c) mmepsa contributors. All rights reserved.
"""``make deploy-demo``'s verdicts and table (the runs behind it are the
evaluator's and the latency's, tested in test_evaluate.py)."""
import pytest

from mmepsa.deployment.demo import (BATCH_TOLERANCE, SPEED_BOUND, check_bounds,
                                    format_summary, parse_args,
                                    run_deploy_demo)

MACHINE = dict(
    cpu='AMD EPYC',
    cpu_count=2,
    isa_flags=['avx512f', 'avx512_bf16'],
    torch='2.14.1',
    mmcv='2.1.0',
    mmdet='3.3.0',
    threads=2,
    onnxruntime='1.32.0',
    openvino='2026.4.1',
    onnx='1.23.2',
    load_average=[0.1, 0.1, 0.1])


def metrics(value: float) -> dict:
    return {'coco/bbox_mAP': value, 'coco/bbox_mAP_50': value + 0.2}


def latency(ms: dict, pytorch_ms: float, batch: dict) -> dict:
    """compare_latency's result on 4 images, batch sizes 1 and 4: ``ms``
    and ``batch`` the per-image times (every round alike)."""
    batches = {}
    for size, times in (('1', ms), ('4', batch)):
        rows = {
            label: dict(median_ms=4 * t, per_image_ms=t)
            for label, t in times.items()
        }
        rows['pytorch'] = dict(
            median_ms=4 * pytorch_ms, per_image_ms=pytorch_ms)
        batches[size] = dict(
            rows=rows,
            vs_pytorch={
                label: dict(median=t / pytorch_ms, faster_in=5, rounds=5)
                for label, t in times.items()
            })
    batches['4']['vs_first_batch_size'] = {
        label: dict(median=batch[label] / t, faster_in=5, rounds=5)
        for label, t in ms.items()
    }
    return dict(
        shape=[4, 3, 800, 1216],
        model_rows=list(ms),
        batch_sizes=[1, 4],
        batches=batches,
        rows=batches['1']['rows'],
        vs_pytorch=batches['1']['vs_pytorch'])


def summary(int8_ok=True, int8_ms=900.0, bf16_ms=1300.0, batch_int8=850.0):
    rows, maps = {}, {'pytorch': metrics(0.4)}
    for label, ok in (('onnxruntime', True), ('openvino-bf16', True),
                      ('openvino-int8', int8_ok)):
        rows[label] = dict(
            ok=ok, differences=dict(bbox_mAP=0.0 if ok else -0.05))
        maps[label] = metrics(0.4 if ok else 0.35)
    ms = {
        'onnxruntime': 3500.0,
        'openvino-bf16': bf16_ms,
        'openvino-int8': int8_ms
    }
    batch = {
        'onnxruntime': 3250.0,
        'openvino-bf16': bf16_ms,
        'openvino-int8': batch_int8
    }
    model = dict(
        rows=rows,
        metrics=maps,
        skipped={},
        latency=latency(ms, 4000.0, batch))
    return dict(
        models={'mask-rcnn_epsanet50-s_fpn_demo-shapes': model},
        machine=MACHINE)


def test_bounds_met():
    bounds = check_bounds(summary())
    assert all(b['ok'] for b in bounds)
    speed = [b for b in bounds if 'fastest row' in b['bound']]
    assert len(speed) == 1 and speed[0]['detail'].startswith('openvino-int8')
    assert sum('batch 4' in b['bound'] for b in bounds) == 3


def test_only_rows_within_accuracy_count_for_speed():
    # int8 fast but not within its mAP bound: bf16 is the fastest row
    bounds = check_bounds(summary(int8_ok=False))
    speed = next(b for b in bounds if 'fastest row' in b['bound'])
    assert speed['detail'].startswith('openvino-bf16')
    assert speed['ok'] is (1300.0 / 4000.0 <= SPEED_BOUND)
    accuracy = [b for b in bounds if 'mAP within' in b['bound']]
    assert [b['ok'] for b in accuracy] == [True, True, False]


@pytest.mark.parametrize('int8_ms, bf16_ms', [(1500.0, 1600.0)])
def test_speed_bound_not_met(int8_ms, bf16_ms):
    bounds = check_bounds(summary(int8_ms=int8_ms, bf16_ms=bf16_ms))
    speed = next(b for b in bounds if 'fastest row' in b['bound'])
    assert not speed['ok'] and '0.375' in speed['detail']


@pytest.mark.parametrize('batch_int8, ok', [(1000.0, False), (918.0, True)])
def test_batch_dearer_per_image_is_not_met(batch_int8, ok):
    """The paired ratio to batch 1 decides, within BATCH_TOLERANCE."""
    bounds = check_bounds(summary(batch_int8=batch_int8))
    batch = next(b for b in bounds if 'openvino-int8: batch 4' in b['bound'])
    assert batch['ok'] is ok
    assert f'{batch_int8:.0f} ms against 900 ms, paired ratio ' \
        f'{batch_int8 / 900:.3f}' in batch['detail']
    assert batch_int8 / 900 - 1 > BATCH_TOLERANCE or ok


def test_table():
    result = summary(int8_ok=False)
    result['bounds'] = check_bounds(result)
    result['ok'] = all(b['ok'] for b in result['bounds'])
    result.update(static_shapes=True, streams=2)
    text = format_summary(result, 'work_dirs/deploy-demo')
    assert 'OpenVINO compiled for each input shape; batches split over 2 ' \
        'stream(s)' in text
    assert '| pytorch | 0.400 / 0.600 |' in text
    assert '| openvino-int8 | 0.350 / 0.550 |' in text
    assert '| ms per image, batch 1 of 800x1216 | ms per image, batch 4 ' \
        'of 800x1216 | / PyTorch |' in text
    assert '| 900 | 850 | 0.23 |' in text and '| 4000 | 4000 | 1.00 |' in text
    assert '[NOT MET]' in text
    assert 'AMD EPYC (2 cores; avx512f, avx512_bf16); 2 threads; torch ' \
        '2.14.1, mmcv 2.1.0, mmdet 3.3.0; load average 0.10; onnxruntime ' \
        '1.32.0, openvino 2026.4.1, onnx 1.23.2' in text
    assert 'all bounds met: False' in text
    lines = text.splitlines()
    header = lines.index('| row | bbox mAP / @0.5 | segm mAP / @0.5 | ms per '
                         'image, batch 1 of 800x1216 | ms per image, batch 4 '
                         'of 800x1216 | / PyTorch |')
    assert lines[header + 1] == '| --- | --- | --- | ---: | ---: | ---: |'


def test_table_without_latency():
    """--no-latency: the accuracy columns only, every row as wide."""
    result = summary()
    result['models']['mask-rcnn_epsanet50-s_fpn_demo-shapes']['latency'] = (
        None)
    result['bounds'] = check_bounds(result)
    result['ok'] = all(b['ok'] for b in result['bounds'])
    lines = format_summary(result, 'out').splitlines()
    header = lines.index('| row | bbox mAP / @0.5 | segm mAP / @0.5 |')
    assert lines[header + 1] == '| --- | --- | --- |'
    assert lines[header + 2] == '| pytorch | 0.400 / 0.600 |  |'
    assert not any('fastest row' in b['bound'] for b in result['bounds'])


def test_streams_default_to_one_per_thread_and_are_checked_first(tmp_path):
    assert parse_args([]).streams is None  # one per thread
    assert parse_args(['--streams', '1']).streams == 1
    out_dir = tmp_path / 'deploy-demo'
    with pytest.raises(ValueError, match=r'streams \(4\) must be at most '):
        run_deploy_demo(str(out_dir), threads=2, streams=4)
    assert not out_dir.exists()  # refused before any work
