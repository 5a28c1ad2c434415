# Copyright (c) mmepsa contributors. All rights reserved.
"""The evaluator (onnxruntime against PyTorch with the config's
CocoMetric), the detection matching, the latency comparison and the
tools that call them."""
import json
import os
import re

import pytest
import torch
from mmengine.structures import InstanceData

from mmepsa.analysis import benchmark
from mmepsa.analysis.benchmark import time_interleaved
from mmepsa.deployment import (DetectionAgreement, compare_latency,
                               evaluate_onnx, format_latency)
from mmepsa.deployment.evaluate import compare_metrics
from tests.utils import load_tool, run_tool


def instances(boxes, scores, labels):
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores),
        labels=torch.tensor(labels, dtype=torch.long))


def test_detection_agreement():
    ref = instances([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5]],
                    [0.9, 0.8, 0.2], [0, 1, 0])
    test = instances([[0, 0, 10, 11], [20, 20, 40, 40], [50, 50, 60, 60]],
                     [0.9, 0.7, 0.3], [0, 1, 1])
    agreement = DetectionAgreement()
    agreement.add(ref, test)
    agreement.add(instances([[0, 0, 1, 1]], [0.5], [2]), instances([], [], []))
    s = agreement.summary()
    assert (s['reference'], s['test'], s['matched']) == (4, 3, 2)
    assert s['unmatched'] == 3  # [0, 0, 5, 5], the lone test box, label 2
    assert s['max_unmatched_score'] == pytest.approx(0.5)
    assert s['min_iou'] == pytest.approx(100 / 110)
    assert s['iou_ge_0.99'] == 1
    assert s['max_score_diff'] == pytest.approx(0.1)


def test_compare_metrics_tolerance():
    ref = {'coco/bbox_mAP': 0.5, 'coco/bbox_mAP_50': 0.8}
    close = {'coco/bbox_mAP': 0.504, 'coco/bbox_mAP_50': 0.8}
    far = {'coco/bbox_mAP': 0.51, 'coco/bbox_mAP_50': 0.8}
    good = dict(min_iou=0.995)
    assert compare_metrics(dict(pytorch=ref, onnxruntime=close), good)['ok']
    assert not compare_metrics(dict(pytorch=ref, onnxruntime=far), good)['ok']
    assert not compare_metrics(
        dict(pytorch=ref, onnxruntime=ref), dict(min_iou=0.98))['ok']


@pytest.mark.parametrize('batch_size', [1, 3])
def test_evaluate_onnx_against_pytorch(tiny_exports, batch_size):
    # batches of 3 and 1 images of different sizes, PyTorch on the same
    paths = tiny_exports['retinanet']
    result = evaluate_onnx(
        paths['config'],
        paths['onnx'],
        paths['checkpoint'],
        threads=1,
        batch_size=batch_size)
    assert result['images'] == 4 and result['batch_size'] == batch_size
    ours, ref = result['metrics']['onnxruntime'], result['metrics']['pytorch']
    assert set(ours) == set(ref) and 'coco/bbox_mAP' in ours
    assert result['differences'] == dict(bbox_mAP=0.0, bbox_mAP_50=0.0)
    a = result['agreement']
    assert a['reference'] == a['test'] == a['matched'] == 80  # 20 x 4
    assert a['min_iou'] >= 0.999 and a['max_score_diff'] < 1e-5
    assert result['ok'] is True


def test_static_shapes_with_onnxruntime_only_refused(tiny_exports):
    """--static-shapes is OpenVINO's: asked of onnxruntime alone, the
    evaluator and the latency refuse it rather than ignore it."""
    paths = tiny_exports['retinanet']
    match = r'static_shapes \(--static-shapes\) is the openvino backend'
    with pytest.raises(ValueError, match=match):
        evaluate_onnx(paths['config'], paths['onnx'], static_shapes=True)
    with pytest.raises(ValueError, match=match):
        compare_latency(
            paths['config'],
            paths['checkpoint'],
            paths['onnx'], (1, 3, 64, 96),
            threads=1,
            static_shapes=True)


@pytest.mark.parametrize('batch, sizes', [(1, None), (2, (2, 1))])
def test_compare_latency(tiny_exports, batch, sizes, monkeypatch):
    """Every row on the same images; with batch sizes (2, 1), the two
    images in one batch and one by one, in turns, a row's sizes one after
    the other."""
    paths = tiny_exports['mask-rcnn']
    order = []

    def record(steps, *args):
        order.extend(steps)
        return time_interleaved(steps, *args)

    monkeypatch.setattr(benchmark, 'time_interleaved', record)
    result = compare_latency(
        paths['config'],
        paths['checkpoint'],
        paths['onnx'], (batch, 3, 64, 96),
        threads=1,
        warmup=0,
        runs=1,
        batch_sizes=sizes)
    rows = ['onnxruntime', 'pytorch', 'pytorch-export-wrapper']
    assert order == [(r, s) for r in rows for s in sizes or [batch]]
    assert result['batch_sizes'] == list(sizes or [batch])
    assert list(result['batches']) == [str(b) for b in sizes or [batch]]
    assert result['rows'] == result['batches'][str(batch)]['rows']
    for size, entry in result['batches'].items():
        assert list(entry['rows']) == rows
        counts = {row['detections'] for row in entry['rows'].values()}
        assert counts == {20 * batch}  # the same detections on every row
        for row in entry['rows'].values():
            assert row['per_image_ms'] == pytest.approx(row['median_ms'] /
                                                        batch)
        assert entry['vs_pytorch']['onnxruntime']['rounds'] == 1
        assert ('vs_first_batch_size' in entry) is (size != str(batch))
    if sizes:
        assert set(result['batches']['1']['vs_first_batch_size']) == set(rows)
    assert result['machine']['onnxruntime_threads'] == 1
    assert result['machine']['onnxruntime']
    table = format_latency(result)
    for size in result['batches']:
        assert f'| onnxruntime | {size} |' in table
    assert f'{batch}x3x64x96, 1 threads' in table
    with pytest.raises(
            ValueError,
            match='batch_sizes must be distinct '
            r'divisors of the 2 images, got \[3\]'):
        compare_latency(
            paths['config'],
            paths['checkpoint'],
            paths['onnx'], (2, 3, 64, 96),
            batch_sizes=(3, ))
    with pytest.raises(ValueError, match='rows must be some of'):
        compare_latency(
            paths['config'],
            paths['checkpoint'],
            paths['onnx'],
            rows=('tensorrt', ))
    with pytest.raises(ValueError, match=r'shape must be \(N, 3, H, W\)'):
        compare_latency(paths['config'], paths['checkpoint'], paths['onnx'],
                        (2, 1, 64, 64))


def test_latency_on_images(tiny_project, tmp_path):
    import cv2
    import numpy as np

    from mmepsa.deployment.latency import latency_inputs
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, np.full((20, 30, 3), 7, np.uint8))
    pixels = latency_inputs((3, 3, 40, 50), [path])
    assert pixels.shape == (3, 40, 50, 3) and (pixels == 7).all()
    assert latency_inputs((1, 3, 8, 8), seed=1).shape == (1, 8, 8, 3)


def test_pytorch2onnx_and_onnx_test_tools(tiny_exports, tmp_path):
    paths = tiny_exports['retinanet']
    out = tmp_path / 'retinanet.onnx'
    proc = run_tool('deployment/pytorch2onnx.py', paths['config'],
                    paths['checkpoint'], '--output-file', out, '--shape', '64')
    assert 'all in the default domain' in proc.stdout
    assert re.search(
        r'onnxruntime against PyTorch on a check batch of 2: (\d+) of \1 '
        'detections matched', proc.stdout)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's
    results = tmp_path / 'results.json'
    proc = run_tool('deployment/onnx_test.py', paths['config'], out,
                    '--checkpoint', paths['checkpoint'], '--out', results,
                    '--max-images', '2')
    assert 'within tolerance: True' in proc.stdout
    assert json.loads(results.read_text())['images'] == 2
    # --latency: two images one by one and as one batch (split over two
    # streams), in turns; OpenVINO compiled for each shape
    proc = run_tool('deployment/onnx_test.py', paths['config'], out,
                    '--checkpoint', paths['checkpoint'], '--latency',
                    '2x64x96', '--latency-batch-sizes', '1', '2', '--runs',
                    '1', '--warmup', '0', '--threads', '2', '--backend',
                    'openvino', '--static-shapes', '--streams', '2', '--out',
                    results)
    for size in (1, 2):
        for row in ('openvino', 'pytorch'):
            assert f'| {row} | {size} |' in proc.stdout
    latency = json.loads(results.read_text())
    assert latency['static_shapes'] is True and latency['streams'] == 2
    assert '2x3x64x96, 2 threads' in proc.stdout
    # an unsupported head: an error exit, the head named, nothing written
    bad = tmp_path / 'fcos.py'
    bad.write_text(f"_base_ = {paths['config']!r}\n"
                   'model = dict(bbox_head=dict(_delete_=True, '
                   "type='FCOSHead', num_classes=2, in_channels=16))\n")
    with pytest.raises(SystemExit) as exit_:  # in this process
        load_tool('deployment/pytorch2onnx.py').main([
            str(bad), paths['checkpoint'], '--output-file',
            str(tmp_path / 'fcos.onnx')
        ])
    assert ("pytorch2onnx: error: bbox_head type 'FCOSHead' is not "
            'supported') in str(exit_.value.code)
    assert not (tmp_path / 'fcos.onnx').exists()
