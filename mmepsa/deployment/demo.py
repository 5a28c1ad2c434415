# Copyright (c) mmepsa contributors. All rights reserved.
"""``make deploy-demo``: the demo Mask R-CNN (``make demo``'s) and RetinaNet
deployed on every runtime and precision this CPU offers, measured against
PyTorch in one table.

For each of :data:`DEMO_CONFIGS`:

1. the checkpoint named by ``<work_dir>/last_checkpoint``
   (``work_dirs/demo``, ``work_dirs/demo_retinanet``), trained first by the
   demo when there is none;
2. :func:`~mmepsa.deployment.export_onnx` to ``<out_dir>/<config>.onnx``
   and :func:`~mmepsa.deployment.quantize_int8` of it to
   ``<out_dir>/<config>_int8.xml`` (calibrated on the demo train set);
3. each row of :data:`ROWS` evaluated on the demo val set against PyTorch
   (:func:`~mmepsa.deployment.evaluate_onnx`); bf16 only where the CPU has
   it (the table says when it lacks it); OpenVINO compiled for each input
   shape (``static_shapes``, as PyTorch's fast path tunes its convs for
   each input size; ``--dynamic-shapes``: once for any shape);
4. the latency of PyTorch eager and every row, taking turns, on the demo
   val images of :data:`LATENCY_SHAPE` (resized), run one by one and in a
   batch (:data:`LATENCY_BATCH_SIZES`;
   :func:`~mmepsa.deployment.compare_latency`), the batch split over a
   stream per thread (``streams``; ``--streams 1``: run whole).

``<out_dir>/summary.json`` holds everything, the printed table the bounds'
verdicts (:func:`check_bounds`). Exits 0 when every bound is met, 3
otherwise.

Usage::

    python -m mmepsa.deployment.demo [--out-dir DIR] [--no-latency]
        [--latency-shape 4x800x1216] [--batch-sizes 1 4] [--runs 5]
        [--threads 2] [--streams N] [--calibration-images 300]
        [--dynamic-shapes]
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

#: The demo configs, under ``configs/demo/``.
DEMO_CONFIGS = ('mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
                'retinanet_epsanet50-s_fpn_demo-shapes.py')

#: The deployed rows: (backend, precision).
ROWS = (('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('openvino', 'bf16'),
        ('openvino', 'int8'), ('openvino', 'int8-bf16'))

#: The latency input: four val images resized to 800 x 1216, run one by
#: one and as one batch of four (:data:`LATENCY_BATCH_SIZES`).
LATENCY_SHAPE = (4, 3, 800, 1216)
LATENCY_BATCH_SIZES = (1, 4)

#: A batch may cost this much more per image than one image and pass (the
#: paired ratio's spread on a quiet machine).
BATCH_TOLERANCE = 0.02

#: The fastest row within its accuracy bound takes at most this share of
#: PyTorch eager's time (the Mask R-CNN at 1x3x800x1216).
SPEED_BOUND = 1 / 3


def find_config(name: str) -> str:
    """``configs/demo/<name>`` of the checkout in the working directory,
    else of the installed package (``mmepsa/.mim/configs``).

    Raises:
        FileNotFoundError: in neither place.
    """
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))  # mmepsa/
    for root in (os.getcwd(), osp.join(package, '.mim'), osp.dirname(package)):
        path = osp.join(root, 'configs', 'demo', name)
        if osp.isfile(path):
            return path
    raise FileNotFoundError(f'demo config configs/demo/{name} not found '
                            '(run from the mmepsa checkout)')


def demo_checkpoint(config: str, train: bool = True) -> str:
    """The checkpoint of the demo ``config`` (``<work_dir>/
    last_checkpoint``), trained first by the demo when there is none (or
    ``FileNotFoundError`` when ``train`` is False); the demo data is made
    if it is missing."""
    from mmepsa.demo.trainer import ensure_data, load_demo_config, run_demo
    cfg = load_demo_config(config)
    pointer = osp.join(cfg.work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            checkpoint = f.read().strip()
        if osp.isfile(checkpoint):
            ensure_data(cfg)
            return checkpoint
    if not train:
        raise FileNotFoundError(f'no checkpoint in {cfg.work_dir}')
    print(
        f'[deploy-demo] no checkpoint in {cfg.work_dir}: training '
        f'{osp.basename(config)} first (as make demo)',
        flush=True)
    summary = run_demo(cfg)
    return summary['outputs']['checkpoint']


def run_deploy_demo(out_dir: str = 'work_dirs/deploy-demo',
                    latency: bool = True,
                    shape: Sequence[int] = LATENCY_SHAPE,
                    batch_sizes: Sequence[int] = LATENCY_BATCH_SIZES,
                    threads: int = 2,
                    configs: Sequence[str] = DEMO_CONFIGS,
                    rows: Sequence[Tuple[str, str]] = ROWS,
                    runs: int = 5,
                    calibration_images: int = 300,
                    static_shapes: bool = True,
                    streams: Optional[int] = None) -> dict:
    """Train (if needed), export, quantize, evaluate and time the demo
    detectors on every row; returns the summary (also in
    ``<out_dir>/summary.json``), with ``bounds`` from :func:`check_bounds`.

    Example:
        >>> from mmepsa.deployment.demo import run_deploy_demo
        >>> summary = run_deploy_demo()  # doctest: +SKIP
        >>> summary['ok']  # doctest: +SKIP
        True
    """
    from .backends import (INT8_PRECISIONS, OPENVINO_HINTS, PrecisionError,
                           backend_label, check_bf16, stream_threads)
    from .evaluate import evaluate_onnx
    from .export import export_onnx
    from .latency import compare_latency, deploy_machine_info
    from .quantize import calibration_images as calibration_set
    from .quantize import quantize_int8

    streams = threads if streams is None else streams
    stream_threads(threads, streams)  # a bad value fails before the work
    os.makedirs(out_dir, exist_ok=True)
    summary = dict(
        models={},
        machine=deploy_machine_info(threads),
        static_shapes=static_shapes,
        streams=streams)
    skipped = {}
    for backend, precision in rows:
        try:
            if backend == 'openvino' and OPENVINO_HINTS[precision] == 'bf16':
                check_bf16(precision=precision)
        except PrecisionError as e:
            skipped[backend_label(backend, precision)] = str(e)
    checkpoints = {
        name: demo_checkpoint(find_config(name))
        for name in configs
    }
    for name in configs:
        config, checkpoint = find_config(name), checkpoints[name]
        stem = osp.splitext(name)[0]
        files = {'fp32': osp.join(out_dir, stem + '.onnx')}
        _say(f'exporting {checkpoint} to {files["fp32"]}')
        export = export_onnx(config, checkpoint, files['fp32'])
        model = dict(
            export=dict(ops=export['ops'], agreement=export.get('agreement')),
            latency=None,
            skipped=dict(skipped))
        if any(p in INT8_PRECISIONS for _, p in rows):
            files['int8'] = osp.join(out_dir, stem + '_int8.xml')
            _say(f'quantizing to int8 ({files["int8"]}), '
                 f'{calibration_images} train images')
            model['int8'] = quantize_int8(
                config,
                files['fp32'],
                files['int8'],
                num_images=calibration_images,
                split='train')
        models = [(files['int8' if p in INT8_PRECISIONS else 'fp32'], b, p)
                  for b, p in rows if backend_label(b, p) not in skipped]
        _say(f'evaluating {len(models)} rows and PyTorch on the val set')
        evaluation = evaluate_onnx(
            config,
            checkpoint=checkpoint,
            threads=threads,
            models=models,
            static_shapes=static_shapes)
        model['rows'] = evaluation['rows']
        model['metrics'] = evaluation['metrics']
        if latency:
            _say(f'latency of {stem} on {shape[0]} images of '
                 f'{shape[2]}x{shape[3]} in batches of {list(batch_sizes)}: '
                 f'PyTorch eager and {len(models)} rows, {runs} runs taking '
                 'turns')
            model['latency'] = compare_latency(
                config,
                checkpoint,
                shape=shape,
                threads=threads,
                warmup=1,
                runs=runs,
                rows=[backend_label(b, p) for _, b, p in models] + ['pytorch'],
                models=models,
                images=calibration_set(config, shape[0]),
                batch_sizes=batch_sizes,
                static_shapes=static_shapes,
                streams=streams)
        summary['models'][stem] = model
        _write_json(osp.join(out_dir, 'summary.json'), summary)
    summary['bounds'] = check_bounds(summary)
    summary['ok'] = all(b['ok'] for b in summary['bounds'])
    _write_json(osp.join(out_dir, 'summary.json'), summary)
    print(format_summary(summary, out_dir))
    return summary


def _say(text: str) -> None:
    print(f'[deploy-demo] {text}', flush=True)


def check_bounds(summary: dict) -> List[dict]:
    """The bounds of the deployment table, each ``{'bound', 'ok',
    'detail'}``: every row's accuracy within its precision's tolerance
    (``evaluate_onnx``'s ``ok``); the fastest row within it takes at most
    :data:`SPEED_BOUND` of PyTorch eager's time for the Mask R-CNN, the
    images run one by one (the first batch size); a batch costs no more per
    image than one image on the same images (paired ratio, within
    :data:`BATCH_TOLERANCE`), row by row."""
    bounds = []
    for stem, model in summary['models'].items():
        for label, result in model['rows'].items():
            bounds.append(
                dict(
                    bound=f'{stem} {label}: mAP within tolerance',
                    ok=bool(result['ok']),
                    detail=result['differences']))
        latency = model['latency']
        if not latency:
            continue
        sizes = list(latency['batches'])
        single = latency['batches'][sizes[0]]
        good = [label for label, r in model['rows'].items() if r['ok']]
        ratios = {
            label: single['vs_pytorch'][label]['median']
            for label in good if label in single['vs_pytorch']
        }
        _, _, h, w = latency['shape']
        if stem.startswith('mask-rcnn') and ratios:
            best = min(ratios, key=ratios.get)
            bounds.append(
                dict(
                    bound=f'{stem}: fastest row within its accuracy bound '
                    f'<= {SPEED_BOUND:.2f} of PyTorch eager at batch '
                    f'{sizes[0]} of {h}x{w}',
                    ok=ratios[best] <= SPEED_BOUND,
                    detail=f'{best}: {ratios[best]:.3f}'))
        for size in sizes[1:]:
            batch = latency['batches'][size]
            for label in latency['model_rows']:
                one = single['rows'][label]['per_image_ms']
                per = batch['rows'][label]['per_image_ms']
                ratio = batch['vs_first_batch_size'][label]['median']
                bounds.append(
                    dict(
                        bound=f'{stem} {label}: batch {size} costs no more '
                        f'per image than batch {sizes[0]}',
                        ok=ratio <= 1 + BATCH_TOLERANCE,
                        detail=f'{per:.0f} ms against {one:.0f} ms, paired '
                        f'ratio {ratio:.3f}'))
    return bounds


def format_summary(summary: dict, out_dir: str) -> str:
    """The table ``make deploy-demo`` prints: per model and row, mAP and
    mAP@0.5 (bbox, segm) on the demo val set, latency (median ms per image
    at each batch size) and its paired ratio to PyTorch eager at the first;
    then the bounds and the machine."""
    from .latency import describe_machine
    shapes = ('compiled for each input shape' if summary.get('static_shapes')
              else 'compiled once for any input shape')
    streams = summary.get('streams', 1)
    lines = [
        '', '=' * 72, 'deploy-demo: demo val set; latency on val '
        f'images resized, median of taking turns; OpenVINO {shapes}; '
        f'batches split over {streams} stream(s)'
    ]
    for stem, model in summary['models'].items():
        latency = model['latency']
        header = ['row', 'bbox mAP / @0.5', 'segm mAP / @0.5']
        if latency:  # ms per image at each batch size, ratio at the first
            sizes = list(latency['batches'])
            _, _, h, w = latency['shape']
            header += [f'ms per image, batch {b} of {h}x{w}'
                       for b in sizes] + ['/ PyTorch']
        lines += [
            '', f'### {stem}', '', '| ' + ' | '.join(header) + ' |',
            '| --- | --- | --- |' + ' ---: |' * (len(header) - 3)
        ]
        for name, metrics in model['metrics'].items():
            cells = [name, _map(metrics, 'bbox'), _map(metrics, 'segm')]
            if latency:
                for b in sizes:
                    row = latency['batches'][b]['rows'].get(name)
                    cells.append(
                        '' if row is None else f"{row['per_image_ms']:.0f}")
                ratio = latency['batches'][sizes[0]]['vs_pytorch'].get(name)
                cells.append('1.00' if name == 'pytorch' else
                             f"{ratio['median']:.2f}" if ratio else '')
            lines.append('| ' + ' | '.join(cells) + ' |')
        for label, why in model['skipped'].items():
            lines.append(f'{label}: not run: {why}')
    lines += ['', 'bounds:']
    for b in summary['bounds']:
        lines.append(f"  [{'ok' if b['ok'] else 'NOT MET'}] {b['bound']} "
                     f"({b['detail']})")
    lines += [
        '',
        describe_machine(summary['machine']),
        f"all bounds met: {summary['ok']}; details in "
        f'{osp.join(out_dir, "summary.json")}', '=' * 72
    ]
    return '\n'.join(lines)


def _map(metrics: dict, kind: str) -> str:
    if f'coco/{kind}_mAP' not in metrics:
        return ''
    return (f"{metrics[f'coco/{kind}_mAP']:.3f} / "
            f"{metrics[f'coco/{kind}_mAP_50']:.3f}")


def _write_json(path: str, data: dict) -> None:
    from .files import atomic_write
    with atomic_write(path) as tmp, open(tmp, 'w') as f:
        json.dump(data, f, indent=2, default=str)


def parse_args(argv: Optional[List[str]] = None):
    from mmepsa.analysis.benchmark import parse_nchw
    parser = argparse.ArgumentParser(
        description='Deploy the demo Mask R-CNN and RetinaNet on every '
        'runtime and precision (onnxruntime; OpenVINO fp32, bf16, int8, '
        'int8-bf16) and measure them against PyTorch on the demo val set')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/deploy-demo',
        help='where the models and summary.json go')
    parser.add_argument(
        '--no-latency', action='store_true', help='skip the latency')
    parser.add_argument(
        '--latency-shape',
        type=parse_nchw,
        default=LATENCY_SHAPE,
        metavar='NxHxW',
        help='latency input: N val images resized to H x W (default '
        '4x800x1216)')
    parser.add_argument(
        '--batch-sizes',
        type=int,
        nargs='+',
        default=list(LATENCY_BATCH_SIZES),
        help='the latency\'s batch sizes, each dividing N; the first is '
        'the one the speed bound reads (default 1 4)')
    parser.add_argument(
        '--runs',
        type=int,
        default=5,
        help='timed rounds of the latency (default 5)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='threads of torch and the runtimes (default 2)')
    parser.add_argument(
        '--streams',
        type=int,
        help='split the runtimes\' batches over this many streams at once, '
        'the threads shared among them (default: one per thread; 1: run a '
        'batch whole)')
    parser.add_argument(
        '--calibration-images',
        type=int,
        default=300,
        help='int8 calibration images from the train set (default 300)')
    parser.add_argument(
        '--dynamic-shapes',
        action='store_true',
        help='compile each OpenVINO model once for any input shape (default: '
        'for each input shape met)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    summary = run_deploy_demo(
        args.out_dir,
        not args.no_latency,
        args.latency_shape,
        args.batch_sizes,
        args.threads,
        runs=args.runs,
        calibration_images=args.calibration_images,
        static_shapes=not args.dynamic_shapes,
        streams=args.streams)
    return 0 if summary['ok'] else 3


if __name__ == '__main__':
    sys.exit(main())
