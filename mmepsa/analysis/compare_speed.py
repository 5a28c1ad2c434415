# Copyright (c) mmepsa contributors. All rights reserved.
"""The side-by-side benchmark behind ``tools/analysis_tools/compare_speed.py``
(docs/performance.md): mmepsa's EPSANet, the authors' formulation of EPSANet
and mmdet's ResNet, with the same random weights, timed in one process with
interleaved runs.

The rows are :data:`BACKBONES`, a dict of builders; the cases are input
sizes x :data:`MODES`, and a Mask R-CNN training step. Each case records its
rows' times, their peak memory (:mod:`mmepsa.analysis.memory_probe`, through
:func:`step_from_spec`) and the forms the PSA convs' autotuner chose
(:func:`mmepsa.models.fast.conv_forms.chosen_forms`); the report records
the machine (:func:`mmepsa.analysis.benchmark.machine_info`).
"""
import json
import os
import os.path as osp
import sys
import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from .benchmark import (autocast, describe_machine, fmt_nchw, machine_info,
                        paired_ratio, summarise_times, time_interleaved)
from .memory_probe import measure_memory

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
DETECTORS = ('original', 'mmepsa', 'mmepsa-nchw-neck', 'resnet')
MASK_RCNN = {
    'epsanet': 'configs/mask_rcnn/mask-rcnn_epsanet50-s_fpn_1x_coco.py',
    'resnet': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
}
#: ``mmepsa-nchw-neck``: mmepsa's Mask R-CNN with the backbone's features
#: made contiguous NCHW and mmdet's FPN running NCHW on them, instead of the
#: config's channels-last features into ChannelsLastFPN.
NCHW_NECK = {
    'model.backbone.contiguous_outputs': True,
    'model.neck.type': 'FPN'
}

# --------------------------------------------------------------- models ---


class ChannelsLast(nn.Module):
    """Feeds a backbone channels-last input and returns contiguous outputs
    (what EPSANet does inside, applied from outside to mmdet's ResNet)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        from mmepsa.models.fast import to_contiguous_nchw
        outs = self.backbone(x.contiguous(memory_format=torch.channels_last))
        return tuple(to_contiguous_nchw(o) for o in outs)


class Switched(nn.Module):
    """Runs a model inside ``fast_path(**switch)``: ``enabled=False`` (the
    plain model) or ``autotune=False`` (the fast path, untuned), to show
    what the fast path and its autotuner gain."""

    def __init__(self, model: nn.Module, **switch) -> None:
        super().__init__()
        self.model, self.switch = model, switch

    def forward(self, x):
        from mmepsa.models.fast import fast_path
        with fast_path(**self.switch):
            return self.model(x)


class Stages(nn.Module):
    """The original classifier's four stage outputs as a backbone, with
    ResNet's ``frozen_stages`` and ``norm_eval`` (for the detection
    setting): stem and stages up to ``frozen_stages`` frozen and in eval
    mode, every BN in eval mode with ``norm_eval``. No BN is folded."""

    def __init__(self,
                 ref: nn.Module,
                 frozen_stages: int = -1,
                 norm_eval: bool = False) -> None:
        super().__init__()
        self.ref = ref
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval
        for module in self._frozen():
            for p in module.parameters():
                p.requires_grad = False

    def _frozen(self):
        if self.frozen_stages < 0:
            return []
        return [self.ref.conv1, self.ref.bn1] + [
            getattr(self.ref, f'layer{i}')
            for i in range(1, self.frozen_stages + 1)
        ]

    def train(self, mode: bool = True) -> 'Stages':
        super().train(mode)
        if mode:
            for module in self._frozen():
                module.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x):
        return tuple(self.ref.stages(x))


def _reference(depth: int, seed: int) -> nn.Module:
    from mmepsa.testing import RefEPSANet, randomize_
    return randomize_(RefEPSANet(STAGE_BLOCKS[depth]), seed)


def _mmepsa(depth: int,
            seed: int,
            with_cp: bool = False,
            **settings) -> nn.Module:
    """mmepsa's EPSANet holding the weights of :func:`_reference`."""
    from mmepsa.models import EPSANet
    model = EPSANet(
        depth,
        with_cp=with_cp,
        init_cfg=None,
        **{
            'norm_eval': False,
            **settings
        })
    model.load_state_dict({
        k: v
        for k, v in _reference(depth, seed).state_dict().items()
        if not k.startswith('fc.')
    })
    return model


def _resnet(depth: int, seed: int, **settings) -> nn.Module:
    from mmdet.models.backbones import ResNet
    torch.manual_seed(seed)
    # torch's default init
    return ResNet(depth, **{'norm_eval': False, **settings})


def _deploy(model: nn.Module, compile: bool = False) -> nn.Module:
    from mmepsa.utils import deploy_model
    return deploy_model(model, compile=compile)


#: The backbone settings of mmdet's detection configs (and mmepsa's): stem
#: and stage 1 frozen, every BN in eval mode. The ``train-detection`` mode
#: trains the backbones so; the other modes use ResNet's defaults but
#: ``norm_eval=False`` (every BN in training mode, nothing frozen).
DETECTION_SETTINGS = dict(frozen_stages=1, norm_eval=True)

#: The backbones compared: name -> builder(depth, seed, with_cp, settings).
#: Adding a model is one line; the EPSANets share the same random weights,
#: and ``with_cp`` applies to ``mmepsa`` only.
BACKBONES: Dict[str, Callable[[int, int, bool, dict], nn.Module]] = {
    'original':
    lambda d, s, cp, kw: Stages(_reference(d, s), **kw),
    'mmepsa':
    lambda d, s, cp, kw: _mmepsa(d, s, cp, **kw),
    'mmepsa-untuned':
    lambda d, s, cp, kw: Switched(_mmepsa(d, s, cp, **kw), autotune=False),
    'mmepsa-plain':
    lambda d, s, cp, kw: Switched(_mmepsa(d, s, cp, **kw), enabled=False),
    'mmepsa-deploy':
    lambda d, s, cp, kw: _deploy(_mmepsa(d, s)),
    'mmepsa-compiled':
    lambda d, s, cp, kw: _deploy(_mmepsa(d, s), True),
    'resnet':
    lambda d, s, cp, kw: _resnet(d, s, **kw),
    'resnet-cl':
    lambda d, s, cp, kw: ChannelsLast(_resnet(d, s, **kw)),
    'resnet-compiled':
    lambda d, s, cp, kw: _deploy(_resnet(d, s), True),
}
#: The yardsticks, in every backbone case whatever ``--models`` selects.
YARDSTICKS = ('original', 'resnet')
#: Models that cannot train (BN folded, or frozen by compilation).
INFERENCE_ONLY = ('mmepsa-deploy', 'mmepsa-compiled', 'resnet-compiled')
#: The backbone cases: mode -> (a training step?, backbone settings).
MODES = {
    'inference': (False, {}),
    'train': (True, {}),
    'train-detection': (True, DETECTION_SETTINGS),
}


def build_backbone(name: str,
                   depth: int,
                   seed: int,
                   train: bool,
                   with_cp: bool = False,
                   settings: Optional[dict] = None) -> nn.Module:
    """One of :data:`BACKBONES`, in train or eval mode; ``settings`` are
    ResNet arguments (``frozen_stages``, ``norm_eval``: see
    :data:`DETECTION_SETTINGS`) for the trainable models."""
    if train and name in INFERENCE_ONLY:
        raise ValueError(f'{name} is inference only')
    model = BACKBONES[name](depth, seed, with_cp, settings or {})
    if name not in INFERENCE_ONLY:
        model.train(train)
    return model


def to_original_psa(detector: nn.Module) -> nn.Module:
    """Give a detector with an EPSANet backbone the authors' PSA formulation
    (same weights) and NCHW execution: everything else stays identical."""
    from mmepsa.models import PSAModule
    from mmepsa.models.fast import fast_path
    from mmepsa.testing import RefPSA

    backbone = detector.backbone
    forward = backbone.forward

    def plain(x):  # NCHW, the BN layers run as such
        with fast_path(False):
            return forward(x)

    backbone.forward = plain
    for block_name, block in list(backbone.named_modules()):
        psa = getattr(block, 'conv2', None)
        if not isinstance(psa, PSAModule):
            continue
        conv = psa.conv_1
        ref = RefPSA(
            conv.in_channels,
            psa.split_channels * 4,
            kernels=[
                getattr(psa, f'conv_{i}').kernel_size[0] for i in range(1, 5)
            ],
            groups=[getattr(psa, f'conv_{i}').groups for i in range(1, 5)],
            stride=conv.stride[0],
            reduction=conv.out_channels // psa.se.fc1.out_channels)
        ref.load_state_dict(psa.state_dict())
        block.conv2 = ref.to(conv.weight.device)
    return detector


def build_mask_rcnn(name: str, seed: int, device: torch.device):
    """Mask R-CNN from mmepsa's COCO config (``original``, ``mmepsa``,
    ``mmepsa-nchw-neck``: see :data:`NCHW_NECK`) or mmdet's R-50 one
    (``resnet``), torch's default initialisation, ready for ``loss`` mode."""
    from mmepsa.analysis.benchmark import build_detector
    path = MASK_RCNN['resnet' if name == 'resnet' else 'epsanet']
    if '::' not in path:
        path = osp.join(REPO, path)
    torch.manual_seed(seed)
    model = build_detector(
        path,
        cfg_options=NCHW_NECK if name == 'mmepsa-nchw-neck' else None,
        device=device)
    if name == 'original':
        to_original_psa(model)
    return model.train()


def detector_batch(model: nn.Module, shape: Sequence[int],
                   device: torch.device) -> dict:
    """A preprocessed batch with boxes and masks (mmdet's demo inputs)."""
    from mmdet.testing import demo_mm_inputs
    n, c, h, w = shape
    torch.manual_seed(0)
    data = demo_mm_inputs(
        batch_size=n,
        image_shapes=[(c, h, w)] * n,
        num_items=[5] * n,
        num_classes=80,
        with_mask=True,
        device=str(device))
    return model.data_preprocessor(data, True)


# -------------------------------------------------------------- running ---


def backbone_step(model: nn.Module, x: torch.Tensor, train: bool,
                  precision: str) -> Callable:
    """A closure running one inference pass or one training step: forward,
    then backward from fixed random output gradients ``w / numel`` (those of
    the loss ``sum(mean(out * w))``; a plain mean would be a poor test:
    behind train-mode BN its gradient is zero analytically, leaving only
    rounding noise), each in its output's memory format, as a neck sends
    them back. The gradients are handed to ``torch.autograd.backward``
    directly, so that no loss pass over the features is timed: such a pass
    belongs to the head, and its speed depends on the memory formats it
    mixes (before 2026-12-02 the loss itself was run and timed). Outputs
    of frozen stages take no gradient."""
    grads = []

    def run():
        if not train:
            with torch.no_grad(), autocast(x.device, precision):
                return model(x)
        model.zero_grad(set_to_none=True)
        with autocast(x.device, precision):
            outs = model(x)
        if not grads:
            g = torch.Generator().manual_seed(0)
            grads.extend(
                torch.empty_like(o).copy_(torch.randn(
                    o.shape, generator=g)).div_(o.numel()) for o in outs)
        pairs = [(o, w) for o, w in zip(outs, grads) if o.requires_grad]
        torch.autograd.backward([o for o, _ in pairs], [w for _, w in pairs])
        return outs

    return run


def detector_step(model: nn.Module, batch: dict, precision: str,
                  device: torch.device) -> Callable:

    def run():
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            losses = model(**batch, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
        return loss

    return run


def step_from_spec(spec: dict) -> Callable:
    """The step a spec names, for :mod:`mmepsa.analysis.memory_probe`:
    ``kind`` ``'detector'`` (a Mask R-CNN training step of ``model``, one of
    :data:`DETECTORS`) or ``'backbone'`` (a step of ``model``, one of
    :data:`BACKBONES`, of ``depth``, in ``mode``, one of :data:`MODES`,
    ``with_cp`` optional), on an input of ``shape`` in ``precision`` on
    ``device``."""
    device = torch.device(spec['device'])
    shape = spec['shape']
    if spec['kind'] == 'detector':
        model = build_mask_rcnn(spec['model'], 0, device)
        return detector_step(model, detector_batch(model, shape, device),
                             spec['precision'], device)
    train, settings = MODES[spec['mode']]
    model = build_backbone(spec['model'], spec['depth'], 0, train,
                           spec.get('with_cp', False), settings).to(device)
    x = torch.randn(*shape, device=device)
    return backbone_step(model, x, train, spec['precision'])


#: The memory probe's name for :func:`step_from_spec`.
STEP_FACTORY = f'{__name__}:step_from_spec'

# ------------------------------------------------------------- the runs ---


def summarise_case(times: Dict[str, List[float]]) -> Dict[str, dict]:
    """Each model's times (:func:`summarise_times`), its speed-up over
    ``original`` and its time relative to ``resnet``: the ratio of the
    medians, and the ratio paired round by round
    (:func:`~mmepsa.analysis.benchmark.paired_ratio`)."""
    rows = {n: summarise_times(t) for n, t in times.items()}
    for n, row in rows.items():
        row['speedup_vs_original'] = (
            rows['original']['median_ms'] / row['median_ms'])
        row['time_vs_resnet'] = row['median_ms'] / rows['resnet']['median_ms']
        row['time_vs_resnet_paired'] = paired_ratio(times[n], times['resnet'])
    return rows


def backbone_case(args, device: torch.device, shape, mode: str,
                  precision: str) -> dict:
    """One backbone case: the selected rows of :data:`BACKBONES` on an
    input of ``shape`` in ``mode`` (see :data:`MODES`), each run once on
    its own first (the first of ``args.warmup`` warm-up rounds, at least
    one; its time is ``first_call_s``), then interleaved; with the forms
    the PSA convs' autotuner chose (``chosen_forms``)."""
    from mmepsa.models.fast.conv_forms import chosen_forms, clear_choices
    train, settings = MODES[mode]
    selected = args.models or list(BACKBONES)
    names = [
        n for n in BACKBONES if (n in YARDSTICKS or n in selected)
        and not (train and n in INFERENCE_ONLY)
        and not (args.no_compile and n.endswith('-compiled'))
    ]
    models = {
        n: build_backbone(n, args.depth, args.seed, train,
                          settings=settings).to(device)
        for n in names
    }
    torch.manual_seed(args.seed)
    x = torch.randn(*shape, device=device)
    steps = {
        n: backbone_step(m, x, train, precision)
        for n, m in models.items()
    }

    clear_choices()  # the case's record: the forms its rows choose
    first_call = {}
    for n, step in steps.items():  # the first warm-up round: compiles, tunes
        start = time.perf_counter()
        step()
        first_call[n] = time.perf_counter() - start
    times = time_interleaved(steps, device, max(args.warmup - 1, 0), args.runs)
    rows = summarise_case(times)
    for n, row in rows.items():
        row['first_call_s'] = first_call[n]
    forms = chosen_forms()
    del models, steps
    if not args.no_memory:
        for n in rows:
            if n.endswith('-compiled'):
                continue  # a compile per subprocess: not worth it
            rows[n]['peak_mib'] = measure_memory(
                STEP_FACTORY,
                dict(
                    kind='backbone',
                    model=n,
                    depth=args.depth,
                    shape=list(shape),
                    mode=mode,
                    precision=precision,
                    device=str(device)), args.threads)
    return dict(
        kind='backbone',
        shape=list(shape),
        mode=mode,
        precision=precision,
        models=rows,
        chosen_forms=forms)


def detector_case(args, device: torch.device, precision: str) -> dict:
    """A Mask R-CNN training step with each of :data:`DETECTORS`, timed
    interleaved (the PSA convs tuned in the warm-up rounds), with the
    forms the autotuner chose."""
    from mmepsa.models.fast.conv_forms import chosen_forms, clear_choices
    shape = args.detector_size
    models = {n: build_mask_rcnn(n, args.seed, device) for n in DETECTORS}
    steps = {}
    for n, model in models.items():
        steps[n] = detector_step(model, detector_batch(model, shape, device),
                                 precision, device)
    clear_choices()
    times = time_interleaved(steps, device, args.warmup, args.runs)
    rows = summarise_case(times)
    forms = chosen_forms()
    del models, steps
    if not args.no_memory:
        for n in rows:
            rows[n]['peak_mib'] = measure_memory(
                STEP_FACTORY,
                dict(
                    kind='detector',
                    model=n,
                    shape=list(shape),
                    precision=precision,
                    device=str(device)), args.threads)
    return dict(
        kind='mask-rcnn',
        shape=list(shape),
        mode='train',
        precision=precision,
        models=rows,
        chosen_forms=forms)


def with_cp_case(args, device: torch.device) -> dict:
    peaks = {}
    for with_cp in (False, True):
        peaks[with_cp] = measure_memory(
            STEP_FACTORY,
            dict(
                kind='backbone',
                model='mmepsa',
                depth=args.depth,
                shape=list(args.cp_size),
                mode='train',
                precision='fp32',
                device=str(device),
                with_cp=with_cp), args.threads)
    saving = None
    if peaks[False] and peaks[True] is not None:
        saving = 1 - peaks[True] / peaks[False]
    return dict(
        shape=list(args.cp_size),
        peak_mib_without_cp=peaks[False],
        peak_mib_with_cp=peaks[True],
        saving=saving)


# -------------------------------------------------------------- reports ---


def case_label(case: dict) -> str:
    """``kind mode NxCxHxW precision``."""
    return (f"{case['kind']} {case['mode']} {fmt_nchw(case['shape'])} "
            f"{case['precision']}")


#: The parts of a PSA conv's step, as the report names them.
PART_NAMES = {
    'forward': 'forward',
    'input': 'input gradient',
    'weight': 'weight gradient'
}


def forms_summary(chosen: Dict[str, Dict[str, str]]) -> str:
    """One line for a case's ``chosen_forms``
    (:func:`mmepsa.models.fast.conv_forms.chosen_forms`): how many convs
    were timed, and for each part how many chose each form.

    Example:
        >>> forms_summary({'a': dict(forward='grouped', weight='polyphase')})
        '1 conv timed; forward: grouped 1; weight gradient: polyphase 1'
    """
    if not chosen:
        return ('no conv timed (autotuner off, or every conv under its size '
                'threshold)')
    parts = []
    for part, name in PART_NAMES.items():
        counts = Counter(c[part] for c in chosen.values() if part in c)
        if counts:
            parts.append(f'{name}: ' +
                         ', '.join(f'{form} {n}'
                                   for form, n in sorted(counts.items())))
    convs = 'conv' if len(chosen) == 1 else 'convs'
    return f'{len(chosen)} {convs} timed; ' + '; '.join(parts)


def markdown(result: dict) -> str:
    """The report: a table row per case and model, a line per case naming
    the forms the autotuner chose, and the ``with_cp`` saving."""
    env = result['environment']
    lines = [
        f"Measured {env['date']} on {describe_machine(env)}; device "
        f"{env['device']}; median of "
        f"{env['runs']} timed runs after {env['warmup']} warm-up runs, "
        'models interleaved run by run (in reverse order every other '
        'round). Speed-up = time of `original` / '
        'time; ResNet ratio = time / time of mmdet `resnet` (the medians; '
        'in brackets the median of the ratios within each round, and in '
        'how many rounds the model was the faster).', '',
        '| case | model | median ms | min-max ms | speed-up vs original | '
        'time / ResNet | peak MiB |',
        '| --- | --- | ---: | ---: | ---: | ---: | ---: |'
    ]
    for case in result['cases']:
        label = case_label(case)
        for name, row in case['models'].items():
            peak = row.get('peak_mib')
            if name.endswith('-compiled') and 'first_call_s' in row:
                name += f" (compiling: {row['first_call_s']:.0f} s)"
            ratio = f"{row['time_vs_resnet']:.2f}"
            paired = row.get('time_vs_resnet_paired')
            if paired and name != 'resnet':
                ratio += (f" ({paired['median']:.2f}; faster in "
                          f"{paired['faster_in']} of {paired['rounds']})")
            lines.append(f"| {label} | {name} | {row['median_ms']:.1f} | "
                         f"{row['min_ms']:.1f}-{row['max_ms']:.1f} | "
                         f"{row['speedup_vs_original']:.2f}x | {ratio} | "
                         f"{'-' if peak is None else f'{peak:.0f}'} |")
    lines += [
        '', 'Forms the PSA convs\' autotuner chose, per case (number of '
        'convs of each form; the JSON\'s `chosen_forms` names each conv and '
        'its input):'
    ]
    lines += [
        f"- {case_label(case)}: {forms_summary(case['chosen_forms'])}"
        for case in result['cases']
    ]
    cp = result.get('with_cp')
    if cp:
        lines += [
            '', f'with_cp, mmepsa backbone train step at '
            f"{fmt_nchw(cp['shape'])}: peak "
            f"{cp['peak_mib_without_cp']:.0f} MiB without, "
            f"{cp['peak_mib_with_cp']:.0f} MiB with checkpointing "
            f"({cp['saving']:.0%} less)."
            if cp['saving'] is not None else 'with_cp: measurement failed'
        ]
    return '\n'.join(lines) + '\n'


def bar_chart(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cases = result['cases']
    names = list(dict.fromkeys(n for c in cases for n in c['models']))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(cases)), 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, case in enumerate(cases):
            if name in case['models']:
                xs.append(i + (j - (len(names) - 1) / 2) * width)
                ys.append(case['models'][name]['speedup_vs_original'])
        ax.bar(xs, ys, width, label=name)
    ax.axhline(1.0, color='grey', linewidth=0.8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([
        f"{c['kind']}\n{c['mode']} {fmt_nchw(c['shape'])}\n{c['precision']}"
        for c in cases
    ],
                       fontsize=7)
    ax.set_ylabel('speed-up vs original formulation (x)')
    env = result['environment']
    ax.set_title(
        f"{env['gpu'] or env['cpu']}, torch {env['torch']}, "
        f"{env['threads']} threads, median of {env['runs']}",
        fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment(args, device: torch.device, warmup: int) -> dict:
    """The machine (:func:`~mmepsa.analysis.benchmark.machine_info`) and the
    settings of the run (``warmup``: its untimed rounds)."""
    env = machine_info(device)
    env.update(
        runs=args.runs,
        warmup=warmup,
        depth=args.depth,
        command=' '.join([osp.relpath(sys.argv[0], REPO)] + sys.argv[1:]))
    return env


def compare_speed(args) -> dict:
    """Run every case and write ``benchmark.json``, ``.md`` and ``.png`` to
    ``args.out_dir``; return the results.

    ``args`` holds the options of ``tools/analysis_tools/compare_speed.py``
    (``depth``, ``sizes``, ``modes``, ``models`` (None: all of
    :data:`BACKBONES`), ``precisions``, ``device``, ``runs``,
    ``warmup``, ``seed``, ``threads``, ``detector_size``, ``cp_size``,
    ``no_detector``, ``no_cp``, ``no_compile``, ``no_memory``,
    ``out_dir``).
    """
    device = torch.device(args.device)
    result = dict(environment=environment(args, device, args.warmup), cases=[])
    for precision in args.precisions:
        for shape in args.sizes:
            for mode in args.modes:
                print(f'{mode} {fmt_nchw(shape)} {precision}...', flush=True)
                result['cases'].append(
                    backbone_case(args, device, shape, mode, precision))
        if not args.no_detector:
            print(
                f'Mask R-CNN train step {fmt_nchw(args.detector_size)} '
                f'{precision}...',
                flush=True)
            result['cases'].append(detector_case(args, device, precision))
    if not args.no_cp:
        print(f'with_cp memory {fmt_nchw(args.cp_size)}...', flush=True)
        result['with_cp'] = with_cp_case(args, device)

    os.makedirs(args.out_dir, exist_ok=True)
    with open(osp.join(args.out_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    table = markdown(result)
    with open(osp.join(args.out_dir, 'benchmark.md'), 'w') as f:
        f.write(table)
    bar_chart(result, osp.join(args.out_dir, 'benchmark.png'))
    print(table)
    print(f'written: {args.out_dir}/benchmark.json, benchmark.md, '
          'benchmark.png')
    return result
