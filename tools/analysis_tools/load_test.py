# Copyright (c) mmepsa contributors. All rights reserved.
"""Load test: a stream of varied images through mmdet's ``DetInferencer``.

Generates ``--num-images`` images (deterministic for a ``--seed``), then
feeds them one at a time to a ``DetInferencer`` built from a detector config
and records, after every image, the time it took and the process's memory
(``VmRSS``, and the peak ``VmHWM``, from ``/proc/self/status``)::

    python tools/analysis_tools/load_test.py \\
        [CONFIG] [--checkpoint CKPT] [--num-images 500] [--out-dir DIR]

The images, in file order:

* sizes: width and height each log-uniform in ``[--min-size, --max-size]``
  (64 and 1333 px by default), drawn independently, so aspect ratios range
  from 1:20 to 20:1;
* kinds: colour JPEG 40 %, colour PNG 20 %, single-channel grey JPEG 15 %,
  single-channel grey PNG 15 %, RGBA PNG 10 %;
* the stream starts with the 20 corner cases (the 4 extreme sizes
  min x min, max x max, min x max, max x min, each in the 5 kinds), so that
  every extreme has gone through the model before the ``--warmup`` image
  from which the memory growth is measured;
* content: a smooth random background with 1-4 filled circles, rectangles
  and triangles (what the demo model was trained on), plus mild noise.

Every file is read back to check that a grey file really holds one channel,
and the image the pipeline loads is recorded (a step inserted after the
loader), to check that it is ``H x W x 3`` with the file's size: mmdet's
``LoadImageFromFile`` decodes with ``color_type='color'`` (cv2
``IMREAD_COLOR``), which turns grey into 3 channels and drops alpha.

Writes ``OUT_DIR/load_test.json`` (summary and one record per image) and
``OUT_DIR/load_test.md`` (the summary, also printed). Exit status: 0 when
every image went through and the memory growth from image ``--warmup`` to
the last stayed within ``--max-growth``; 3 when an image failed; 4 when the
memory grew more; 1 on bad input (a missing config or checkpoint); 2 on bad
options.

Memory growth is the larger of the growths of RSS (after the image) and of
peak RSS, from image ``--warmup`` to the last, relative to image
``--warmup``. RSS counts because the peak can be set before the stream
(loading a checkpoint with its optimizer state can take more memory than
the stream needs), and a leak smaller than that gap would not move the
peak. The default limit is 10 % of the memory at image ``--warmup``.

The logic is in :mod:`mmepsa.analysis.load_test`. Without ``--checkpoint`` the
model is randomly initialised (a note says
so): fine for memory and speed, but its detections mean nothing.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
import time

from mmengine.config import DictAction

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CONFIG = osp.join('configs', 'demo',
                       'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Stream generated images of varied sizes and colour '
        'types through DetInferencer; report failures, memory and speed')
    parser.add_argument(
        'config',
        nargs='?',
        default=DEMO_CONFIG,
        help=f'detector config (default: {DEMO_CONFIG}, relative to the '
        'repository root when not found from the current directory)')
    parser.add_argument(
        '--checkpoint',
        default=None,
        help='model weights; without them the model is randomly '
        'initialised')
    parser.add_argument('--num-images', type=int, default=500)
    parser.add_argument(
        '--min-size', type=int, default=64, help='smallest side (px)')
    parser.add_argument(
        '--max-size', type=int, default=1333, help='largest side (px)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the generated images')
    parser.add_argument(
        '--img-dir',
        default=None,
        help='write the images here and keep them (default: a temporary '
        'folder, removed at the end)')
    parser.add_argument(
        '--out-dir',
        default=osp.join('work_dirs', 'load_test'),
        help='where load_test.json and load_test.md are written')
    parser.add_argument(
        '--warmup',
        type=int,
        default=50,
        help='memory growth is measured from this image to the last')
    parser.add_argument(
        '--max-growth',
        type=float,
        default=0.10,
        help='fail (exit 4) when memory grows more than this fraction '
        '(0.10 = 10%%) from image --warmup to the last')
    parser.add_argument(
        '--device', default='cpu', help='cpu, cuda or cuda:N (default: cpu)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    args = parser.parse_args(argv)
    if args.num_images < 2:
        parser.error('--num-images must be >= 2')
    if not 1 <= args.min_size <= args.max_size:
        parser.error('need 1 <= --min-size <= --max-size')
    if not 1 <= args.warmup < args.num_images:
        parser.error('--warmup must be >= 1 and less than --num-images '
                     f'({args.num_images})')
    return args


def find_config(path: str) -> str:
    if osp.isfile(path):
        return path
    in_repo = osp.join(REPO, path)
    if not osp.isabs(path) and osp.isfile(in_repo):
        return in_repo
    sys.exit(f'error: config file not found: {path}')


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = find_config(args.config)
    if args.checkpoint and not osp.isfile(args.checkpoint):
        sys.exit(f'error: checkpoint file not found: {args.checkpoint}')
    from mmepsa.analysis.load_test import (build_inferencer, image_specs,
                                           markdown, read_memory, run_stream,
                                           summarize, write_images)
    try:
        read_memory()
    except OSError:
        sys.exit('error: the load test reads /proc/self/status (Linux)')

    specs = image_specs(args.num_images, args.min_size, args.max_size,
                        args.seed)
    img_dir = args.img_dir or tempfile.mkdtemp(prefix='mmepsa_load_')
    try:
        print(f'writing {len(specs)} images to {img_dir}', flush=True)
        records = write_images(img_dir, specs, args.seed)
        t0 = time.perf_counter()
        try:
            inferencer, recorder = build_inferencer(config, args.checkpoint,
                                                    args.device,
                                                    args.cfg_options)
        except ValueError as e:
            sys.exit(f'error: {e}')
        build_s = time.perf_counter() - t0
        built = {k: round(v, 1) for k, v in read_memory().items()}
        if not args.checkpoint:
            print(
                'note: no --checkpoint, the model is randomly initialised',
                flush=True)
        print(
            f'streaming {len(records)} images through DetInferencer',
            flush=True)
        wall_s = run_stream(inferencer, recorder, records)
    finally:
        if args.img_dir is None:
            shutil.rmtree(img_dir, ignore_errors=True)

    classes = list(inferencer.model.dataset_meta['classes'])
    summary = summarize(args, config, classes, records, wall_s, build_s, built)
    text = markdown(summary)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'load_test.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    with open(osp.join(args.out_dir, 'load_test.md'), 'w') as f:
        f.write(text)
    print(text)
    print(f'written: {osp.join(args.out_dir, "load_test.json")}, '
          f'{osp.join(args.out_dir, "load_test.md")}')
    return summary


if __name__ == '__main__':
    summary = main()
    # imported after main(): a bad argument fails before mmepsa is imported
    from mmepsa.analysis.load_test import exit_status
    sys.exit(exit_status(summary))
