# Copyright (c) mmepsa contributors. All rights reserved.
"""The load test of ``tools/analysis_tools/load_test.py`` (whose docstring
describes the images, the checks and the exit status): generated images of
varied sizes and colour types streamed one at a time through mmdet's
``DetInferencer``, with the time and memory after every image."""
import os
import os.path as osp
import statistics
import sys
import time
from typing import Optional

import numpy as np

from .benchmark import describe_machine, machine_info, read_memory

# kind: (channels in the file, extension); KIND_WEIGHTS in the same order
KINDS = {
    'color-jpg': (3, '.jpg'),
    'color-png': (3, '.png'),
    'gray-jpg': (1, '.jpg'),
    'gray-png': (1, '.png'),
    'rgba-png': (4, '.png'),
}
KIND_WEIGHTS = (0.40, 0.20, 0.15, 0.15, 0.10)
EXIT_FAILED_IMAGES = 3
EXIT_MEMORY_GROWTH = 4


def image_specs(num: int, min_size: int, max_size: int, seed: int) -> list:
    """(kind, width, height) of the ``num`` images: the corner cases first,
    then random sizes and kinds."""
    corners = [(w, h) for w, h in ((min_size, min_size), (max_size, max_size),
                                   (min_size, max_size), (max_size, min_size))]
    specs = [(kind, w, h) for w, h in corners for kind in KINDS]
    rng = np.random.default_rng(seed)
    log_lo, log_hi = np.log(min_size), np.log(max_size + 1)
    while len(specs) < num:
        w, h = (
            int(
                np.clip(
                    np.exp(rng.uniform(log_lo, log_hi)), min_size, max_size))
            for _ in range(2))
        kind = list(KINDS)[rng.choice(len(KINDS), p=KIND_WEIGHTS)]
        specs.append((kind, w, h))
    return specs[:num]


def draw_image(rng: np.random.Generator, width: int, height: int,
               channels: int) -> np.ndarray:
    """A smooth random background with a few filled shapes (BGR order);
    ``channels`` 1 (grey, 2-D array), 3 or 4 (with alpha)."""
    import cv2
    coarse = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3))
    img = cv2.resize(
        coarse.astype(np.uint8), (width, height),
        interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(1, 5))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = max(2, int(rng.uniform(0.08, 0.3) * min(width, height)))
        shape = rng.integers(3)
        if shape == 0:
            cv2.circle(img, (cx, cy), r, color, -1)
        elif shape == 1:
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1)
        else:
            pts = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)],
                           np.int32)
            cv2.fillPoly(img, [pts], color)
    noise = rng.integers(-8, 9, img.shape)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if channels == 4:
        alpha = np.linspace(64, 255, width, dtype=np.uint8)
        alpha = np.broadcast_to(alpha, (height, width))[..., None]
        return np.concatenate([img, alpha], axis=2)
    return img


def write_images(img_dir: str, specs: list, seed: int) -> list:
    """Write the images; each is read back to record the channels its file
    really holds. Returns one record per image."""
    import cv2
    os.makedirs(img_dir, exist_ok=True)
    records = []
    for i, (kind, w, h) in enumerate(specs, 1):
        channels, ext = KINDS[kind]
        rng = np.random.default_rng([seed, i])
        img = draw_image(rng, w, h, channels)
        path = osp.join(img_dir, f'img_{i:04d}_{kind}_{w}x{h}{ext}')
        params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == '.jpg' else []
        if not cv2.imwrite(path, img, params):
            raise OSError(f'could not write {path}')
        back = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        records.append(
            dict(
                index=i,
                file=osp.basename(path),
                path=path,
                kind=kind,
                width=w,
                height=h,
                file_channels=1 if back.ndim == 2 else back.shape[2]))
    return records


class RecordLoaded:
    """A pipeline step that records the shape of the image the loader
    produced and passes the results on unchanged."""

    def __init__(self):
        self.shapes = []

    def __call__(self, results: dict) -> dict:
        self.shapes.append(tuple(results['img'].shape))
        return results


def build_inferencer(config: str,
                     checkpoint: Optional[str] = None,
                     device: str = 'cpu',
                     cfg_options: Optional[dict] = None):
    """A ``DetInferencer`` for ``config`` with a :class:`RecordLoaded` step
    after its loader; returns ``(inferencer, recorder)``."""
    import torch
    from mmdet.apis import DetInferencer
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ValueError(f'--device {device} but CUDA is not available')
    inferencer = DetInferencer(
        model=cfg, weights=checkpoint, device=device, show_progress=False)
    recorder = RecordLoaded()
    transforms = inferencer.pipeline.transforms
    loader = next(i for i, t in enumerate(transforms)
                  if type(t).__name__ == 'InferencerLoader')
    transforms.insert(loader + 1, recorder)
    return inferencer, recorder


def run_stream(inferencer, recorder, records: list) -> float:
    """Feed the images one at a time; fill in each record. Returns the
    wall time of the whole stream (s)."""
    start = time.perf_counter()
    for rec in records:
        recorder.shapes.clear()
        t0 = time.perf_counter()
        try:
            out = inferencer(rec['path'], no_save_vis=True, no_save_pred=True)
            rec['detections'] = len(out['predictions'][0]['scores'])
        except Exception as e:  # noqa: BLE001  (reported, then exit 3)
            rec['error'] = f'{type(e).__name__}: {e}'
        rec['seconds'] = round(time.perf_counter() - t0, 4)
        rec.update({k: round(v, 1) for k, v in read_memory().items()})
        loaded = recorder.shapes[0] if recorder.shapes else None
        rec['loaded_shape'] = list(loaded) if loaded else None
        expected = (rec['height'], rec['width'], 3)
        if 'error' not in rec and loaded != expected:
            rec['error'] = f'the pipeline loaded {loaded}, expected {expected}'
        if rec['index'] == 1 or rec['index'] % 50 == 0:
            print(
                f'image {rec["index"]}/{len(records)}: RSS '
                f'{rec["rss_mib"]:.1f} MiB, peak {rec["peak_rss_mib"]:.1f} '
                f'MiB, {time.perf_counter() - start:.1f} s',
                flush=True)
    return time.perf_counter() - start


def growth(before: float, after: float) -> float:
    return (after - before) / before


def summarize(args, config: str, classes: list, records: list, wall_s: float,
              build_s: float, built: dict) -> dict:
    n = len(records)
    marks = sorted({1, args.warmup, n})
    memory = [
        dict(
            image=i,
            rss_mib=round(records[i - 1]['rss_mib'], 1),
            peak_rss_mib=round(records[i - 1]['peak_rss_mib'], 1))
        for i in marks
    ]
    ref, last = records[args.warmup - 1], records[-1]
    rss_growth = growth(ref['rss_mib'], last['rss_mib'])
    peak_growth = growth(ref['peak_rss_mib'], last['peak_rss_mib'])
    after = [r['rss_mib'] for r in records[args.warmup - 1:]]
    slope = float(np.polyfit(np.arange(len(after)), after, 1)[0])
    seconds = [r['seconds'] for r in records]
    failures = [
        dict(index=r['index'], file=r['file'], error=r['error'])
        for r in records if 'error' in r
    ]
    grey = [r for r in records if r['file_channels'] == 1]
    kinds = {k: sum(r['kind'] == k for r in records) for k in KINDS}
    return dict(
        config=config,
        checkpoint=args.checkpoint,
        classes=classes,
        note=None
        if args.checkpoint else 'no --checkpoint: randomly initialised model',
        device=args.device,
        machine=machine_info(args.device),
        date=time.strftime('%Y-%m-%d %H:%M:%S'),
        seed=args.seed,
        num_images=n,
        sizes=[args.min_size, args.max_size],
        kinds=kinds,
        grey_files=len(grey),
        grey_loaded_as_3_channels=sum(
            (r.get('loaded_shape') or [0])[-1] == 3 for r in grey),
        failures=failures,
        build_seconds=round(build_s, 2),
        wall_seconds=round(wall_s, 2),
        images_per_second=round(n / wall_s, 3),
        seconds_per_image=dict(
            first=round(seconds[0], 3),
            median=round(statistics.median(seconds), 3),
            p95=round(float(np.percentile(seconds, 95)), 3),
            max=round(max(seconds), 3)),
        memory_before_stream=built,
        memory=memory,
        warmup=args.warmup,
        rss_growth=round(rss_growth, 4),
        peak_rss_growth=round(peak_growth, 4),
        rss_slope_mib_per_100_images=round(100 * slope, 2),
        max_growth=args.max_growth,
        growth_ok=max(rss_growth, peak_growth) <= args.max_growth,
        images=[{k: v
                 for k, v in r.items() if k != 'path'} for r in records])


def markdown(s: dict) -> str:
    mem = {m['image']: m for m in s['memory']}
    marks = sorted(mem)
    ref, last = s['warmup'], marks[-1]
    spi = s['seconds_per_image']
    lines = [
        f'Load test: {s["num_images"]} images through DetInferencer, '
        f'{osp.basename(s["config"])}, '
        f'{"weights " + s["checkpoint"] if s["checkpoint"] else s["note"]}, '
        f'{s["device"]}, {s["date"]}; '
        f'{describe_machine(s["machine"])}',
        '',
        '| | |',
        '|---|---|',
        f'| images (sides {s["sizes"][0]}-{s["sizes"][1]} px) | '
        f'{s["num_images"]}: ' +
        ', '.join(f'{k} {v}' for k, v in s['kinds'].items()) + ' |',
        f'| grey files loaded as 3 channels | '
        f'{s["grey_loaded_as_3_channels"]} of {s["grey_files"]} |',
        f'| failed images | {len(s["failures"])} |',
        f'| stream wall time | {s["wall_seconds"]:.1f} s '
        f'(model built in {s["build_seconds"]:.1f} s before) |',
        f'| throughput | {s["images_per_second"]:.2f} images/s |',
        f'| s/image: first, median, p95, max | {spi["first"]:.3f}, '
        f'{spi["median"]:.3f}, {spi["p95"]:.3f}, {spi["max"]:.3f} |',
        f'| RSS, peak RSS with the model built, before image 1 | '
        f'{s["memory_before_stream"]["rss_mib"]:.1f}, '
        f'{s["memory_before_stream"]["peak_rss_mib"]:.1f} MiB |',
        '| RSS after image ' + ' / '.join(map(str, marks)) + ' | ' +
        ' / '.join(f'{mem[i]["rss_mib"]:.1f}' for i in marks) + ' MiB |',
        '| peak RSS (VmHWM) at image ' + ' / '.join(map(str, marks)) + ' | ' +
        ' / '.join(f'{mem[i]["peak_rss_mib"]:.1f}' for i in marks) + ' MiB |',
        f'| growth from image {ref} to {last}: RSS, peak RSS | '
        f'{100 * s["rss_growth"]:+.2f} %, {100 * s["peak_rss_growth"]:+.2f} %'
        f' (limit {100 * s["max_growth"]:.1f} %: '
        f'{"ok" if s["growth_ok"] else "EXCEEDED"}) |',
        f'| RSS trend from image {ref} on (least squares) | '
        f'{s["rss_slope_mib_per_100_images"]:+.2f} MiB per 100 images |',
    ]
    if s['failures']:
        lines.append('')
    for f in s['failures'][:20]:
        lines.append(f'FAILED image {f["index"]} ({f["file"]}): '
                     f'{f["error"]}')
    if len(s['failures']) > 20:
        lines.append(f'... and {len(s["failures"]) - 20} more '
                     '(load_test.json)')
    return '\n'.join(lines) + '\n'


def exit_status(summary: dict) -> int:
    """3 if an image failed, else 4 if memory grew too much, else 0; the
    reasons are printed to stderr."""
    status = 0
    if not summary['growth_ok']:
        print(
            f'error: memory grew by more than '
            f'{100 * summary["max_growth"]:.1f} % from image '
            f'{summary["warmup"]} to the last (RSS '
            f'{100 * summary["rss_growth"]:+.2f} %, peak RSS '
            f'{100 * summary["peak_rss_growth"]:+.2f} %)',
            file=sys.stderr)
        status = EXIT_MEMORY_GROWTH
    if summary['failures']:
        print(
            f'error: {len(summary["failures"])} of '
            f'{summary["num_images"]} images failed',
            file=sys.stderr)
        status = EXIT_FAILED_IMAGES
    return status
