# Copyright (c) mmepsa contributors. All rights reserved.
"""Export of whole detectors to ONNX: onnxruntime's detections equal
mmdet's, the graph has standard ops only, and bad input fails before
anything is written."""
import os
import pickle

import numpy as np
import pytest
import torch

from mmepsa.deployment import (CheckpointMismatchError, DetectionAgreement,
                               OnnxDetector, UnsupportedModelError,
                               build_export_wrapper, check_supported,
                               export_onnx, load_detector, non_standard_ops)
from mmepsa.deployment.wrapper import GroupSumConv, export_forms
from tests.test_deployment.tiny_detectors import mmdet_reference

MODELS = ('retinanet', 'faster-rcnn', 'mask-rcnn')


@pytest.mark.parametrize('name', MODELS)
def test_onnxruntime_equals_mmdet(tiny_exports, name):
    from mmengine.structures import InstanceData
    paths = tiny_exports[name]
    model = OnnxDetector(paths['onnx'], threads=1)
    detector, _ = load_detector(paths['config'], paths['checkpoint'])
    rng = np.random.RandomState(0)
    # not the traced 96 x 96; the RetinaNet's Resize scales these by 0.8
    for h, w in ((80, 60), (50, 120)):
        img = rng.randint(0, 256, (h, w, 3), dtype=np.uint8)
        inputs, scale_factor = model.preprocess(img)
        result = model.postprocess(model.infer(inputs), scale_factor, (h, w))
        ref = mmdet_reference(detector, inputs, scale_factor, (h, w))
        assert len(ref) > 0
        assert len(result['bboxes']) == len(ref)
        np.testing.assert_allclose(
            result['bboxes'], ref.bboxes.numpy(), atol=1e-3)
        np.testing.assert_allclose(
            result['scores'], ref.scores.numpy(), atol=1e-5)
        np.testing.assert_array_equal(result['labels'], ref.labels.numpy())
        if name == 'mask-rcnn':
            assert result['masks'].shape == (len(ref), h, w)
            differ = (result['masks'] != ref.masks.numpy()).mean()
            assert differ < 1e-3
        else:
            assert 'masks' not in result
        agreement = DetectionAgreement()
        agreement.add(
            ref,
            InstanceData(**{k: torch.from_numpy(v)
                            for k, v in result.items()}))
        assert agreement.summary()['min_iou'] >= 0.999


@pytest.mark.parametrize('name', MODELS)
def test_graph_is_standard_onnx(tiny_exports, name):
    import onnx
    model = onnx.load(tiny_exports[name]['onnx'])
    assert non_standard_ops(model) == []
    ops = {n.op_type: n for n in model.graph.node}
    assert 'NonMaxSuppression' in ops
    if name != 'retinanet':
        align = ops['RoiAlign']
        mode = next(a.s for a in align.attribute
                    if a.name == 'coordinate_transformation_mode')
        assert mode == b'half_pixel'  # mmdet's aligned=True
    assert [i.name for i in model.graph.input] == ['input', 'img_shape']
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3
    assert [dims[i].dim_param
            for i in (0, 2, 3)] == ['batch', 'height', 'width']
    outputs = [o.name for o in model.graph.output]
    expected = ['image_ids', 'boxes', 'scores', 'labels']
    assert outputs == expected + (['masks'] if name == 'mask-rcnn' else [])
    # the tiny backbone's 4-channel branches of 4 groups: GroupSumConv's
    # depthwise conv and 1x1 sum (weights 1); no other conv with one output
    # channel per group
    weights = {i.name: i for i in model.graph.initializer}
    weights.update((n.output[0], n.attribute[0].t) for n in model.graph.node
                   if n.op_type == 'Constant')
    convs = []
    for node in model.graph.node:
        if node.op_type == 'Conv':
            group = next((a.i for a in node.attribute if a.name == 'group'), 1)
            weight = weights[node.input[1]]
            ones = list(weight.dims) == [
                4, 4, 1, 1
            ] and (onnx.numpy_helper.to_array(weight) == 1).all()
            convs.append((group, *weight.dims, bool(ones)))
    assert convs.count((16, 16, 1, 9, 9, False)) == 3  # layer1's conv_4
    assert convs.count((16, 16, 1, 7, 7, False)) == 3  # layer1's conv_3
    assert convs.count((4, 4, 4, 1, 1, True)) == 6  # their sums
    assert [c for c in convs
            if c[0] == c[1] > 1 and c[2] > 1] == [(4, 4, 4, 1, 1, True)] * 6


@pytest.mark.parametrize('stride, dilation, bias',
                         [(1, 1, False), (2, 1, True), (1, 2, False)])
def test_group_sum_conv_equals_conv(stride, dilation, bias):
    conv = torch.nn.Conv2d(
        12, 3, 5, stride, 2 * dilation, dilation, groups=3, bias=bias)
    x = torch.randn(2, 12, 17, 23)
    with torch.no_grad():
        torch.testing.assert_close(GroupSumConv(conv)(x), conv(x))


def test_export_forms_copy_the_detector(tiny_exports):
    detector, cfg = load_detector(tiny_exports['mask-rcnn']['config'],
                                  tiny_exports['mask-rcnn']['checkpoint'])
    psa = detector.backbone.layer1[0].conv2
    wrapper = build_export_wrapper(detector, cfg.model)
    assert type(psa.conv_4) is torch.nn.Conv2d  # the detector is unchanged
    copied = wrapper.detector.backbone.layer1[0].conv2
    assert copied.conv_4.conv.weight is psa.conv_4.weight  # shared
    assert copied.conv_2.weight is psa.conv_2.weight
    assert [
        type(c).__name__
        for c in (copied.conv_1, copied.conv_2, copied.conv_3, copied.conv_4)
    ] == ['Conv2d', 'Conv2d', 'GroupSumConv', 'GroupSumConv']
    assert not GroupSumConv.fits(psa.conv_2)  # 2 outputs per group
    with pytest.raises(ValueError, match='one output channel per group'):
        GroupSumConv(psa.conv_2)
    # a detector with no such conv is not copied
    plain = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, groups=4))
    assert export_forms(plain) is plain


def test_metadata(tiny_exports):
    model = OnnxDetector(tiny_exports['retinanet']['onnx'])
    assert model.classes == ('square', 'disk')
    assert model.meta['resize'] == dict(
        scale=[64, 64],
        scale_factor=None,
        keep_ratio=True,
        interpolation='bilinear')
    assert model.meta['input']['channel_order'] == 'bgr'
    masks = OnnxDetector(tiny_exports['mask-rcnn']['onnx'])
    assert masks.with_masks and masks.meta['mask_thr_binary'] == 0.5


def test_no_detections(tiny_exports, tmp_path):
    paths = tiny_exports['mask-rcnn']
    out = str(tmp_path / 'none.onnx')
    export_onnx(
        paths['config'],
        paths['checkpoint'],
        out,
        cfg_options={'model.test_cfg.rcnn.score_thr': 1.0},
        shape=(64, 64),
        verify=False)
    model = OnnxDetector(out)
    result = model(np.zeros((40, 50, 3), np.uint8))
    assert result['bboxes'].shape == (0, 4)
    assert result['labels'].shape == (0, )
    assert result['masks'].shape == (0, 40, 50)


@pytest.mark.parametrize('model_cfg, match', [
    (dict(type='RetinaNet', bbox_head=dict(type='FCOSHead')),
     "bbox_head type 'FCOSHead' is not supported.*supported bbox_head "
     'types: RetinaHead'),
    (dict(type='FCOS', bbox_head=dict(type='FCOSHead')),
     "bbox_head type 'FCOSHead'.*RetinaHead"),
    (dict(type='CascadeRCNN', rpn_head=dict(type='RPNHead')),
     "model type 'CascadeRCNN'.*RetinaNet, FasterRCNN, MaskRCNN"),
    (dict(
        type='MaskRCNN',
        rpn_head=dict(type='RPNHead'),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(type='SingleRoIExtractor'),
            bbox_head=dict(type='Shared2FCBBoxHead'),
            mask_roi_extractor=dict(type='SingleRoIExtractor'),
            mask_head=dict(type='MaskIoUHead'))),
     "roi_head.mask_head type 'MaskIoUHead'.*FCNMaskHead"),
    (dict(type='FasterRCNN', rpn_head=dict(type='GARPNHead')),
     "rpn_head type 'GARPNHead'.*RPNHead"),
])
def test_unsupported_heads(model_cfg, match):
    with pytest.raises(UnsupportedModelError, match=match):
        check_supported(model_cfg)


RETINA_TEST_CFG = dict(
    nms_pre=1000,
    min_bbox_size=0,
    score_thr=0.05,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=100)


def test_supported_heads():
    assert check_supported(
        dict(
            type='RetinaNet',
            bbox_head=dict(type='RetinaHead'),
            test_cfg=RETINA_TEST_CFG)) == 'single_stage'


@pytest.mark.parametrize('change, match', [
    (dict(test_cfg=dict(RETINA_TEST_CFG, with_nms=False)),
     r'model.test_cfg: with_nms not supported.*supported keys: nms_pre, '
     'score_thr, min_bbox_size, nms, max_per_img'),
    (dict(
        test_cfg=dict(
            RETINA_TEST_CFG, nms=dict(type='soft_nms', iou_threshold=0.5))),
     "model.test_cfg.nms type 'soft_nms'.*supported.*nms"),
    (dict(
        test_cfg=dict(RETINA_TEST_CFG, nms=dict(iou_threshold=0.5, offset=1))),
     'model.test_cfg.nms: offset not supported.*iou_threshold'),
    (dict(test_cfg=dict(RETINA_TEST_CFG, nms=None)),
     'needs an NMS with an iou_threshold'),
    (dict(test_cfg=None), 'model.test_cfg is missing'),
    (dict(data_preprocessor=dict(type='DetDataPreprocessor', resize=2)),
     'model.data_preprocessor: resize not supported'),
    (dict(
        bbox_head=dict(
            type='RetinaHead', bbox_coder=dict(type='TBLRBBoxCoder'))),
     "bbox_head.bbox_coder type 'TBLRBBoxCoder'.*DeltaXYWHBBoxCoder"),
])
def test_unsupported_settings(change, match):
    model_cfg = dict(
        type='RetinaNet',
        bbox_head=dict(type='RetinaHead'),
        test_cfg=RETINA_TEST_CFG)
    model_cfg.update(change)
    with pytest.raises(UnsupportedModelError, match=match):
        check_supported(model_cfg)


def test_unsupported_head_fails_before_export(tiny_exports, tmp_path):
    config = tmp_path / 'fcos.py'
    config.write_text(
        f"_base_ = {tiny_exports['retinanet']['config']!r}\n"
        "model = dict(bbox_head=dict(_delete_=True, type='FCOSHead', "
        'num_classes=2, in_channels=16))\n')
    out = tmp_path / 'out'
    with pytest.raises(UnsupportedModelError, match="'FCOSHead'"):
        export_onnx(
            str(config), 'does-not-matter.pth', str(out / 'model.onnx'))
    assert not out.exists() or os.listdir(out) == []


def test_checkpoint_that_does_not_fit(tiny_exports, tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(
            CheckpointMismatchError,
            match='does not fit the detector.*missing from the '
            'checkpoint.*the model does not have'):
        export_onnx(tiny_exports['mask-rcnn']['config'],
                    tiny_exports['retinanet']['checkpoint'],
                    str(out / 'model.onnx'))
    assert not out.exists() or os.listdir(out) == []


class _RunsCode:
    """Unpickling it would create the folder it names."""

    def __init__(self, folder):
        self.folder = folder

    def __reduce__(self):
        return os.makedirs, (self.folder, )


def test_crafted_checkpoint_is_refused(tiny_exports, tmp_path):
    marker = tmp_path / 'ran'
    crafted = tmp_path / 'crafted.pth'
    torch.save(
        dict(state_dict={'x': torch.zeros(1)}, meta=_RunsCode(str(marker))),
        str(crafted))
    out = tmp_path / 'out'
    with pytest.raises(pickle.UnpicklingError, match='refused to load'):
        export_onnx(tiny_exports['retinanet']['config'], str(crafted),
                    str(out / 'model.onnx'))
    assert not marker.exists()
    assert not out.exists() or os.listdir(out) == []


def test_failed_export_leaves_nothing(tiny_exports, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    out.mkdir()

    def broken_export(model, args, f, **kwargs):
        with open(f, 'wb') as fh:
            fh.write(b'half a model')
        raise RuntimeError('exporter crashed')

    monkeypatch.setattr(torch.onnx, 'export', broken_export)
    with pytest.raises(RuntimeError, match='exporter crashed'):
        export_onnx(tiny_exports['retinanet']['config'],
                    tiny_exports['retinanet']['checkpoint'],
                    str(out / 'model.onnx'))
    assert os.listdir(out) == []


def test_bad_arguments(tiny_exports, tmp_path):
    paths = tiny_exports['retinanet']
    with pytest.raises(ValueError, match='opset must be >= 16'):
        export_onnx(
            paths['config'],
            paths['checkpoint'],
            str(tmp_path / 'm.onnx'),
            opset=13)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_detector(paths['config'], str(tmp_path / 'missing.pth'))
    with pytest.raises(FileNotFoundError, match='config not found'):
        load_detector(str(tmp_path / 'missing.py'), paths['checkpoint'])


def test_unsupported_pipeline_transform(tiny_exports, tmp_path):
    config = tmp_path / 'padded.py'
    config.write_text(
        f"_base_ = {tiny_exports['retinanet']['config']!r}\n"
        'test_dataloader = dict(dataset=dict(pipeline=['
        "dict(type='LoadImageFromFile'), dict(type='Pad', size=(64, 64)), "
        "dict(type='PackDetInputs')]))\n")
    with pytest.raises(
            UnsupportedModelError,
            match="transform 'Pad' is not supported.*Resize"):
        export_onnx(
            str(config), tiny_exports['retinanet']['checkpoint'],
            str(tmp_path / 'm.onnx'))


def test_check_matches_near_equal_scores(tiny_exports, tmp_path):
    """Detections whose scores differ by ~1e-7 come out of the two
    runtimes in another order (and another subset at max_per_img's cut):
    the export's check matches them as the evaluator does and keeps the
    file; a model that does differ is refused."""
    from mmepsa.deployment.export import build_export_wrapper, verify_onnx
    from mmepsa.deployment.runner import create_session
    paths = tiny_exports['retinanet']
    detector, _ = load_detector(paths['config'], paths['checkpoint'])
    torch.manual_seed(0)
    with torch.no_grad():
        detector.bbox_head.retina_cls.weight.normal_(std=1e-7)
        detector.bbox_head.retina_cls.bias.zero_()
    checkpoint = str(tmp_path / 'near-equal.pth')
    torch.save(dict(state_dict=detector.state_dict(), meta={}), checkpoint)
    options = {'model.test_cfg.max_per_img': 30}
    out = str(tmp_path / 'near-equal.onnx')
    info = export_onnx(
        paths['config'], checkpoint, out, options, shape=(64, 64))
    assert os.path.isfile(out)
    agreement = info['agreement']
    assert agreement['matched'] > 0 and agreement['min_iou'] >= 0.99
    detector, cfg = load_detector(paths['config'], checkpoint, options)
    wrapper = build_export_wrapper(detector, cfg.model)
    img = torch.rand(1, 3, 96, 96) * 255
    shape = torch.tensor([[96, 96]])
    got = create_session(out).run(None, {
        'input': img.numpy(),
        'img_shape': shape.numpy()
    })[1]
    with torch.no_grad():
        want = wrapper(img, shape)[1].numpy()
    # index by index, the two disagree (what the check must not refuse)
    assert got.shape == want.shape and np.abs(got - want).max() > 1
    # another model is refused
    with torch.no_grad():
        detector.bbox_head.retina_cls.bias.add_(1.0)
    with pytest.raises(RuntimeError, match='disagree.*scores differ by up to'):
        verify_onnx(wrapper, out, (64, 64))
    # boxes moved a little: unmatched above the cut (scores not all equal)
    detector, cfg = load_detector(paths['config'], paths['checkpoint'])
    with torch.no_grad():
        detector.bbox_head.retina_reg.bias.add_(0.05)
    with pytest.raises(RuntimeError, match='disagree.*found by one runtime'):
        verify_onnx(
            build_export_wrapper(detector, cfg.model), paths['onnx'], (64, 64))
