# Copyright (c) mmepsa contributors. All rights reserved.
"""What the fast path costs and gains on this stack, with bounds: the logic
of ``tools/analysis_tools/fast_path_check.py`` (docs/performance.md).

For each of :data:`FAST_PATH_CASES`: the first step that tunes the input
size against a steady step (bound :data:`MAX_TUNING_STEPS`), and the steady
step with the fast path untuned, tuned and as the defaults have it against
the plain model (bound :data:`MAX_TIME_VS_PLAIN`).
"""
import json
import os
import os.path as osp
import time
from typing import Sequence

import torch

from .benchmark import (describe_machine, fmt_nchw, paired_ratio,
                        summarise_times, time_interleaved)
from .compare_speed import (MODES, Switched, backbone_step, build_backbone,
                            environment)

#: The fast path check's cases: (mode, NCHW input). A detection-setting
#: train step at a COCO-like batch, and an inference pass.
FAST_PATH_CASES = (('train-detection', (2, 3, 800, 1088)), ('inference',
                                                            (1, 3, 800, 1216)))
#: The switch of each row of the check (``default``: as in force).
FAST_PATH_ROWS = {
    'plain': dict(enabled=False),
    'untuned': dict(enabled=True, autotune=False),
    'tuned': dict(enabled=True, autotune=True),
    'default': None,
}
#: Bounds: tuning an input size costs at most this many steady steps, and
#: a fast-path row's median time is at most this many times the plain
#: model's (run-to-run noise).
MAX_TUNING_STEPS = 10
MAX_TIME_VS_PLAIN = 1.03
#: Untimed rounds of the rows after the first, tuned, step.
WARMUP = 1


def fast_path_case(args, device: torch.device, mode: str,
                   shape: Sequence[int]) -> dict:
    """One case of :func:`fast_path_check`: the first tuned step (which
    times the PSA convs' forms) alone, then the rows of
    :data:`FAST_PATH_ROWS` interleaved; with the forms the tuned step chose
    (:func:`mmepsa.models.fast.conv_forms.chosen_forms`)."""
    from mmepsa.models.fast.conv_forms import chosen_forms, clear_choices
    train, settings = MODES[mode]
    model = build_backbone(
        'mmepsa', args.depth, args.seed, train, settings=settings).to(device)
    torch.manual_seed(args.seed)
    x = torch.randn(*shape, device=device)
    steps = {
        name: backbone_step(
            Switched(model, **switch) if switch else model, x, train, 'fp32')
        for name, switch in FAST_PATH_ROWS.items()
    }
    clear_choices()
    start = time.perf_counter()
    steps['tuned']()
    first = time.perf_counter() - start
    forms = chosen_forms()
    times = time_interleaved(steps, device, WARMUP, args.runs)
    rows = {n: summarise_times(t) for n, t in times.items()}
    tuned_ms = rows['tuned']['median_ms']
    tuning_steps = (first * 1000 - tuned_ms) / tuned_ms
    for name, row in rows.items():
        row['time_vs_plain'] = row['median_ms'] / rows['plain']['median_ms']
        row['time_vs_plain_paired'] = paired_ratio(times[name], times['plain'])
        row['ok'] = (
            name == 'plain' or row['time_vs_plain'] <= MAX_TIME_VS_PLAIN)
    return dict(
        mode=mode,
        shape=list(shape),
        first_tuned_step_s=first,
        tuning_cost_steps=tuning_steps,
        tuning_ok=tuning_steps <= MAX_TUNING_STEPS,
        models=rows,
        chosen_forms=forms)


def markdown(result: dict) -> str:
    """The check's table: a row per case and switch setting."""
    env = result['environment']
    lines = [
        f"Measured {env['date']} on {describe_machine(env)}; median of "
        f"{env['runs']} interleaved runs. Tuning cost = (first tuned step "
        f'- steady tuned step) / steady tuned step, bound '
        f'{MAX_TUNING_STEPS}; time / plain bound {MAX_TIME_VS_PLAIN} (in '
        'brackets: the median of the ratios within each round).', '',
        '| case | tuning cost (steps) | row | median ms | time / plain | '
        'ok |', '| --- | ---: | --- | ---: | ---: | --- |'
    ]
    for case in result['cases']:
        label = f"{case['mode']} {fmt_nchw(case['shape'])}"
        for name, row in case['models'].items():
            paired = row['time_vs_plain_paired']
            ratio = f"{row['time_vs_plain']:.2f}"
            if paired and name != 'plain':
                ratio += f" ({paired['median']:.2f})"
            cost = (f"{case['tuning_cost_steps']:.1f}"
                    if name == 'tuned' else '')
            ok = row['ok'] and (name != 'tuned' or case['tuning_ok'])
            lines.append(f'| {label} | {cost} | {name} | '
                         f"{row['median_ms']:.0f} | {ratio} | "
                         f"{'yes' if ok else 'NO'} |")
    return '\n'.join(lines) + '\n'


def fast_path_check(args) -> dict:
    """Run every case of :data:`FAST_PATH_CASES` and write
    ``fast_path_check.json`` and ``.md`` to ``args.out_dir``; the result's
    ``ok`` says whether every bound held.

    ``args`` holds the options of ``tools/analysis_tools/fast_path_check.py``
    (``depth``, ``seed``, ``runs``, ``device``, ``out_dir``); the
    environment records :data:`WARMUP` as its ``warmup``.
    """
    device = torch.device(args.device)
    result = dict(environment=environment(args, device, WARMUP), cases=[])
    for mode, shape in FAST_PATH_CASES:
        print(f'fast path check: {mode} {fmt_nchw(shape)}...', flush=True)
        result['cases'].append(fast_path_case(args, device, mode, shape))
    result['ok'] = all(
        case['tuning_ok'] and all(r['ok'] for r in case['models'].values())
        for case in result['cases'])
    table = markdown(result)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'fast_path_check.json'), 'w') as f:
        json.dump(result, f, indent=1)
    with open(osp.join(args.out_dir, 'fast_path_check.md'), 'w') as f:
        f.write(table)
    print(table)
    return result
