# Copyright (c) mmepsa contributors. All rights reserved.
"""``make deploy-demo``'s verdicts and table (the runs behind it are the
evaluator's and the latency's, tested in test_evaluate.py)."""
import pytest

from mmepsa.deployment.demo import SPEED_BOUND, check_bounds, format_summary

MACHINE = dict(
    cpu='AMD EPYC',
    cpu_count=2,
    isa_flags=['avx512f', 'avx512_bf16'],
    torch='2.14.1',
    threads=2,
    onnxruntime='1.32.0',
    openvino='2026.4.1',
    onnx='1.23.2',
    load_average=[0.1, 0.1, 0.1])


def metrics(value: float) -> dict:
    return {'coco/bbox_mAP': value, 'coco/bbox_mAP_50': value + 0.2}


def latency(shape, ms: dict, pytorch_ms: float) -> dict:
    n = shape[0]
    rows = {
        label: dict(median_ms=t, per_image_ms=t / n)
        for label, t in ms.items()
    }
    rows['pytorch'] = dict(median_ms=pytorch_ms, per_image_ms=pytorch_ms / n)
    return dict(
        shape=list(shape),
        model_rows=list(ms),
        rows=rows,
        vs_pytorch={
            label: dict(median=t / pytorch_ms, faster_in=5, rounds=5)
            for label, t in ms.items()
        })


def summary(int8_ok=True, int8_ms=900.0, bf16_ms=1300.0, batch_int8=3400.0):
    rows = {}
    for label, ok in (('onnxruntime', True), ('openvino-bf16', True),
                      ('openvino-int8', int8_ok)):
        rows[label] = dict(
            ok=ok,
            differences=dict(bbox_mAP=0.0 if ok else -0.05),
            metrics={
                'pytorch': metrics(0.4),
                label: metrics(0.4 if ok else 0.35)
            })
    ms = {
        'onnxruntime': 3500.0,
        'openvino-bf16': bf16_ms,
        'openvino-int8': int8_ms
    }
    batch = {
        'onnxruntime': 13000.0,
        'openvino-bf16': 4 * bf16_ms,
        'openvino-int8': batch_int8
    }
    model = dict(
        rows=rows,
        skipped={},
        latency={
            '1x3x800x1216': latency((1, 3, 800, 1216), ms, 4000.0),
            '4x3x800x1216': latency((4, 3, 800, 1216), batch, 16000.0)
        })
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


def test_batch_dearer_per_image_is_not_met():
    bounds = check_bounds(summary(batch_int8=4000.0))
    batch = next(b for b in bounds if 'openvino-int8: batch 4' in b['bound'])
    assert not batch['ok'] and '1000 ms against 900 ms' in batch['detail']


def test_table():
    result = summary(int8_ok=False)
    result['bounds'] = check_bounds(result)
    result['ok'] = all(b['ok'] for b in result['bounds'])
    text = format_summary(result, 'work_dirs/deploy-demo')
    assert '| pytorch | 0.400 / 0.600 |' in text
    assert '| openvino-int8 | 0.350 / 0.550 |' in text
    assert '900 (900)' in text and '3400 (850)' in text
    assert '[NOT MET]' in text and 'AMD EPYC' in text
    assert 'all bounds met: False' in text
