# Copyright (c) mmepsa contributors. All rights reserved.
"""The OpenVINO backend on the exported tiny detectors: fp32 equals
onnxruntime and mmdet's ``test_step``, bf16 close to fp32 (or refused
naming the capability), an IR keeps the metadata, and the bad inputs of
:func:`~mmepsa.deployment.create_backend` and
:func:`~mmepsa.deployment.save_openvino_ir`."""
import os
import sys

import numpy as np
import pytest

from mmepsa.deployment import (BACKENDS, PRECISIONS, DetectionAgreement,
                               OnnxDetector, PrecisionError, backends,
                               create_backend, evaluate_onnx, load_detector,
                               save_openvino_ir)
from tests.test_deployment.tiny_detectors import instances, mmdet_reference
from tests.utils import load_tool, run_tool

ov = pytest.importorskip('openvino')

#: bf16 against fp32 on the tiny detectors (random weights): the share of
#: fp32's detections bf16 finds again (same label, IoU >= 0.5) and their
#: largest score difference.
BF16_MATCHED, BF16_SCORE_ATOL = 0.8, 0.02
HAS_BF16 = 'BF16' in backends.cpu_capabilities()


@pytest.fixture(scope='module')
def image():
    return np.random.RandomState(0).randint(0, 256, (80, 60, 3), np.uint8)


def test_openvino_fp32_equals_onnxruntime_and_mmdet(tiny_exports, image):
    """The Mask R-CNN (Faster R-CNN's graph and masks; the RetinaNet:
    :func:`test_evaluate_openvino_against_pytorch`)."""
    paths = tiny_exports['mask-rcnn']
    model = OnnxDetector(
        paths['onnx'], threads=1, backend='openvino', precision='fp32')
    assert model.label == 'openvino' and model.session is None
    result = model(image)
    ort = OnnxDetector(paths['onnx'], threads=1)(image)
    inputs, scale_factor = model.preprocess(image)
    detector, _ = load_detector(paths['config'], paths['checkpoint'])
    ref = mmdet_reference(detector, inputs, scale_factor, image.shape[:2])
    assert len(ref) > 0 and sorted(result) == sorted(ort)
    for other in (ort, {k: v.numpy() for k, v in ref.items()}):
        assert len(result['bboxes']) == len(other['bboxes'])
        np.testing.assert_allclose(
            result['bboxes'], other['bboxes'], atol=1e-3)
        np.testing.assert_allclose(
            result['scores'], other['scores'], atol=1e-5)
        np.testing.assert_array_equal(result['labels'], other['labels'])
        assert (result['masks'] != other['masks']).mean() < 1e-3


def test_static_shapes_equal_dynamic(tiny_exports, image, monkeypatch):
    """Compiled for each input shape: the dynamic model's detections, one
    compile per shape, the last STATIC_SHAPES_KEPT kept."""
    monkeypatch.setattr(backends, 'STATIC_SHAPES_KEPT', 1)
    onnx_file = tiny_exports['retinanet']['onnx']
    dynamic = OnnxDetector(onnx_file, 1, backend='openvino')
    static = OnnxDetector(onnx_file, 1, backend='openvino', static_shapes=True)
    other = np.random.RandomState(1).randint(0, 256, (50, 120, 3), np.uint8)
    for img in (image, other, image):
        got, want = static(img), dynamic(img)
        assert len(got['bboxes']) == len(want['bboxes']) > 0
        np.testing.assert_allclose(got['bboxes'], want['bboxes'], atol=1e-3)
        np.testing.assert_allclose(got['scores'], want['scores'], atol=1e-5)
    # each shape's compile checked for the precision, as the dynamic one
    hint = static.backend.compiled.get_property('INFERENCE_PRECISION_HINT')
    assert backends._type_name(str(hint)) == 'f32'
    # image compiled again after other pushed it out
    assert [(streams, dict(shapes)['input'])
            for streams, shapes in static.backend.compiled_requests
            ] == [(False, static.preprocess(image)[0].shape)]
    assert list(dynamic.backend.compiled_requests) == [(False, None)]
    with pytest.raises(ValueError, match='cannot take inputs of shapes'):
        static.backend.requests({
            'input':
            np.zeros((1, 3, 64, 64, 5), np.float32),
            'img_shape':
            np.zeros((1, 2), np.int64)
        })
    with pytest.raises(ValueError, match='static_shapes.*is the openvino '):
        create_backend(onnx_file, static_shapes=True)


@pytest.mark.skipif(not HAS_BF16, reason='the CPU has no BF16')
def test_openvino_bf16_close_to_fp32(tiny_exports, image):
    onnx_file = tiny_exports['mask-rcnn']['onnx']
    fp32 = OnnxDetector(onnx_file, 1, backend='openvino', precision='fp32')
    bf16 = OnnxDetector(onnx_file, 1, backend='openvino', precision='bf16')
    assert bf16.label == 'openvino-bf16'
    got = str(bf16.backend.compiled.get_property('INFERENCE_PRECISION_HINT'))
    assert 'bf' in got.lower()  # compiled for bf16, not fallen back
    agreement = DetectionAgreement()
    agreement.add(instances(fp32(image)), instances(bf16(image)))
    s = agreement.summary()
    assert s['matched'] >= BF16_MATCHED * s['reference'] > 0
    assert s['max_score_diff'] <= BF16_SCORE_ATOL


def test_bf16_refused_without_the_capability(tiny_exports, monkeypatch):
    monkeypatch.setattr(
        backends, 'cpu_capabilities', lambda core=None: ['FP32', 'INT8'])
    with pytest.raises(
            PrecisionError,
            match='bf16 needs a CPU with '
            'bfloat16.*no BF16 among.*FP32, INT8'):
        create_backend(tiny_exports['retinanet']['onnx'], 'openvino', 'bf16')
    with pytest.raises(
            PrecisionError, match='int8-bf16 needs a CPU with bfloat16'):
        backends.check_bf16(precision='int8-bf16')


def test_ir_keeps_the_model_and_its_metadata(tiny_exports, image, tmp_path,
                                             tiny_project, capsys):
    onnx_file = tiny_exports['mask-rcnn']['onnx']
    xml = tmp_path / 'mask-rcnn.xml'
    proc = run_tool('deployment/onnx2openvino.py', onnx_file, '--output-file',
                    xml)
    assert 'OpenVINO IR of' in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ['mask-rcnn.bin', 'mask-rcnn.xml']
    umask = os.umask(0)
    os.umask(umask)
    assert xml.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's
    ir = OnnxDetector(str(xml), 1, backend='openvino')
    ref = OnnxDetector(onnx_file, 1)  # onnxruntime
    assert ir.meta == ref.meta and ir.precision == 'fp32'
    got, want = ir(image), ref(image)
    for key in ('bboxes', 'scores', 'labels'):
        np.testing.assert_allclose(got[key], want[key], atol=1e-3)
    assert (got['masks'] != want['masks']).mean() < 1e-3
    with pytest.raises(
            ValueError,
            match='is an OpenVINO IR: run it with '
            'the openvino backend'):
        OnnxDetector(str(xml))
    out = tmp_path / 'out'
    img = f"{tiny_project['tmp']}/data/images/img_0.png"
    # in this process (the tool's start-up: test_runner.py)
    assert load_tool('deployment/onnx_image_demo.py').main([
        img,
        str(xml), '--out-dir',
        str(out), '--score-thr', '0', '--backend', 'openvino', '--threads', '1'
    ]) == 0
    assert 'img_0.png: 20 detections' in capsys.readouterr().out
    assert (out / 'preds' / 'img_0.json').exists()


def test_evaluate_openvino_against_pytorch(tiny_exports):
    paths = tiny_exports['retinanet']
    result = evaluate_onnx(
        paths['config'],
        paths['onnx'],
        paths['checkpoint'],
        threads=1,
        backend='openvino',
        precision='fp32')
    assert (result['backend'], result['precision']) == ('openvino', 'fp32')
    assert set(result['metrics']) == {'openvino', 'pytorch'}
    assert result['differences'] == dict(bbox_mAP=0.0, bbox_mAP_50=0.0)
    assert result['agreement']['min_iou'] >= 0.999
    assert result['ok'] is True


def test_evaluate_several_models_against_one_pytorch_run(
        tiny_exports, monkeypatch):
    """models=: each model on the same batches, PyTorch run once per
    batch and every model compared with it."""
    from mmdet.models.detectors.base import BaseDetector
    paths = tiny_exports['retinanet']
    calls = []
    test_step = BaseDetector.test_step
    monkeypatch.setattr(
        BaseDetector, 'test_step',
        lambda self, data: calls.append(1) or test_step(self, data))
    result = evaluate_onnx(
        paths['config'],
        checkpoint=paths['checkpoint'],
        threads=1,
        batch_size=2,
        models=[(paths['onnx'], 'onnxruntime', None),
                (paths['onnx'], 'openvino', 'fp32')])
    assert len(calls) == result['images'] // 2 == 2
    assert list(result['metrics']) == ['pytorch', 'onnxruntime', 'openvino']
    assert list(result['rows']) == ['onnxruntime', 'openvino']
    assert 'ok' not in result  # no single model's row at the top level
    for label, row in result['rows'].items():
        assert row['onnx'] == paths['onnx'] and row['precision'] == 'fp32'
        assert row['differences'] == dict(bbox_mAP=0.0, bbox_mAP_50=0.0)
        assert row['agreement']['matched'] == row['agreement']['reference']
        assert row['ok'] is True
    with pytest.raises(
            ValueError,
            match='two models of one label, '
            'onnxruntime: evaluate them apart'):
        evaluate_onnx(
            paths['config'], models=[(paths['onnx'], 'onnxruntime', None)] * 2)
    with pytest.raises(ValueError, match='needs onnx_file or models'):
        evaluate_onnx(paths['config'])


@pytest.mark.parametrize('backend, precision, error, match', [
    ('tensorrt', None, ValueError, 'backend must be one of onnxruntime, '
     "openvino; got 'tensorrt'"),
    ('openvino', 'fp16', ValueError, 'precision must be one of fp32, bf16, '
     "int8, int8-bf16; got 'fp16'"),
    ('onnxruntime', 'bf16', PrecisionError, 'precision bf16 needs the '
     'openvino backend'),
    ('onnxruntime', 'int8', PrecisionError, 'precision int8 needs the '
     'openvino backend'),
    ('openvino', 'int8', PrecisionError, 'precision int8 needs an int8 '
     'model; .* is not quantized: make one with '
     'tools/deployment/quantize.py'),
    ('openvino', 'int8-bf16', PrecisionError, 'precision int8-bf16 needs an '
     'int8 model'),
])
def test_backend_refusals(tiny_exports, backend, precision, error, match):
    with pytest.raises(error, match=match):
        create_backend(tiny_exports['retinanet']['onnx'], backend, precision)


def test_bad_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='model not found'):
        create_backend(str(tmp_path / 'missing.xml'), 'openvino')
    text = tmp_path / 'model.txt'
    text.write_text('x')
    with pytest.raises(ValueError, match='an .onnx file or an IR .xml'):
        create_backend(str(text), 'openvino')
    broken = tmp_path / 'broken.onnx'
    broken.write_text('not a model')
    with pytest.raises(ValueError, match='OpenVINO cannot read .*broken'):
        create_backend(str(broken), 'openvino')


def test_openvino_missing(tiny_exports, monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)
    with pytest.raises(ImportError, match=r'pip install "mmepsa\[openvino\]"'):
        OnnxDetector(tiny_exports['retinanet']['onnx'], backend='openvino')


def test_ir_written_whole_or_not_at_all(tiny_exports, tmp_path, monkeypatch):
    onnx_file = tiny_exports['retinanet']['onnx']
    with pytest.raises(ValueError, match='out_file must end with .xml'):
        save_openvino_ir(onnx_file, str(tmp_path / 'model.bin'))

    def fail_midway(model, path, **kwargs):
        with open(path, 'w') as f:
            f.write('<net')  # half an IR
        raise RuntimeError('disk full')

    monkeypatch.setattr(ov, 'save_model', fail_midway)
    with pytest.raises(RuntimeError, match='disk full'):
        save_openvino_ir(onnx_file, str(tmp_path / 'model.xml'))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('tool, positional', [
    ('deployment/onnx_test.py', ['config.py', 'model.onnx']),
    ('deployment/onnx_image_demo.py', ['a.jpg', 'model.onnx']),
])
def test_tools_take_every_backend_and_precision(tool, positional):
    """The tools spell the choices out (importing them would load torch
    before --help): they must stay BACKENDS and PRECISIONS."""
    parse_args = load_tool(tool).parse_args
    for backend in BACKENDS:
        assert parse_args(positional + ['--backend', backend]).backend == \
            backend
    for precision in PRECISIONS:
        args = parse_args(positional + ['--precision', precision])
        assert args.precision == precision
    assert parse_args(positional + ['--static-shapes']).static_shapes
    with pytest.raises(SystemExit):
        parse_args(positional + ['--precision', 'fp16'])
