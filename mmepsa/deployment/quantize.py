# Copyright (c) mmepsa contributors. All rights reserved.
"""Post-training int8 quantization of an exported detector with NNCF:
:func:`quantize_int8`, behind ``tools/deployment/quantize.py``.

NNCF's ``nncf.quantize`` runs on the OpenVINO model of the ``.onnx`` file
(or of its fp32 IR), calibrated on images of the config's dataset fed
through the runner's own pre-processing
(:class:`~mmepsa.deployment.OnnxDetector`: load, resize, the graph's
inputs), a few hundred by default. Post-processing stays in float, as
NNCF's detection recipes keep it: no quantizer goes before the op types of
:data:`IGNORED_TYPES` (NMS, TopK, RoIAlign, sigmoids, softmaxes) nor
before any op outside the detector's modules (:data:`POSTPROCESS_PATTERN`:
the graph's own pre- and post-processing, i.e. normalisation, box
decoding, clipping, RoI level mapping). ``keep_float`` keeps more ops in
float by name. The result is an OpenVINO IR (``.xml`` and ``.bin``),
written atomically (:func:`~mmepsa.deployment.save_openvino_ir`), that the
``openvino`` backend runs in int8.

Example:
    >>> from mmepsa.deployment import OnnxDetector, quantize_int8
    >>> info = quantize_int8(
    ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
    ...     'work_dirs/deploy-demo/mask-rcnn.onnx',
    ...     'work_dirs/deploy-demo/mask-rcnn-int8.xml')  # doctest: +SKIP
    >>> model = OnnxDetector(info['out_file'], backend='openvino'
    ...                      )  # doctest: +SKIP
    >>> model.precision  # doctest: +SKIP
    'int8'
"""
import logging
import os.path as osp
import sys
import time
import warnings
from contextlib import contextmanager
from typing import List, Optional, Sequence

import numpy as np

from .backends import (import_openvino, is_quantized,
                       openvino_requirements_error)
from .files import check_ir_file, save_openvino_ir
from .runner import OnnxDetector, load_image

#: Images calibrated on by default.
DEFAULT_NUM_IMAGES = 300
#: The config's datasets calibration may take images from.
SPLITS = ('train', 'val', 'test')
#: Op types NNCF puts no quantizer before (OpenVINO's names).
IGNORED_TYPES = ('NonMaxSuppression', 'TopK', 'ROIAlign', 'Sigmoid', 'Softmax')
#: Names of the ops outside every module of the detector (``/Sub_2``, not
#: ``/backbone/...``): the export wrapper's pre- and post-processing. NNCF
#: matches it at the start of each op's name.
POSTPROCESS_PATTERN = r'(?!/[^/]+/)'


@contextmanager
def _torch_hidden():
    """Hide torch while NNCF is imported if it is older than 2.3: NNCF 3.4
    registers its torch tensor functions whenever torch imports, and those
    need ``torch.uint16`` (torch 2.3); its OpenVINO path never uses torch,
    and a missing torch is what NNCF expects to skip."""
    try:
        from importlib.metadata import version
        major, minor = (int(v) for v in version('torch').split('.')[:2])
        old = (major, minor) < (2, 3)
    except Exception:  # noqa: BLE001 - no torch, or an odd version
        old = False
    saved = sys.modules.get('torch')
    if old:
        sys.modules['torch'] = None  # import torch -> ImportError
    try:
        yield
    finally:
        if old:
            if saved is None:
                del sys.modules['torch']
            else:
                sys.modules['torch'] = saved


def import_nncf():
    """The ``nncf`` module (see :func:`_torch_hidden`), or an ImportError
    naming the ``openvino`` extra."""
    if sys.modules.get('nncf') is not None:
        return sys.modules['nncf']
    import_openvino()
    try:
        with _torch_hidden():
            import nncf
            import nncf.quantization  # noqa: F401 - its torch-free import
    except ImportError:
        raise openvino_requirements_error('nncf') from None
    return nncf


def calibration_images(config,
                       num_images: int = DEFAULT_NUM_IMAGES,
                       split: str = 'val',
                       cfg_options: Optional[dict] = None,
                       seed: int = 0) -> List[str]:
    """Paths of ``num_images`` images of the config's ``split`` dataset
    (its ``<split>_dataloader``), drawn at random with ``seed``; all of
    them, with a warning saying how many, if it has fewer.

    Raises:
        ValueError: ``num_images`` < 1, an unknown split, or a dataset
            without images.

    Example:
        >>> from mmepsa.deployment.quantize import calibration_images
        >>> paths = calibration_images(
        ...     'configs/demo/mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
        ...     10)  # doctest: +SKIP
        >>> len(paths)  # doctest: +SKIP
        10
    """
    from mmengine.registry import init_default_scope

    from .export import load_config
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
    if split not in SPLITS:
        raise ValueError(f'split must be one of {", ".join(SPLITS)}; got '
                         f'{split!r}')
    cfg = load_config(config, cfg_options)
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise ValueError(f'the config {cfg.filename} has no '
                         f'{split}_dataloader to calibrate on')
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset_cfg = loader.dataset.copy()
    if not {'dataset', 'datasets'} & set(dataset_cfg):  # not a wrapper
        dataset_cfg['serialize_data'] = False  # mmengine's fails when empty
    dataset = DATASETS.build(dataset_cfg)
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    if not paths:
        raise ValueError(f'the {split} dataset of {cfg.filename} has no '
                         'images to calibrate on')
    if len(paths) < num_images:
        warnings.warn(
            f'calibrating on {len(paths)} images: the {split} dataset has '
            f'fewer than the {num_images} asked')
    order = np.random.RandomState(seed).permutation(len(paths))
    return [paths[i] for i in sorted(order[:num_images])]


def quantize_int8(config,
                  model_file: str,
                  out_file: str,
                  num_images: int = DEFAULT_NUM_IMAGES,
                  split: str = 'val',
                  keep_float: Sequence[str] = (),
                  cfg_options: Optional[dict] = None,
                  seed: int = 0,
                  fast_bias_correction: bool = True) -> dict:
    """Quantize ``model_file`` to int8 with NNCF and write the IR
    ``out_file``: see the module.

    Args:
        config (str | Config): The detector's config (its dataset).
        model_file (str): The exported ``.onnx`` (or an fp32 IR ``.xml``).
        out_file (str): The int8 IR, ``.xml`` (the ``.bin`` beside it).
        num_images (int): Calibration images. Defaults to 300.
        split (str): The config's dataset to draw them from: ``train``,
            ``val`` or ``test``. Defaults to ``val``.
        keep_float (Sequence[str]): Regular expressions of more op names to
            keep in float (matched at the name's start, as NNCF's
            ``IgnoredScope(patterns=...)``), e.g. ``/backbone/conv1/``.
        cfg_options (dict, optional): Config overrides.
        seed (int): Seed of the images' draw. Defaults to 0.
        fast_bias_correction (bool): NNCF's fast bias correction (else its
            slower full one). Defaults to True.

    Returns:
        dict: ``out_file``, ``images`` (calibrated on; fewer than
        ``num_images`` if the dataset has fewer), ``fake_quantize``
        (the int8 model's FakeQuantize ops), ``ignored`` (NNCF's ignored
        scope) and ``seconds``.

    Raises:
        ValueError: see :func:`calibration_images`; ``out_file`` not an
            ``.xml``, a model without mmepsa metadata or already int8.
        ImageError: a calibration image cannot be read (named).
        ImportError: OpenVINO or NNCF missing (the extra named).
    """
    nncf = import_nncf()
    check_ir_file(out_file)  # before the calibration, not after
    start = time.perf_counter()
    paths = calibration_images(config, num_images, split, cfg_options, seed)
    for path in paths:  # fail on a bad image before anything runs
        load_image(path)
    # static_shapes: nothing compiled until a run, and none comes (NNCF
    # takes the model; the runner gives the pre-processing)
    runner = OnnxDetector(model_file, backend='openvino', static_shapes=True)
    if runner.precision == 'int8':
        raise ValueError(f'{model_file} is already an int8 model: quantize '
                         'the exported .onnx')

    def transform(path: str) -> dict:
        img = load_image(path, runner.channel_order)
        return runner.graph_inputs(runner.preprocess(img)[0])

    ignored = nncf.IgnoredScope(
        types=list(IGNORED_TYPES),
        patterns=[POSTPROCESS_PATTERN, *keep_float],
        validate=False)
    nncf_logger = logging.getLogger('nncf')
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)  # not one line per ignored op
    try:
        quantized = nncf.quantize(
            runner.backend.model,
            nncf.Dataset(paths, transform),
            subset_size=len(paths),
            target_device=nncf.TargetDevice.CPU,
            fast_bias_correction=fast_bias_correction,
            ignored_scope=ignored)
    finally:
        nncf_logger.setLevel(level)
    if not is_quantized(quantized):
        raise RuntimeError(f'NNCF quantized nothing in {model_file}')
    save_openvino_ir(quantized, out_file)
    return dict(
        out_file=out_file,
        images=len(paths),
        num_images=num_images,
        fake_quantize=sum(op.get_type_name() == 'FakeQuantize'
                          for op in quantized.get_ops()),
        ignored=dict(types=list(IGNORED_TYPES), patterns=ignored.patterns),
        seconds=round(time.perf_counter() - start, 1),
        model_file=osp.abspath(model_file))
