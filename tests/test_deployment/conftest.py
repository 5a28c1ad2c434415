# Copyright (c) mmepsa contributors. All rights reserved.
"""The tiny detectors the deployment tests export: a RetinaNet (the tiny
project of ``tests/utils.py``, with its 4-image COCO set), a Faster R-CNN
and a Mask R-CNN, each with random weights saved as a checkpoint and
exported to ONNX once per session."""
import os.path as osp

import pytest

from tests.test_deployment.tiny_detectors import (save_random_checkpoint,
                                                  write_two_stage_config)
from tests.utils import once_per_session

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')


@pytest.fixture(scope='session')
def tiny_exports(tmp_path_factory, tiny_project):
    """``{name: {config, checkpoint, onnx}}`` for ``retinanet``,
    ``faster-rcnn`` and ``mask-rcnn``: random weights, exported once per
    session (read-only; not verified here, the tests compare them)."""

    def make(folder):
        from mmepsa.deployment import export_onnx
        models = {}
        for seed, name in enumerate(('retinanet', 'faster-rcnn', 'mask-rcnn')):
            config = (
                tiny_project['config'] if name == 'retinanet' else
                write_two_stage_config(folder, name))
            checkpoint = save_random_checkpoint(
                config, osp.join(folder, f'{name}.pth'), seed)
            onnx_file = osp.join(folder, f'{name}.onnx')
            export_onnx(
                config, checkpoint, onnx_file, shape=(96, 96), verify=False)
            models[name] = dict(
                config=config, checkpoint=checkpoint, onnx=onnx_file)
        return models

    return once_per_session(tmp_path_factory, 'tiny_exports', make)
