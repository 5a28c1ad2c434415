# Copyright (c) mmepsa contributors. All rights reserved.
"""Training curves from mmengine's scalar logs, drawn with matplotlib (Agg).

mmengine's ``LocalVisBackend`` writes ``<work_dir>/<timestamp>/vis_data/
scalars.json`` and the logger writes ``<work_dir>/<timestamp>/vis_data/
<timestamp>.json``; both hold one JSON object per line: training records
(``loss``, ``loss_cls``..., ``lr``, ``iter``/``epoch``, ``step``) and
validation records (``coco/bbox_mAP``..., ``step``).

Example:
    >>> from mmepsa.visualization import plot_curves
    >>> plot_curves('work_dirs/retinanet/20240101_000000/vis_data/'
    ...             'scalars.json', 'curves.png')  # doctest: +SKIP
"""
import glob
import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

#: Keys plotted by default: every loss term and every mAP (not the per-IoU or
#: per-size ones, e.g. ``coco/bbox_mAP_50``).
DEFAULT_KEY_PATTERNS = ('loss', 'mAP')


def find_scalars_json(path: str) -> str:
    """The scalar log under ``path``.

    ``path`` may be the JSON file itself, a ``vis_data`` folder, a run folder
    (``<work_dir>/<timestamp>``) or a work dir; for a folder, the newest
    ``scalars.json`` (else the newest ``vis_data/<timestamp>.json``) below it
    is returned.
    """
    if osp.isfile(path):
        return path
    if not osp.isdir(path):
        raise FileNotFoundError(f'no such log file or folder: {path}')
    for pattern in ('scalars.json', 'vis_data/scalars.json',
                    '*/vis_data/scalars.json', 'vis_data/*.json',
                    '*/vis_data/*.json', '*.json'):
        found = [
            f for f in glob.glob(osp.join(path, pattern))
            if not f.endswith('config.json')
        ]
        if found:
            return max(found, key=osp.getmtime)
    raise FileNotFoundError(
        f'no mmengine scalar log (vis_data/scalars.json) under {path}')


def load_scalars(json_path: str) -> List[dict]:
    """The records of an mmengine JSON-lines log (or a JSON list)."""
    json_path = find_scalars_json(json_path)
    with open(json_path, encoding='utf-8') as f:
        text = f.read().strip()
    if not text:
        return []
    if text.startswith('['):
        records = json.loads(text)
    else:
        records = [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
    return [r for r in records if isinstance(r, dict)]


def _is_default_key(key: str) -> bool:
    name = key.split('/')[-1]
    if name.startswith('loss'):
        return True
    return name.endswith('_mAP') or name == 'mAP'


def _series(records: Sequence[dict], key: str) -> Dict[str, list]:
    xs, ys = [], []
    for i, record in enumerate(records):
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value,
                          (int, float)) or (isinstance(value, float)
                                            and not math.isfinite(value)):
            continue
        xs.append(record.get('step', record.get('iter', i)))
        ys.append(value)
    return dict(x=xs, y=ys)


def plot_curves(json_path: str,
                out_png: str,
                keys: Optional[Sequence[str]] = None,
                title: Optional[str] = None,
                dpi: int = 100) -> Dict[str, Union[str, List[str]]]:
    """Draw loss and mAP curves of an mmengine run into one PNG.

    Losses (training records, x axis: iteration) go into the left panel and
    metrics (validation records, x axis: the validation step, i.e. the epoch
    for epoch-based loops) into the right one; a panel without data is left
    out.

    Args:
        json_path (str): ``vis_data/scalars.json``, the ``<timestamp>.json``
            log, or a folder holding one (see :func:`find_scalars_json`).
        out_png (str): The PNG to write; its folder is created.
        keys (Sequence[str], optional): The scalars to draw. Defaults to all
            ``loss*`` keys and every ``*_mAP`` (e.g. ``coco/bbox_mAP``).
        title (str, optional): Figure title. Defaults to the log's path.
        dpi (int): Resolution. Defaults to 100.

    Returns:
        dict: ``out_png`` and the ``keys`` that were drawn.
    """
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    log_file = find_scalars_json(json_path)
    records = load_scalars(log_file)
    if keys is None:
        seen: Dict[str, None] = {}
        for record in records:
            for key in record:
                if _is_default_key(key):
                    seen.setdefault(key)
        keys = list(seen)
    series = {key: _series(records, key) for key in keys}
    missing = [key for key, s in series.items() if not s['y']]
    drawn = [key for key in keys if key not in missing]
    if not drawn:
        available = sorted({k for r in records for k in r})
        raise ValueError(f'none of the keys {list(keys)} has values in '
                         f'{log_file}; available keys: {available}')

    def is_loss(key: str) -> bool:
        return key.split('/')[-1].startswith('loss')

    groups = [('loss', [k for k in drawn if is_loss(k)], 'iteration'),
              ('metric', [k for k in drawn
                          if not is_loss(k)], 'validation step (epoch)')]
    groups = [g for g in groups if g[1]]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
    for ax, (name, group_keys, xlabel) in zip(axes[0], groups):
        for key in group_keys:
            s = series[key]
            marker = 'o' if len(s['x']) < 30 else None
            ax.plot(s['x'], s['y'], label=key, marker=marker)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize='small')
    fig.suptitle(title or log_file, fontsize='small')
    fig.tight_layout()
    out_dir = osp.dirname(osp.abspath(out_png))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return dict(out_png=out_png, keys=drawn, missing=missing)
