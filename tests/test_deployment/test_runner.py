# Copyright (c) mmepsa contributors. All rights reserved.
"""The onnxruntime runner: image loading and its refusals, mmdet's resize
and mask pasting reproduced, and the image demo tool."""
import json

import cv2
import numpy as np
import pytest
import torch

from mmepsa.deployment import (ImageError, OnnxDetector, check_image,
                               draw_detections, load_image, paste_masks,
                               resize_image)
from tests.utils import load_tool, run_tool


@pytest.mark.parametrize('image, match', [
    (np.zeros((8, 8), np.uint8), r'1 channel\(s\) \(grayscale\)'),
    (np.zeros((8, 8, 4), np.uint8), r'4 channel\(s\) \(with alpha\)'),
    (np.zeros((8, 8, 2), np.uint8), r'2 channel\(s\); the detector takes '
     '3-channel'),
    (np.zeros((8, 8, 3), np.uint16), 'dtype uint16.*8-bit'),
])
def test_image_of_the_wrong_kind(tmp_path, image, match):
    with pytest.raises(ImageError, match=match):
        check_image(image)
    if image.shape[-1] != 2:  # PNG has no 2-channel colour type in OpenCV
        path = str(tmp_path / 'img.png')
        cv2.imwrite(path, image)
        with pytest.raises(ImageError, match=f'image {path} has'):
            load_image(path)


def test_unreadable_and_missing_images(tmp_path):
    path = tmp_path / 'notes.png'
    path.write_text('not an image')
    with pytest.raises(ImageError, match='cannot read image .*notes.png'):
        load_image(str(path))
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    with pytest.raises(ImageError, match='cannot read image'):
        load_image(str(empty))
    with pytest.raises(FileNotFoundError, match='image not found'):
        load_image(str(tmp_path / 'missing.png'))


def test_load_image_as_mmcv(tmp_path):
    import mmcv
    path = str(tmp_path / 'img.jpg')
    rng = np.random.RandomState(0)
    cv2.imwrite(path, rng.randint(0, 256, (20, 30, 3), dtype=np.uint8))
    np.testing.assert_array_equal(load_image(path), mmcv.imread(path))
    np.testing.assert_array_equal(
        load_image(path, 'rgb'), mmcv.imread(path, channel_order='rgb'))


@pytest.mark.parametrize('shape', [(50, 80), (123, 47), (64, 64)])
@pytest.mark.parametrize('keep_ratio', [True, False])
def test_resize_as_mmdet(shape, keep_ratio):
    from mmdet.datasets.transforms import Resize
    img = np.random.RandomState(0).randint(0, 256, (*shape, 3), np.uint8)
    ref = Resize(scale=(96, 64), keep_ratio=keep_ratio)(dict(img=img))
    out, scale_factor = resize_image(
        img, dict(scale=[96, 64], keep_ratio=keep_ratio))
    np.testing.assert_array_equal(out, ref['img'])
    assert scale_factor == pytest.approx(ref['scale_factor'])


def test_paste_masks_as_mmdet():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    rng = np.random.RandomState(0)
    probs = rng.rand(6, 28, 28).astype(np.float32)
    boxes = np.array([[3.2, 4.7, 40.1, 30.3], [0., 0., 64., 48.],
                      [-5., 10., 20., 60.], [50.5, 40.2, 51.0, 47.9],
                      [10., 10., 10., 20.], [30., 2., 90.7, 9.]], np.float32)
    h, w = 48, 64
    ours = paste_masks(probs, boxes, h, w, 0.5)
    for i in range(len(probs)):
        masks, region = _do_paste_mask(
            torch.from_numpy(probs[i:i + 1, None]),
            torch.from_numpy(boxes[i:i + 1]),
            h,
            w,
            skip_empty=True)
        ref = torch.zeros(h, w, dtype=torch.bool)
        ref[region] = masks[0] >= 0.5
        assert (ours[i] != ref.numpy()).mean() < 2e-3, i


def test_draw_detections():
    img = np.zeros((40, 40, 3), np.uint8)
    result = dict(
        bboxes=np.array([[5., 5., 30., 30.], [1., 1., 3., 3.]]),
        scores=np.array([0.9, 0.1]),
        labels=np.array([1, 0]),
        masks=np.zeros((2, 40, 40), bool))
    result['masks'][0, 10:20, 10:20] = True
    out = draw_detections(img, result, ('a', 'b'), score_thr=0.3)
    assert out.shape == img.shape and img.sum() == 0
    assert out[15, 15].sum() > 0  # the mask
    assert out[2, 2].sum() == 0  # the low-score box is not drawn


def test_model_without_metadata(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('Identity', ['input'], ['boxes'])], 'g',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, [1])])
    path = str(tmp_path / 'plain.onnx')
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ValueError, match="no 'mmepsa' metadata"):
        OnnxDetector(path)
    with pytest.raises(FileNotFoundError, match='ONNX model not found'):
        OnnxDetector(str(tmp_path / 'missing.onnx'))


def test_image_demo_tool(tiny_exports, tiny_project, tmp_path):
    images = f"{tiny_project['tmp']}/data/images"
    out = tmp_path / 'out'
    proc = run_tool('deployment/onnx_image_demo.py', f'{images}/img_0.png',
                    tiny_exports['mask-rcnn']['onnx'], '--out-dir', out,
                    '--score-thr', '0')
    assert 'img_0.png: 20 detections' in proc.stdout
    assert cv2.imread(str(out / 'vis' / 'img_0.png')).shape == (64, 64, 3)
    preds = json.loads((out / 'preds' / 'img_0.json').read_text())
    assert len(preds['bboxes']) == len(preds['classes']) == 20
    gray = tmp_path / 'gray.png'
    cv2.imwrite(str(gray), np.zeros((8, 8), np.uint8))
    # the error's exit in this process (the tool's start-up is tested above)
    with pytest.raises(SystemExit) as exit_:
        load_tool('deployment/onnx_image_demo.py').main(
            [str(gray), tiny_exports['mask-rcnn']['onnx']])
    assert 'onnx_image_demo: error: image' in str(exit_.value.code)
    assert 'has 1 channel(s) (grayscale)' in str(exit_.value.code)
