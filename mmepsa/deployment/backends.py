# Copyright (c) mmepsa contributors. All rights reserved.
"""The runtimes of an exported detector: onnxruntime and OpenVINO, on the
same ``.onnx`` file (OpenVINO also on an IR ``.xml``,
:mod:`mmepsa.deployment.files`), in fp32, bf16 or int8
(:func:`create_backend`).

A backend runs the graph on a dict of numpy inputs and returns its outputs
by name, and carries the model's mmepsa metadata (the ``.onnx`` file's
``metadata_props``; OpenVINO keeps them in the model's ``rt_info``, which
an IR saves). It needs numpy and its runtime only (no torch).

Precisions (:data:`PRECISIONS`):

* ``fp32``: either backend. OpenVINO gets ``INFERENCE_PRECISION_HINT=f32``
  explicitly: on a CPU with AVX512-BF16 or AMX it would pick bf16 itself.
* ``bf16``: OpenVINO, on a CPU whose ``OPTIMIZATION_CAPABILITIES`` list
  ``BF16``; elsewhere :class:`PrecisionError` names the capability
  (no silent fallback to fp32).
* ``int8``: OpenVINO, on an int8 IR written by
  :func:`~mmepsa.deployment.quantize_int8` (its ``FakeQuantize`` ops run
  in int8, the rest in f32). The file decides: ``precision=None`` takes
  ``int8`` for a quantized model and ``fp32`` otherwise, and a precision
  the file does not hold is refused.
* ``int8-bf16``: the int8 IR with the ops left in float run in bf16
  (``INFERENCE_PRECISION_HINT=bf16``; OpenVINO's own choice on a CPU with
  AMX), where the CPU has bf16 as for ``bf16``. OpenVINO's CPU plugin
  also runs in float the quantized convs it has no int8 kernel for (on
  AVX-512 CPUs, grouped convs with few channels per group: most of
  EPSANet's PSA convs).

OpenVINO with ``static_shapes=True`` compiles the model for each input
shape it meets (a few seconds the first time; the last
:data:`STATIC_SHAPES_KEPT` kept) instead of once for any shape: the same
detections, faster where images keep one size (docs/deployment.md).

With ``streams`` > 1 (either backend), a batch of several images is split
into that many parts of consecutive images, run at once, each part on its
own stream with its share of the threads (onnxruntime: a session per
stream; OpenVINO: ``NUM_STREAMS``), and the detections joined in image
order; one image runs on all the threads. No stream's thread waits on
another's between ops: a batch so split costs less per image than run
whole (measured in docs/deployment.md).

OpenVINO and NNCF are the ``openvino`` extra
(``pip install "mmepsa[openvino]"``).

Example:
    >>> import numpy as np
    >>> from mmepsa.deployment import create_backend
    >>> backend = create_backend('retinanet.onnx', 'openvino', 'bf16',
    ...                          threads=2)  # doctest: +SKIP
    >>> outputs = backend.run(
    ...     {'input': np.zeros((1, 3, 320, 320), np.float32)}
    ... )  # doctest: +SKIP
    >>> sorted(outputs)  # doctest: +SKIP
    ['boxes', 'labels', 'scores']
"""
import json
import os
import os.path as osp
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import numpy as np

#: The key of the model's metadata (``metadata_props``; OpenVINO:
#: ``rt_info``) that the runner reads: a JSON object.
METADATA_KEY = 'mmepsa'

#: The runtimes :func:`create_backend` knows.
BACKENDS = ('onnxruntime', 'openvino')
#: The precisions; all but ``fp32`` are OpenVINO's.
PRECISIONS = ('fp32', 'bf16', 'int8', 'int8-bf16')
#: The precisions of an int8 model (the others: of a float one).
INT8_PRECISIONS = ('int8', 'int8-bf16')
#: OpenVINO's ``INFERENCE_PRECISION_HINT`` for each precision (int8: the
#: precision of the ops left in float).
OPENVINO_HINTS = {
    'fp32': 'f32',
    'bf16': 'bf16',
    'int8': 'f32',
    'int8-bf16': 'bf16'
}
#: The compiles an OpenVINO backend with ``static_shapes`` keeps (the last
#: input shapes met, for one run at a time or for streams).
STATIC_SHAPES_KEPT = 4
#: Where the metadata lies in an OpenVINO model's ``rt_info``: OpenVINO's
#: ONNX reader puts ``metadata_props`` under ``framework``.
RT_INFO_PATHS = (['framework', METADATA_KEY], [METADATA_KEY])


class PrecisionError(ValueError):
    """A precision the backend, the model file or the CPU cannot run."""


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            'onnxruntime is needed to run ONNX models: pip install '
            '"mmepsa[deploy]" (or pip install -r requirements/deploy.txt)'
        ) from None
    return onnxruntime


def openvino_requirements_error(name: str) -> ImportError:
    """The error for a missing package of the ``openvino`` extra."""
    return ImportError(
        f'{name} is needed for the OpenVINO backend and int8 quantization: '
        'pip install "mmepsa[openvino]" (or pip install -r '
        'requirements/openvino.txt)')


def import_openvino():
    """The ``openvino`` module, or an ImportError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise openvino_requirements_error('openvino') from None
    return openvino


def create_session(model_file: str,
                   threads: Optional[int] = None,
                   providers: Sequence[str] = ('CPUExecutionProvider', )):
    """An onnxruntime ``InferenceSession`` of ``model_file`` with
    ``threads`` intra-op threads (default: onnxruntime's, one per core) and
    one inter-op thread.

    Raises:
        FileNotFoundError: no such file.
        ValueError: onnxruntime cannot load it.
    """
    ort = _ort()
    if not osp.isfile(model_file):
        raise FileNotFoundError(f'ONNX model not found: {model_file}')
    options = ort.SessionOptions()
    if threads is not None:
        _check_threads(threads)
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(
            model_file, sess_options=options, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime's own errors
        raise ValueError(f'onnxruntime cannot load {model_file}: '
                         f'{type(e).__name__}: {e}') from e


def _check_threads(threads: Optional[int]) -> None:
    if threads is not None and threads < 1:
        raise ValueError(f'threads must be >= 1, got {threads}')


def stream_threads(threads: Optional[int], streams: int) -> Optional[int]:
    """The threads of each of ``streams`` streams sharing ``threads``
    (None: one per core).

    Raises:
        ValueError: ``streams`` < 1, or more streams than threads.
    """
    if streams < 1:
        raise ValueError(f'streams must be >= 1, got {streams}')
    total = threads or os.cpu_count() or 1
    if streams > total:
        raise ValueError(f'streams ({streams}) must be at most the threads '
                         f'({total}): each stream needs a thread')
    return total // streams


def split_batch(inputs: Dict[str, np.ndarray],
                parts: int) -> List[Dict[str, np.ndarray]]:
    """The graph's ``inputs`` (each batched along its first axis) as
    ``parts`` batches of consecutive images (sizes differing by one at
    most; fewer parts than images asked for are not made)."""
    count = len(next(iter(inputs.values())))
    bounds = np.linspace(0, count, min(parts, count) + 1).round().astype(int)
    return [{name: value[i:j]
             for name, value in inputs.items()}
            for i, j in zip(bounds[:-1], bounds[1:])]


def join_outputs(parts: Sequence[Dict[str, np.ndarray]],
                 inputs: Sequence[Dict[str,
                                       np.ndarray]]) -> Dict[str, np.ndarray]:
    """The outputs of the batches :func:`split_batch` made (``inputs``)
    as one batch's: each output's detections joined, ``image_ids``
    counted on from each part's first image."""
    first = np.cumsum([0] + [len(next(iter(x.values()))) for x in inputs])
    joined = {}
    for name in parts[0]:
        values = [part[name] for part in parts]
        if name == 'image_ids':
            values = [v + offset for v, offset in zip(values, first)]
        joined[name] = np.concatenate(values)
    return joined


def backend_label(backend: str, precision: str) -> str:
    """The name of a backend and precision in results and tables:
    ``onnxruntime``, ``openvino`` (fp32), ``openvino-bf16``,
    ``openvino-int8``, ``openvino-int8-bf16``."""
    return backend if precision == 'fp32' else f'{backend}-{precision}'


def _check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {", ".join(allowed)}; got '
                         f'{value!r}')


class Backend:
    """The interface of :func:`create_backend`'s backends.

    Attributes:
        name (str): One of :data:`BACKENDS`.
        precision (str): One of :data:`PRECISIONS`.
        model_file (str): The file it runs.
        metadata (dict | None): The model's mmepsa metadata (None: the file
            was not exported by :func:`~mmepsa.deployment.export_onnx`).
        output_names (list[str]): The graph's outputs, in order.
    """
    name = ''

    def __init__(self,
                 model_file: str,
                 precision: str,
                 threads: Optional[int] = None,
                 streams: int = 1) -> None:
        _check_threads(threads)
        self.model_file = model_file
        self.precision = precision
        self.threads = threads
        self.streams = int(streams)
        per_stream = stream_threads(threads, self.streams)
        #: The threads of each stream (None: one stream).
        self.stream_threads = per_stream if self.streams > 1 else None
        self.metadata: Optional[dict] = None
        self.output_names: List[str] = []

    @property
    def label(self) -> str:
        """:func:`backend_label` of this backend."""
        return backend_label(self.name, self.precision)

    def run(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the graph on ``inputs`` (by input name): its outputs by
        name. With :attr:`streams` > 1, a batch of several images runs
        split over the streams (:func:`split_batch`)."""
        if self.streams == 1 or len(next(iter(inputs.values()))) == 1:
            return self.run_whole(inputs)
        parts = split_batch(inputs, self.streams)
        return join_outputs(self.run_streams(parts), parts)

    def run_whole(self, inputs: Dict[str,
                                     np.ndarray]) -> Dict[str, np.ndarray]:
        """One run of the graph on all the threads."""
        raise NotImplementedError

    def run_streams(self, parts: Sequence[Dict[str, np.ndarray]]
                    ) -> List[Dict[str, np.ndarray]]:
        """Run the graph on each of ``parts`` at once, part ``i`` on stream
        ``i``: their outputs."""
        raise NotImplementedError


class OnnxRuntimeBackend(Backend):
    """onnxruntime (fp32) on an ``.onnx`` file: :func:`create_session`.

    Example:
        >>> from mmepsa.deployment.backends import OnnxRuntimeBackend
        >>> OnnxRuntimeBackend('retinanet.onnx').label  # doctest: +SKIP
        'onnxruntime'
    """
    name = 'onnxruntime'

    def __init__(self,
                 model_file: str,
                 threads: Optional[int] = None,
                 providers: Sequence[str] = ('CPUExecutionProvider', ),
                 streams: int = 1):
        super().__init__(model_file, 'fp32', threads, streams)
        if model_file.endswith(('.xml', '.bin')):
            raise ValueError(
                f'{model_file} is an OpenVINO IR: run it with the openvino '
                "backend (backend='openvino', --backend openvino)")
        self.providers = providers
        self.session = create_session(model_file, threads, providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY in meta:
            self.metadata = json.loads(meta[METADATA_KEY])
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: A session per stream and the threads running them (made at the
        #: first batch split).
        self.stream_sessions: list = []
        self.pool: Optional[ThreadPoolExecutor] = None

    def run_whole(self, inputs: Dict[str,
                                     np.ndarray]) -> Dict[str, np.ndarray]:
        return self.run_session(self.session, inputs)

    def run_session(self, session,
                    inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self.output_names, session.run(None, inputs)))

    def run_streams(self, parts: Sequence[Dict[str, np.ndarray]]
                    ) -> List[Dict[str, np.ndarray]]:
        if not self.stream_sessions:
            self.stream_sessions = [
                create_session(self.model_file, self.stream_threads,
                               self.providers) for _ in range(self.streams)
            ]
            self.pool = ThreadPoolExecutor(self.streams)
        runs = [
            self.pool.submit(self.run_session, session, part)
            for session, part in zip(self.stream_sessions, parts)
        ]
        return [run.result() for run in runs]


def cpu_capabilities(core=None) -> List[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. ``FP32``,
    ``BF16``, ``INT8``)."""
    core = core or import_openvino().Core()
    return list(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


def check_bf16(core=None, precision: str = 'bf16') -> None:
    """Raise :class:`PrecisionError` naming ``precision`` unless the CPU
    runs bf16 (OpenVINO's capability ``BF16``: AVX512-BF16 or AMX)."""
    capabilities = cpu_capabilities(core)
    if 'BF16' not in capabilities:
        raise PrecisionError(
            f'precision {precision} needs a CPU with bfloat16 instructions '
            '(AVX512-BF16 or AMX): OpenVINO lists no BF16 among this CPU\'s '
            f'OPTIMIZATION_CAPABILITIES ({", ".join(capabilities)}); use '
            'fp32 or int8')


def is_quantized(model) -> bool:
    """Whether an OpenVINO model holds ``FakeQuantize`` ops (NNCF's int8
    quantization)."""
    return any(op.get_type_name() == 'FakeQuantize' for op in model.get_ops())


def openvino_metadata(model) -> Optional[dict]:
    """The mmepsa metadata in an OpenVINO model's ``rt_info`` (read from an
    ``.onnx`` file or an IR), or None."""
    for path in RT_INFO_PATHS:
        if model.has_rt_info(path):
            return json.loads(model.get_rt_info(path).astype(str))
    return None


def read_openvino_model(model_file: str, core=None):
    """``model_file`` (``.onnx`` or IR ``.xml``) as an ``openvino.Model``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another extension, or OpenVINO cannot read it.
    """
    core = core or import_openvino().Core()
    if not osp.isfile(model_file):
        raise FileNotFoundError(f'model not found: {model_file}')
    if not model_file.endswith(('.onnx', '.xml')):
        raise ValueError('OpenVINO runs an .onnx file or an IR .xml (with '
                         f'its .bin beside it), got {model_file}')
    try:
        return core.read_model(model_file)
    except Exception as e:  # noqa: BLE001 - OpenVINO's own errors
        raise ValueError(f'OpenVINO cannot read {model_file}: '
                         f'{type(e).__name__}: {e}') from e


class OpenVINOBackend(Backend):
    """OpenVINO's CPU plugin on an ``.onnx`` file or an IR ``.xml``, with
    ``INFERENCE_PRECISION_HINT`` set for ``precision`` (see the module),
    ``INFERENCE_NUM_THREADS`` to ``threads`` and ``PERFORMANCE_HINT``
    ``LATENCY`` (one run at a time); a batch split over ``streams`` runs on
    the model compiled with ``NUM_STREAMS``, an infer request per stream.

    Args:
        model_file (str): ``.onnx`` or ``.xml``.
        precision (str, optional): One of :data:`PRECISIONS`; None: what
            the file holds (``int8`` if quantized, else ``fp32``).
        threads (int, optional): Inference threads (default: OpenVINO's).
        static_shapes (bool): Compile the model for each input shape met
            (the last :data:`STATIC_SHAPES_KEPT` kept) rather than run the
            one compiled for any shape. Defaults to False.
        streams (int): Split a batch over this many streams (see the
            module). Defaults to 1.

    Raises:
        PrecisionError: bf16 or int8-bf16 on a CPU without bf16; int8 or
            int8-bf16 on a float model, fp32 or bf16 on an int8 one.

    Example:
        >>> from mmepsa.deployment.backends import OpenVINOBackend
        >>> OpenVINOBackend('retinanet-int8.xml').label  # doctest: +SKIP
        'openvino-int8'
    """
    name = 'openvino'

    def __init__(self,
                 model_file: str,
                 precision: Optional[str] = None,
                 threads: Optional[int] = None,
                 static_shapes: bool = False,
                 streams: int = 1):
        ov = import_openvino()
        _check_threads(threads)
        core = ov.Core()
        model = read_openvino_model(model_file, core)
        quantized = is_quantized(model)
        if precision is None:
            precision = 'int8' if quantized else 'fp32'
        if precision in INT8_PRECISIONS and not quantized:
            raise PrecisionError(
                f'precision {precision} needs an int8 model; {model_file} '
                'is not quantized: make one with tools/deployment/quantize.py '
                'and pass its .xml')
        if precision not in INT8_PRECISIONS and quantized:
            raise PrecisionError(
                f'{model_file} is an int8 model: run it with precision '
                f'int8 or int8-bf16, or run the float .onnx it came from in '
                f'{precision}')
        if OPENVINO_HINTS[precision] == 'bf16':
            check_bf16(core, precision)
        super().__init__(model_file, precision, threads, streams)
        self.core = core
        self.model = model
        self.metadata = openvino_metadata(model)
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.static_shapes = bool(static_shapes)
        #: The infer requests of each compile, by (streams, input shapes):
        #: the last :data:`STATIC_SHAPES_KEPT` kept.
        self.compiled_requests: 'OrderedDict[tuple, list]' = OrderedDict()
        #: The model compiled last (None: with static_shapes, until a run).
        self.compiled = None
        if not self.static_shapes:
            self.requests()

    def config(self, streams: bool = False) -> dict:
        """The CPU plugin's settings: for one run at a time, or (``streams``)
        for :attr:`streams` at once."""
        config = {'INFERENCE_PRECISION_HINT': OPENVINO_HINTS[self.precision]}
        if streams:
            config['NUM_STREAMS'] = self.streams
        else:
            config['PERFORMANCE_HINT'] = 'LATENCY'
        if self.threads is not None:
            config['INFERENCE_NUM_THREADS'] = int(self.threads)
        return config

    def compile(self, model, streams: bool = False):
        """``model`` compiled with this backend's :meth:`config`, and
        checked to run in the precision asked (:attr:`compiled`)."""
        compiled = self.core.compile_model(model, 'CPU', self.config(streams))
        got = str(compiled.get_property('INFERENCE_PRECISION_HINT'))
        want = OPENVINO_HINTS[self.precision]
        if _type_name(got) != _type_name(want):
            raise PrecisionError(
                f'OpenVINO compiled {self.model_file} with inference '
                f'precision {got}, not the {want} that {self.precision} asks '
                'for')
        self.compiled = compiled
        return compiled

    def requests(self,
                 inputs: Optional[Dict[str, np.ndarray]] = None,
                 streams: bool = False) -> list:
        """The infer requests (one, or one per stream) of the model
        compiled for any input shape or, with :attr:`static_shapes`, for
        the shapes of ``inputs``: compiled the first time, kept while
        among the last :data:`STATIC_SHAPES_KEPT` compiles.

        Raises:
            ValueError: the model cannot take these shapes.
        """
        shapes = None
        if self.static_shapes:
            shapes = tuple((name, tuple(int(d) for d in value.shape))
                           for name, value in sorted(inputs.items()))
        key = (streams, shapes)
        if key in self.compiled_requests:
            self.compiled_requests.move_to_end(key)
            return self.compiled_requests[key]
        model = self.model
        if shapes is not None:
            model = model.clone()
            try:
                model.reshape({name: list(shape) for name, shape in shapes})
            except Exception as e:  # noqa: BLE001 - OpenVINO's own errors
                raise ValueError(
                    f'{self.model_file} cannot take inputs of shapes '
                    f'{dict(shapes)}: {e}') from e
        compiled = self.compile(model, streams)
        requests = [
            compiled.create_infer_request()
            for _ in range(self.streams if streams else 1)
        ]
        self.compiled_requests[key] = requests
        if len(self.compiled_requests) > STATIC_SHAPES_KEPT:
            self.compiled_requests.popitem(last=False)
        return requests

    def outputs(self, request) -> Dict[str, np.ndarray]:
        return {
            name: request.get_output_tensor(i).data.copy()
            for i, name in enumerate(self.output_names)
        }

    def run_whole(self, inputs: Dict[str,
                                     np.ndarray]) -> Dict[str, np.ndarray]:
        request = self.requests(inputs)[0]
        request.infer(inputs)
        return self.outputs(request)

    def run_streams(self, parts: Sequence[Dict[str, np.ndarray]]
                    ) -> List[Dict[str, np.ndarray]]:
        requests = [
            self.requests(part, streams=True)[i]
            for i, part in enumerate(parts)
        ]
        for request, part in zip(requests, parts):
            request.start_async(part)
        for request in requests:
            request.wait()
        return [self.outputs(request) for request in requests]


def _type_name(value: str) -> str:
    """OpenVINO's element type names as one spelling (``float32`` and
    ``f32``, ``bfloat16`` and ``bf16``)."""
    value = value.lower().replace("<type: '", '').rstrip("'>")
    return {'float32': 'f32', 'bfloat16': 'bf16'}.get(value, value)


def create_backend(model_file: str,
                   backend: str = 'onnxruntime',
                   precision: Optional[str] = None,
                   threads: Optional[int] = None,
                   providers: Sequence[str] = ('CPUExecutionProvider', ),
                   static_shapes: bool = False,
                   streams: int = 1) -> Backend:
    """A backend running ``model_file``: see the module.

    Args:
        model_file (str): An ``.onnx`` file exported by
            :func:`~mmepsa.deployment.export_onnx`, or (OpenVINO) an IR
            ``.xml`` of one (:func:`save_openvino_ir`,
            :func:`~mmepsa.deployment.quantize_int8`).
        backend (str): ``onnxruntime`` or ``openvino``. Defaults to
            ``onnxruntime``.
        precision (str, optional): One of :data:`PRECISIONS` (all but
            ``fp32`` OpenVINO's); None: what the file holds.
        threads (int, optional): Inference threads (default: the runtime's,
            one per core).
        providers (Sequence[str]): onnxruntime's execution providers.
        static_shapes (bool): OpenVINO: compile the model for each input
            shape (:class:`OpenVINOBackend`). Defaults to False.
        streams (int): Split a batch over this many streams, each with its
            share of ``threads`` (see the module). Defaults to 1.

    Returns:
        Backend: with ``run(inputs) -> outputs`` by name, ``metadata``,
        ``output_names``, ``precision``, ``label``.

    Raises:
        ValueError: an unknown backend or precision, an IR for onnxruntime,
            a file the runtime cannot load, more streams than threads.
        PrecisionError: a precision the backend, file or CPU cannot run.
        ImportError: the runtime is not installed (the message names the
            extra).
    """
    _check_choice('backend', backend, BACKENDS)
    if precision is not None:
        _check_choice('precision', precision, PRECISIONS)
    if backend == 'openvino':
        return OpenVINOBackend(model_file, precision, threads, static_shapes,
                               streams)
    if static_shapes:
        raise ValueError('static_shapes (--static-shapes) is the openvino '
                         "backend's (backend='openvino', --backend openvino)")
    if precision not in (None, 'fp32'):
        raise PrecisionError(
            f'precision {precision} needs the openvino backend '
            "(backend='openvino', --backend openvino); onnxruntime runs "
            'fp32 only')
    return OnnxRuntimeBackend(model_file, threads, providers, streams)
