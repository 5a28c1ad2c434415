# Copyright (c) mmepsa contributors. All rights reserved.
"""The exported graph against mmdet's own ``test_step`` over a grid of
``test_cfg`` values, on a batch of two images of different sizes: the
graph re-writes mmdet's candidate selection and NMS, so a rule of mmdet's
that changes fails here."""
import numpy as np
import pytest
import torch

from mmepsa.deployment import OnnxDetector, export_onnx, load_detector

# (model, test_cfg overrides): each value away from the configs' defaults.
GRID = [
    ('retinanet',
     dict(
         nms_pre=40,
         score_thr=0.3,
         min_bbox_size=4,
         max_per_img=7,
         nms=dict(type='nms', iou_threshold=0.3))),
    ('retinanet',
     dict(
         nms_pre=1000,
         score_thr=0.0,
         min_bbox_size=-1,
         max_per_img=300,
         nms=dict(type='nms', iou_threshold=0.8, class_agnostic=True))),
    ('faster-rcnn',
     dict(
         rpn=dict(
             nms_pre=30,
             max_per_img=12,
             min_bbox_size=6,
             nms=dict(type='nms', iou_threshold=0.5)),
         rcnn=dict(
             score_thr=0.2,
             max_per_img=4,
             nms=dict(type='nms', iou_threshold=0.3)))),
    ('faster-rcnn',
     dict(
         rpn=dict(
             nms_pre=400,
             max_per_img=300,
             min_bbox_size=-1,
             nms=dict(type='nms', iou_threshold=0.8)),
         rcnn=dict(
             score_thr=0.0,
             max_per_img=-1,
             nms=dict(type='nms', iou_threshold=0.6, class_agnostic=True)))),
]

SIZES = ((80, 72), (56, 96))


def mmdet_batch(detector, images):
    """mmdet's ``test_step`` on a batch of uint8 ``(H, W, 3)`` images
    (no resize: ``img_shape`` is each image's own)."""
    from mmdet.structures import DetDataSample
    samples = [
        DetDataSample(
            metainfo=dict(
                img_shape=img.shape[:2],
                ori_shape=img.shape[:2],
                scale_factor=(1.0, 1.0))) for img in images
    ]
    data = dict(
        inputs=[torch.from_numpy(img.transpose(2, 0, 1)) for img in images],
        data_samples=samples)
    with torch.no_grad():
        return [out.pred_instances for out in detector.test_step(data)]


def canonical(bboxes, scores, labels):
    """Detections in one order: by score, then label and box (boxes at the
    image border can share a score exactly, and come out in either
    order)."""
    order = np.lexsort((*bboxes.T[::-1], labels, -np.round(scores, 4)))
    return bboxes[order], scores[order], labels[order]


def assert_same(result, ref):
    assert len(result['bboxes']) == len(ref)
    ours = canonical(result['bboxes'], result['scores'], result['labels'])
    theirs = canonical(ref.bboxes.numpy(), ref.scores.numpy(),
                       ref.labels.numpy())
    np.testing.assert_allclose(ours[0], theirs[0], atol=1e-3)
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-5)
    np.testing.assert_array_equal(ours[2], theirs[2])


@pytest.mark.parametrize('name, test_cfg', GRID)
def test_graph_equals_mmdet_over_test_cfg_grid(tiny_exports, tmp_path, name,
                                               test_cfg):
    paths = tiny_exports[name]
    options = {'model.test_cfg': test_cfg}
    out = str(tmp_path / 'grid.onnx')
    export_onnx(
        paths['config'],
        paths['checkpoint'],
        out,
        cfg_options=options,
        shape=(64, 64),
        verify=False)
    detector, _ = load_detector(paths['config'], paths['checkpoint'], options)
    rng = np.random.RandomState(0)
    images = [
        rng.randint(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES
    ]
    refs = mmdet_batch(detector, images)
    assert sum(len(ref) for ref in refs) > 0
    model = OnnxDetector(out, threads=1)
    batch = np.zeros((2, 3, 80, 96), np.float32)
    for i, img in enumerate(images):
        batch[i, :, :img.shape[0], :img.shape[1]] = img.transpose(2, 0, 1)
    raw = model.infer(batch, np.array(SIZES, dtype=np.int64))
    for i, (img, ref) in enumerate(zip(images, refs)):
        assert_same(model.postprocess(raw, (1.0, 1.0), img.shape[:2], i), ref)
