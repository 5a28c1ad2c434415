# Copyright (c) mmepsa contributors. All rights reserved.
"""Distributed runs (``--launcher pytorch``) on machines without CUDA."""
import datetime
import sys

from mmengine.config import Config


def setup_cpu_distributed(cfg: Config, launch_script: str) -> None:
    """Make ``cfg``'s distributed launch work without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and the configs
    ask for nccl, and the default DDP wrapper passes ``device_ids=[rank]``;
    none of this works on a CPU-only machine. Here the process group is
    started with gloo before the Runner is built (the Runner then skips its
    own ``init_dist``) and DDP gets ``device_ids=None``. Nothing changes when
    CUDA is available or the launcher is ``none``.

    Args:
        cfg (Config): The run's config; ``cfg.launcher`` is already set.
        launch_script (str): The script to name in the error for launchers
            that need CUDA (e.g. ``'tools/dist_train.sh'``).
    """
    import torch
    import torch.distributed as torch_dist
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        sys.exit(f'error: --launcher {cfg.launcher} needs CUDA devices; on a '
                 'machine without CUDA use --launcher pytorch (torchrun, '
                 f'{launch_script}), which runs on gloo')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not torch_dist.is_initialized():
        kwargs = {}
        if dist_cfg.get('timeout') is not None:
            kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
        torch_dist.init_process_group(backend='gloo', **kwargs)
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
