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


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')

    # Heavy imports after the argument checks: `-h` and a wrong path answer
    # at once. mmepsa registers EPSANet in mmdet's/mmpretrain's MODELS.
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import mmepsa  # noqa: F401

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
    from mmepsa.engine.hooks import add_epoch_seed_hook
    from mmepsa.utils.resume import check_resume_checkpoint
    add_epoch_seed_hook(cfg)
    resume_error = check_resume_checkpoint(cfg)
    if resume_error is not None:
        sys.exit(f'error: {resume_error}')

    # Missing data folders, annotation files or checkpoints: one line naming
    # the path and the config field, before anything is built.
    from mmepsa.utils.paths import check_data_paths
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
