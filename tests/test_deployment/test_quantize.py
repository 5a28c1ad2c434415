# Copyright (c) mmepsa contributors. All rights reserved.
"""int8 quantization with NNCF of the exported tiny Mask R-CNN: the tool
runs end to end (calibrated on the tiny set's 4 images, fewer than asked:
a warning), the int8 IR returns detections with post-processing left in
float, and the bad inputs (empty set, unreadable image, NNCF missing)
fail before anything is written."""
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import sys

import numpy as np
import pytest

from mmepsa.deployment import (DetectionAgreement, OnnxDetector,
                               PrecisionError, quantize_int8)
from mmepsa.deployment.backends import cpu_capabilities
from mmepsa.deployment.quantize import IGNORED_TYPES, calibration_images
from tests.test_deployment.tiny_detectors import instances
from tests.utils import load_tool, run_tool

ov = pytest.importorskip('openvino')
if importlib.util.find_spec('nncf') is None:  # imported as quantize does
    pytest.skip('nncf is not installed', allow_module_level=True)


def calibration_config(folder: str,
                       mask_rcnn: str,
                       tiny_config: str,
                       name: str = 'calib.py',
                       **dataset) -> str:
    """A config of the tiny Mask R-CNN with the tiny project's
    ``val_dataloader`` (its dataset updated with ``dataset``)."""
    from mmengine.config import Config
    loader = Config.fromfile(tiny_config).val_dataloader.to_dict()
    loader['dataset'].update(dataset)
    path = osp.join(folder, name)
    with open(path, 'w') as f:
        f.write(f'_base_ = {mask_rcnn!r}\nval_dataloader = {loader!r}\n')
    return path


@pytest.fixture(scope='module')
def int8_model(tiny_exports, tiny_project, tmp_path_factory):
    """The tiny Mask R-CNN quantized by tools/deployment/quantize.py, its
    neck kept in float: its folder, the tool's output and the int8
    ``.xml``."""
    folder = str(tmp_path_factory.mktemp('int8'))
    config = calibration_config(folder, tiny_exports['mask-rcnn']['config'],
                                tiny_project['config'])
    xml = osp.join(folder, 'mask-rcnn-int8.xml')
    proc = run_tool('deployment/quantize.py', config,
                    tiny_exports['mask-rcnn']['onnx'], '--output-file', xml,
                    '--keep-float', '/neck/')
    return dict(folder=folder, config=config, xml=xml, stdout=proc.stdout)


def test_quantize_tool_writes_an_int8_ir(int8_model):
    out = int8_model['stdout']
    assert 'quantize: warning: calibrated on 4 images, fewer than the 300 ' \
        'asked (all the val dataset has)' in out
    assert 'int8, calibrated on 4 images' in out
    names = sorted(
        n for n in os.listdir(int8_model['folder']) if not n.endswith('.py'))
    assert names == ['mask-rcnn-int8.bin', 'mask-rcnn-int8.xml']


def test_int8_model_returns_detections(int8_model, tiny_exports):
    model = OnnxDetector(int8_model['xml'], threads=1, backend='openvino')
    assert (model.precision, model.label) == ('int8', 'openvino-int8')
    fp32 = OnnxDetector(tiny_exports['mask-rcnn']['onnx'], threads=1)
    assert model.meta == fp32.meta  # the metadata survives NNCF and the IR
    img = np.random.RandomState(0).randint(0, 256, (80, 60, 3), np.uint8)
    result, ref = model(img), fp32(img)
    assert len(result['bboxes']) == len(ref['bboxes']) == 20
    assert np.isfinite(result['bboxes']).all()
    assert (result['bboxes'][:, 2:] <= [60, 80]).all()
    assert set(result['labels'].tolist()) <= {0, 1, 2}
    assert ((result['scores'] > 0) & (result['scores'] < 1)).all()
    assert result['masks'].shape == (20, 80, 60)
    with pytest.raises(
            PrecisionError,
            match='is an int8 model: run it '
            'with precision int8 or int8-bf16'):
        OnnxDetector(int8_model['xml'], backend='openvino', precision='fp32')
    if 'BF16' not in cpu_capabilities():
        return
    # int8-bf16: the ops left in float run in bf16; int8's detections with
    # bf16's rounding
    mixed = OnnxDetector(
        int8_model['xml'],
        threads=1,
        backend='openvino',
        precision='int8-bf16')
    assert mixed.label == 'openvino-int8-bf16'
    hint = mixed.backend.compiled.get_property('INFERENCE_PRECISION_HINT')
    assert 'bf' in str(hint).lower()
    agreement = DetectionAgreement()
    agreement.add(instances(result), instances(mixed(img)))
    s = agreement.summary()
    assert s['matched'] >= 0.8 * s['reference'] > 0
    assert s['max_score_diff'] <= 0.05


#: Op types of the graph's post-processing (box decoding, clipping, RoI
#: level mapping, score filtering) that the network itself does not use.
POST_PROCESSING_TYPES = IGNORED_TYPES + (
    'Sqrt', 'Exp', 'Log', 'Minimum', 'Maximum', 'Clamp', 'Divide', 'Subtract',
    'Greater', 'NonZero', 'Floor')


def test_post_processing_stays_float(int8_model):
    """No FakeQuantize feeds a post-processing op (by type), an op outside
    the detector's modules (``/Sqrt``, not ``/rpn_head/...``) or one kept
    in float (the neck); the network's convolutions are quantized."""
    model = ov.Core().read_model(int8_model['xml'])
    consumers = []
    for op in model.get_ops():
        if op.get_type_name() != 'FakeQuantize':
            continue
        for target in op.output(0).get_target_inputs():
            node = target.get_node()
            if node.get_type_name() != 'ShapeOf':  # reads the shape only
                consumers.append(node)
    convs = [n for n in consumers if n.get_type_name() == 'Convolution']
    assert len(convs) > 100
    assert [
        n.get_friendly_name() for n in consumers
        if n.get_type_name() in POST_PROCESSING_TYPES
    ] == []
    assert [
        n.get_friendly_name() for n in consumers
        if not re.match(r'/[^/]+/', n.get_friendly_name())
        or n.get_friendly_name().startswith('/neck/')
    ] == []


def test_bad_calibration_sets(int8_model, tiny_exports, tiny_project,
                              tmp_path):
    onnx_file = tiny_exports['mask-rcnn']['onnx']
    out = tmp_path / 'out' / 'int8.xml'
    # an empty data set
    ann = json.loads(
        open(f"{tiny_project['tmp']}/data/annotations.json").read())
    empty = tmp_path / 'empty.json'
    empty.write_text(json.dumps(dict(ann, images=[], annotations=[])))
    config = calibration_config(
        str(tmp_path),
        tiny_exports['mask-rcnn']['config'],
        tiny_project['config'],
        'empty.py',
        ann_file=str(empty))
    with pytest.raises(
            ValueError,
            match='the val dataset of .*empty.py has '
            'no images to calibrate on'):
        quantize_int8(config, onnx_file, str(out))
    with pytest.warns(
            UserWarning,
            match='calibrating on 4 images: the val '
            'dataset has fewer than the 5 asked'):
        assert len(calibration_images(int8_model['config'], 5)) == 4
    assert len(calibration_images(int8_model['config'], 2)) == 2
    with pytest.raises(ValueError, match='num_images must be >= 1, got 0'):
        quantize_int8(int8_model['config'], onnx_file, str(out), 0)
    with pytest.raises(
            ValueError,
            match='split must be one of train, val, '
            "test; got 'holdout'"):
        quantize_int8(
            int8_model['config'], onnx_file, str(out), split='holdout')
    # one unreadable image among them: named, nothing written
    data = tmp_path / 'data'
    shutil.copytree(f"{tiny_project['tmp']}/data", data)
    (data / 'images' / 'img_2.png').write_text('not an image')
    config = calibration_config(
        str(tmp_path),
        tiny_exports['mask-rcnn']['config'],
        tiny_project['config'],
        'broken.py',
        data_root=str(data) + '/')
    # the tool's exit, in this process (its start-up: the int8_model fixture)
    with pytest.raises(SystemExit) as exit_:
        load_tool('deployment/quantize.py').main(
            [config, onnx_file, '--output-file',
             str(out)])
    assert 'quantize: error: cannot read image' in str(exit_.value.code)
    assert 'img_2.png' in str(exit_.value.code)
    with pytest.raises(ValueError, match='already an int8 model'):
        quantize_int8(int8_model['config'], int8_model['xml'], str(out))
    with pytest.raises(ValueError, match='out_file must end with .xml'):
        quantize_int8(int8_model['config'], onnx_file, str(out) + '.onnx')
    assert not (tmp_path / 'out').exists()  # nothing written


def test_nncf_missing(int8_model, tiny_exports, monkeypatch):
    monkeypatch.setitem(sys.modules, 'nncf', None)
    with pytest.raises(
            ImportError,
            match=r'nncf is needed for the OpenVINO '
            r'backend and int8 quantization: pip install '
            r'"mmepsa\[openvino\]"'):
        quantize_int8(int8_model['config'], tiny_exports['mask-rcnn']['onnx'],
                      'int8.xml')
