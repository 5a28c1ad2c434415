# Copyright (c) mmepsa contributors. All rights reserved.
"""Batches: the graph takes N images of different sizes stacked top-left
(as mmdet's data preprocessor stacks them) and returns each image's
detections; an image's detections in a batch equal its batch-1 run on the
same padded canvas."""
import numpy as np
import pytest

from mmepsa.deployment import ImageError, OnnxDetector

MODELS = ('retinanet', 'faster-rcnn', 'mask-rcnn')
SIZES = ((80, 60), (50, 120), (64, 64))


def images(seed: int = 0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES]


def assert_same(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    assert len(got['bboxes']) == len(want['bboxes'])
    np.testing.assert_allclose(got['bboxes'], want['bboxes'], atol=1e-3)
    np.testing.assert_allclose(got['scores'], want['scores'], atol=1e-5)
    np.testing.assert_array_equal(got['labels'], want['labels'])
    if 'masks' in want:
        assert (got['masks'] != want['masks']).mean() < 1e-3


@pytest.mark.parametrize('name', MODELS)
def test_batch_equals_single_runs(tiny_exports, name):
    model = OnnxDetector(tiny_exports[name]['onnx'], threads=1)
    imgs = images()
    batch, shapes, scales = model.stack(imgs)
    assert batch.shape[0] == 3 and len(set(map(tuple, shapes))) == 3
    results = model.detect(imgs)
    assert len(results) == 3 and sum(len(r['bboxes']) for r in results) > 0
    raw = model.infer(batch, shapes)
    assert set(raw['image_ids'].tolist()) <= {0, 1, 2}
    # grouped by image, highest score first within each
    assert (np.diff(raw['image_ids']) >= 0).all()
    for i, (img, result) in enumerate(zip(imgs, results)):
        single = model.infer(batch[i:i + 1], shapes[i:i + 1])
        assert (single['image_ids'] == 0).all()
        assert (np.diff(single['scores']) <= 0).all()
        want = model.postprocess(single, scales[i], img.shape[:2])
        assert_same(result, want)
        assert_same(model.postprocess(raw, scales[i], img.shape[:2], i), want)


def test_batch_of_one_size_equals_plain_calls(tiny_exports):
    model = OnnxDetector(tiny_exports['mask-rcnn']['onnx'], threads=1)
    imgs = [img[:50, :60] for img in images(1)]
    for img, result in zip(imgs, model.detect(imgs)):
        assert_same(result, model(img))


def test_batch_with_an_unreadable_image(tiny_exports, tmp_path):
    import cv2
    model = OnnxDetector(tiny_exports['retinanet']['onnx'], threads=1)
    good = str(tmp_path / 'good.png')
    cv2.imwrite(good, images()[0])
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    with pytest.raises(ImageError, match='bad.png'):
        model.detect([good, str(bad)])
    with pytest.raises(ImageError, match='image 1 of the batch has 4 '):
        model.detect([images()[0], np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match='at least one image'):
        model.detect([])


def assert_same_raw(got: dict, want: dict):
    """Two runs' raw outputs: the same detections of the same images."""
    assert sorted(got) == sorted(want)
    np.testing.assert_array_equal(got['image_ids'], want['image_ids'])
    np.testing.assert_array_equal(got['labels'], want['labels'])
    np.testing.assert_allclose(got['boxes'], want['boxes'], atol=1e-3)
    np.testing.assert_allclose(got['scores'], want['scores'], atol=1e-5)
    if 'masks' in want:
        np.testing.assert_allclose(got['masks'], want['masks'], atol=1e-4)


@pytest.mark.parametrize('name', ['retinanet', 'mask-rcnn'])
def test_batch_split_over_streams_equals_the_whole_batch(tiny_exports, name):
    """streams=2: the batch of 3 runs as parts of 2 and 1 images at once,
    each on its own stream with 1 of the 2 threads, and gives the whole
    batch's detections, ``image_ids`` counted on across the parts; one
    image runs whole. onnxruntime (a session per stream); OpenVINO on the
    RetinaNet (its fp32 equals onnxruntime: test_openvino.py), compiled for
    each part's shape with NUM_STREAMS, as make deploy-demo runs it."""
    onnx_file = tiny_exports[name]['onnx']
    whole = OnnxDetector(onnx_file, 2)
    split = OnnxDetector(onnx_file, 2, streams=2)
    assert split.backend.stream_threads == 1
    batch, shapes, _ = whole.stack(images())
    want = whole.infer(batch, shapes)
    assert set(want['image_ids'].tolist()) == {0, 1, 2}
    assert_same_raw(split.infer(batch, shapes), want)
    assert len(split.backend.stream_sessions) == 2
    assert_same(split(images()[0]), whole(images()[0]))
    if name != 'retinanet':
        return
    pytest.importorskip('openvino')
    model = OnnxDetector(
        onnx_file, 2, backend='openvino', static_shapes=True, streams=2)
    assert_same_raw(model.infer(batch, shapes), want)
    assert model.backend.compiled.get_property('NUM_STREAMS') == 2
    assert list(model.backend.compiled_requests) == [
        (True, (('img_shape', (n, 2)), ('input', (n, *batch.shape[1:]))))
        for n in (2, 1)
    ]


def test_streams_need_a_thread_each(tiny_exports):
    onnx_file = tiny_exports['retinanet']['onnx']
    with pytest.raises(
            ValueError,
            match=r'streams \(3\) must be at most '
            r'the threads \(2\)'):
        OnnxDetector(onnx_file, threads=2, streams=3)
    with pytest.raises(ValueError, match='streams must be >= 1, got 0'):
        OnnxDetector(onnx_file, threads=2, streams=0)
