# Copyright (c) mmepsa contributors. All rights reserved.
"""``make deploy-demo``: the two demo detectors (the Mask R-CNN of ``make
demo`` and the RetinaNet of the same data) exported to ONNX and evaluated
under onnxruntime against PyTorch on the demo val set, plus the Mask
R-CNN's latency.

Steps, for each of :data:`DEMO_CONFIGS`:

1. the checkpoint named by ``<work_dir>/last_checkpoint`` (the config's
   ``work_dir``: ``work_dirs/demo`` and ``work_dirs/demo_retinanet``); if
   there is none, the demo trains it first (:func:`mmepsa.demo.run_demo`,
   as ``make demo``);
2. :func:`~mmepsa.deployment.export_onnx` to
   ``work_dirs/deploy-demo/<config name>.onnx``;
3. :func:`~mmepsa.deployment.evaluate_onnx` with the checkpoint: both
   sides' COCO metrics, their differences and the detections' IoUs,
   written to ``work_dirs/deploy-demo/<config name>.json``;

then :func:`~mmepsa.deployment.compare_latency` of the Mask R-CNN
(``latency.json``) and ``summary.json`` with all of it. Exits 0 when every
comparison is within the tolerances (``ok``), 3 otherwise.

Usage::

    python -m mmepsa.deployment.demo [--out-dir DIR] [--no-latency]
        [--latency-shape 1x800x1216] [--threads 2]
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

#: The demo configs, under ``configs/demo/``.
DEMO_CONFIGS = ('mask-rcnn_epsanet50-s_fpn_demo-shapes.py',
                'retinanet_epsanet50-s_fpn_demo-shapes.py')

#: The config whose latency is measured.
LATENCY_CONFIG = DEMO_CONFIGS[0]


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
                    latency_shape=(1, 3, 800, 1216),
                    threads: int = 2,
                    configs=DEMO_CONFIGS) -> dict:
    """Train (if needed), export, evaluate and time the demo detectors;
    returns the summary (also in ``<out_dir>/summary.json``).

    Example:
        >>> from mmepsa.deployment.demo import run_deploy_demo
        >>> summary = run_deploy_demo()  # doctest: +SKIP
        >>> summary['ok']  # doctest: +SKIP
        True
    """
    from .evaluate import evaluate_onnx
    from .export import export_onnx
    from .latency import compare_latency, format_latency

    os.makedirs(out_dir, exist_ok=True)
    summary = dict(models={}, ok=True)
    checkpoints = {}
    for name in configs:
        config = find_config(name)
        checkpoints[name] = demo_checkpoint(config)
    for name in configs:
        config, checkpoint = find_config(name), checkpoints[name]
        stem = osp.splitext(name)[0]
        onnx_file = osp.join(out_dir, stem + '.onnx')
        print(
            f'[deploy-demo] exporting {checkpoint} to {onnx_file}', flush=True)
        export = export_onnx(config, checkpoint, onnx_file)
        print(
            f'[deploy-demo] evaluating {onnx_file} (onnxruntime) and '
            f'{checkpoint} (PyTorch) on the val set',
            flush=True)
        result = evaluate_onnx(config, onnx_file, checkpoint)
        result['export'] = dict(
            ops=export['ops'], agreement=export.get('agreement'))
        _write_json(osp.join(out_dir, stem + '.json'), result)
        summary['models'][stem] = result
        summary['ok'] = summary['ok'] and result['ok']
    if latency and LATENCY_CONFIG in configs:
        stem = osp.splitext(LATENCY_CONFIG)[0]
        print(
            f'[deploy-demo] latency of {stem}: onnxruntime against '
            f'PyTorch eager, {"x".join(map(str, latency_shape))}, '
            f'{threads} threads',
            flush=True)
        timing = compare_latency(
            find_config(LATENCY_CONFIG), checkpoints[LATENCY_CONFIG],
            osp.join(out_dir, stem + '.onnx'), latency_shape, threads)
        timing['model'] = stem
        _write_json(osp.join(out_dir, 'latency.json'), timing)
        summary['latency'] = timing
        print(format_latency(timing))
    _write_json(osp.join(out_dir, 'summary.json'), summary)
    print(format_summary(summary, out_dir))
    return summary


def format_summary(summary: dict, out_dir: str) -> str:
    """The comparison table ``make deploy-demo`` prints."""
    lines = [
        '', '=' * 72, 'deploy-demo: onnxruntime against PyTorch, demo val set',
        '| model | metric | PyTorch | onnxruntime | difference |',
        '| --- | --- | ---: | ---: | ---: |'
    ]
    for stem, result in summary['models'].items():
        ref, ours = (result['metrics']['pytorch'],
                     result['metrics']['onnxruntime'])
        for metric, diff in result['differences'].items():
            key = f'coco/{metric}'
            lines.append(f'| {stem} | {metric} | {ref[key]:.3f} | '
                         f'{ours[key]:.3f} | {diff:+.3f} |')
    lines.append('')
    for stem, result in summary['models'].items():
        a = result['agreement']
        text = (f"{stem}: {a['matched']} of {a['reference']} PyTorch "
                f"detections matched ({a['test']} onnxruntime), box IoU min "
                f"{_fmt(a['min_iou'])}, mean {_fmt(a['mean_iou'])}")
        if 'min_mask_iou' in a:
            text += f", mask IoU min {_fmt(a['min_mask_iou'])}"
        text += f"; ok: {result['ok']}"
        lines.append(text)
    lines.append(f"all within tolerance: {summary['ok']}; details in "
                 f'{osp.join(out_dir, "summary.json")}')
    lines.append('=' * 72)
    return '\n'.join(lines)


def _fmt(value) -> str:
    return 'n/a' if value is None else f'{value:.4f}'


def _write_json(path: str, data: dict) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, default=str)
    os.replace(tmp, path)


def parse_args(argv: Optional[List[str]] = None):
    from mmepsa.analysis.benchmark import parse_nchw
    parser = argparse.ArgumentParser(
        description='Export the demo Mask R-CNN and RetinaNet to ONNX and '
        'compare onnxruntime with PyTorch on the demo val set')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/deploy-demo',
        help='where the .onnx files and the JSON results go')
    parser.add_argument(
        '--no-latency',
        action='store_true',
        help='skip the latency comparison of the Mask R-CNN')
    parser.add_argument(
        '--latency-shape',
        type=parse_nchw,
        default=(1, 3, 800, 1216),
        metavar='1xHxW',
        help='input of the latency comparison (default '
        '1x800x1216)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='threads of torch and onnxruntime for the latency (default 2)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    summary = run_deploy_demo(args.out_dir, not args.no_latency,
                              args.latency_shape, args.threads)
    return 0 if summary['ok'] else 3


if __name__ == '__main__':
    sys.exit(main())
