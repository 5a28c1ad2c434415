# Copyright (c) mmepsa contributors. All rights reserved.
"""Train a detector (or any OpenMMLab model) with an EPSANet backbone.

Same arguments and behaviour as mmdet's ``tools/train.py``; in addition it
imports :mod:`mmepsa`, so ``type='EPSANet'`` resolves even in configs without
``custom_imports``, and it runs distributed jobs on machines without CUDA
(gloo instead of nccl, DDP on CPU).

Examples::

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
    bash tools/dist_train.sh CONFIG 8 [--work-dir DIR]
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a detector with an EPSANet backbone (mmepsa)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torchrun sets LOCAL_RANK in the environment; torch.distributed.launch
    # passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def check_data_paths(cfg: Config) -> Optional[str]:
    """An error message naming the first local path that training needs and
    that does not exist, or None when they all exist.

    Checked: the data folders (``data_root``, ``data_prefix``) and annotation
    files of the train and val datasets (through ``dataset``/``datasets``
    wrappers), the val evaluator's ``ann_file``, every ``Pretrained``
    checkpoint in ``model``, and ``load_from`` when not resuming (the resume
    checkpoint is checked by ``check_resume_checkpoint``). Without this,
    mmdet fails on a missing annotation file only after building the model,
    and on a missing image folder or val file once training has started, in
    a traceback. Remote paths (``://``, non-local ``backend_args``) are
    skipped.
    """
    checks = []  # (config field, path, what it is, is a folder)

    def is_local(node):
        return (node.get('backend_args') or {}).get('backend',
                                                    'local') == 'local'

    def add_dataset(field, dataset):
        if not isinstance(dataset, dict):
            return
        add_dataset(f'{field}.dataset', dataset.get('dataset'))
        for i, sub in enumerate(dataset.get('datasets') or []):
            add_dataset(f'{field}.datasets[{i}]', sub)
        if not is_local(dataset):
            return
        root = dataset.get('data_root') or ''
        if root:
            checks.append((f'{field}.data_root', root, 'data folder', True))
        if dataset.get('ann_file'):
            checks.append((f'{field}.ann_file',
                           osp.join(root, dataset['ann_file']),
                           'annotation file', False))
        prefix = dataset.get('data_prefix') or {}
        if isinstance(prefix, str):  # mmpretrain allows a plain folder
            prefix = {None: prefix}
        for key, folder in prefix.items():
            if isinstance(folder, str) and folder:
                name = 'data_prefix' if key is None else f'data_prefix.{key}'
                checks.append((f'{field}.{name}', osp.join(root, folder),
                               'data folder', True))

    def add_pretrained(field, node):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained' and isinstance(
                    node.get('checkpoint'), str):
                checks.append((f'{field}.checkpoint', node['checkpoint'],
                               'pretrained checkpoint', False))
            for key, value in node.items():
                add_pretrained(f'{field}.{key}', value)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                add_pretrained(f'{field}[{i}]', value)

    add_dataset('train_dataloader.dataset',
                (cfg.get('train_dataloader') or {}).get('dataset'))
    if cfg.get('val_cfg') is not None and cfg.get('val_dataloader'):
        add_dataset('val_dataloader.dataset',
                    cfg.val_dataloader.get('dataset'))
        evaluator = cfg.get('val_evaluator')
        evaluators = ([('val_evaluator', evaluator)]
                      if isinstance(evaluator, dict) else
                      [(f'val_evaluator[{i}]', e)
                       for i, e in enumerate(evaluator or [])])
        for field, item in evaluators:
            if isinstance(item, dict) and item.get('ann_file') and \
                    is_local(item):
                checks.append((f'{field}.ann_file', item['ann_file'],
                               'annotation file', False))
    add_pretrained('model', cfg.get('model'))
    if cfg.get('load_from') and not cfg.get('resume'):
        checks.append(('load_from', cfg.load_from, 'checkpoint', False))

    for field, path, what, is_folder in checks:
        if '://' in path:
            continue
        local = osp.expanduser(path)
        if not (osp.isdir(local) if is_folder else osp.isfile(local)):
            if not osp.isabs(local):
                path = f'{path} (resolved to {osp.abspath(local)})'
            return f'{what} not found: {path} ({field})'
    return None


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')

    # Heavy imports after the argument checks: `-h` and a wrong path answer
    # at once. mmepsa registers EPSANet in mmdet's/mmpretrain's MODELS.
    import mmepsa  # noqa: F401
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    try:
        from mmdet.utils import setup_cache_size_limit_of_dynamo
    except ImportError:  # pragma: no cover
        setup_cache_size_limit_of_dynamo = None
    if setup_cache_size_limit_of_dynamo is not None:
        # Reduce the number of repeated compilations.
        setup_cache_size_limit_of_dynamo()

    # load config
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    # enable automatic-mixed-precision training
    # (bfloat16 autocast on a CPU; mmengine's AmpOptimWrapper elsewhere)
    if args.amp is True:
        from mmepsa.engine import use_amp
        try:
            use_amp(cfg)
        except RuntimeError as e:
            sys.exit(f'error: {e}')

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and \
                'enable' in cfg.auto_scale_lr and \
                'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            sys.exit('error: --auto-scale-lr needs "auto_scale_lr" with '
                     '"enable" and "base_batch_size" in the config '
                     f'{args.config}')

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # Resume as if never interrupted: reseed the random generators every
    # epoch, and name a damaged checkpoint before any work starts.
    from mmepsa.utils.resume import (add_epoch_seed_hook,
                                     check_resume_checkpoint)
    add_epoch_seed_hook(cfg)
    resume_error = check_resume_checkpoint(cfg)
    if resume_error is not None:
        sys.exit(f'error: {resume_error}')

    # Missing data folders, annotation files or checkpoints: one line naming
    # the path and the config field, before anything is built.
    data_error = check_data_paths(cfg)
    if data_error is not None:
        sys.exit(f'error: {data_error}')

    from mmepsa.utils.dist import setup_cpu_distributed
    setup_cpu_distributed(cfg, 'tools/dist_train.sh')

    # build the runner from config
    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    runner.train()


if __name__ == '__main__':
    main()
