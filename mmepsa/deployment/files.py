# Copyright (c) mmepsa contributors. All rights reserved.
"""The files a deployment writes, each complete or not at all
(:func:`atomic_write`): the exported ``.onnx``, the OpenVINO IR
(:func:`save_openvino_ir`, its ``.xml`` and ``.bin``), the demo's summary."""
import contextlib
import os
import os.path as osp
import tempfile
from typing import Iterator, Sequence

from .backends import import_openvino, read_openvino_model


def save_openvino_ir(model, out_file: str) -> str:
    """Write an OpenVINO model (an ``openvino.Model`` or a ``.onnx`` path)
    as an IR: ``out_file`` (``.xml``) and the ``.bin`` beside it, float
    weights kept in float32, the mmepsa metadata in its ``rt_info``. Both
    are written to temporary files in the target folder and renamed once
    complete, the ``.bin`` first: a run that fails leaves no ``.xml``.

    Returns:
        str: ``out_file``.

    Raises:
        ValueError: ``out_file`` does not end with ``.xml``.

    Example:
        >>> from mmepsa.deployment import OnnxDetector, save_openvino_ir
        >>> save_openvino_ir('retinanet.onnx', 'retinanet.xml'
        ...                  )  # doctest: +SKIP
        >>> OnnxDetector('retinanet.xml', backend='openvino'
        ...              )('demo.jpg')  # doctest: +SKIP
    """
    ov = import_openvino()
    check_ir_file(out_file)
    if isinstance(model, str):
        model = read_openvino_model(model)
    with atomic_write(out_file, companions=('.bin', )) as tmp:
        ov.save_model(model, tmp, compress_to_fp16=False)
    return out_file


def check_ir_file(out_file: str) -> None:
    """ValueError unless ``out_file`` ends with ``.xml``."""
    if not out_file.endswith('.xml'):
        raise ValueError('out_file must end with .xml (an OpenVINO IR; the '
                         f'weights go to the .bin beside it), got {out_file}')


@contextlib.contextmanager
def atomic_write(out_file: str,
                 companions: Sequence[str] = ()) -> Iterator[str]:
    """A temporary path in ``out_file``'s folder (made if missing), with
    ``out_file``'s extension, for the block to write. When the block ends
    without an error, the files are renamed into place with the
    permissions ``open`` would give them (not ``mkstemp``'s private ones):
    first each companion (the temporary path with its extension replaced
    by one of ``companions``, e.g. an IR's ``.bin``), after an old
    ``out_file`` is removed, then ``out_file`` itself, so that a complete
    ``out_file`` never stands beside an incomplete companion. Whatever is
    left of the temporary files is removed in any case.

    Example:
        >>> from mmepsa.deployment.files import atomic_write
        >>> with atomic_write('work_dirs/summary.json') as tmp:
        ...     with open(tmp, 'w') as f:
        ...         f.write('{}')  # doctest: +SKIP
    """
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    stem, ext = osp.splitext(osp.basename(out_file))
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f'.{stem}.', suffix=ext)
    os.close(fd)
    base = osp.splitext(tmp)[0]
    moves = [(base + c, osp.splitext(out_file)[0] + c)
             for c in companions] + [(tmp, out_file)]
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        if companions and osp.exists(out_file):
            os.remove(out_file)
        for src, dst in moves:
            os.chmod(src, 0o666 & ~umask)
            os.replace(src, dst)
    finally:
        for src, _ in moves:
            if osp.exists(src):
                os.remove(src)
