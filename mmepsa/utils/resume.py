# Copyright (c) mmepsa contributors. All rights reserved.
"""Resuming an interrupted training run: checking the checkpoint first.

:func:`check_resume_checkpoint` makes ``--resume`` fail with the checkpoint's
name when that file is missing, truncated or damaged, before any work starts.
That a resumed run then draws the random numbers the uninterrupted run drew
is :class:`mmepsa.engine.hooks.EpochSeedHook`'s job.
"""
import os
import os.path as osp
import re
import zipfile
from typing import Optional

from mmengine.config import Config


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or damaged: ``str(e)``
    is ``'<path> <reason>'``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path} {reason}')
        self.path = path
        self.reason = reason


def check_checkpoint(path: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a whole checkpoint.

    ``torch.save`` writes a zip archive with a CRC-32 per record: the archive
    must open (a truncated one has lost its central directory, at the end)
    and every record must match its CRC (``ZipFile.testzip`` reads the file
    once, nothing is unpickled). A file that is not a zip archive nor the
    start of one (torch's legacy format) is not checked here: only the
    loader, which unpickles it under ``weights_only``, can tell.
    """
    if not osp.isfile(path):
        raise CheckpointError(path, 'does not exist')
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except Exception as e:  # zlib.error, BadZipFile, EOFError, OSError
            raise CheckpointError(
                path, f'is damaged ({type(e).__name__}: {e})') from e
        if bad is not None:
            raise CheckpointError(
                path, f'is damaged: its record {bad!r} fails the CRC check')
        return
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(path, 'is empty')
    if head == b'PK\x03\x04':  # a zip archive's first record, but no end
        raise CheckpointError(
            path, 'is truncated: it starts as the zip archive that '
            'torch.save writes, but the end of the archive (its central '
            'directory) is missing')
    # Anything else (torch's legacy format) is left to the loader: checking
    # it would mean unpickling it, which is the loader's business.


def resume_source(cfg: Config) -> Optional[str]:
    """The checkpoint ``Runner.load_or_resume`` will resume from, or None.

    As mmengine: ``resume`` with ``load_from`` resumes from ``load_from``;
    ``resume`` alone from the file named in ``<work_dir>/last_checkpoint``
    (None when there is none: training starts from scratch).
    """
    if not cfg.get('resume', False):
        return None
    if cfg.get('load_from') is not None:
        return cfg.load_from
    from mmengine.runner import find_latest_checkpoint
    return find_latest_checkpoint(cfg.work_dir)


def _earlier_checkpoint(path: str) -> Optional[str]:
    """The newest whole ``epoch_N.pth``/``iter_N.pth`` beside ``path`` that
    is older than it (by N), or None."""
    match = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', osp.basename(path))
    folder = osp.dirname(path)
    if match is None or not osp.isdir(folder):
        return None
    kind, number = match.group(1), int(match.group(2))
    candidates = []
    for name in os.listdir(folder):
        m = re.fullmatch(rf'{kind}_(\d+)\.pth', name)
        if m and int(m.group(1)) < number:
            candidates.append((int(m.group(1)), osp.join(folder, name)))
    for _, candidate in sorted(candidates, reverse=True):
        try:
            check_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def check_resume_checkpoint(cfg: Config) -> Optional[str]:
    """An error message when the run would resume from a checkpoint that is
    missing, truncated or damaged; None when it is whole (or the run does
    not resume, or the checkpoint is remote: ``://``)."""
    path = resume_source(cfg)
    if path is None or '://' in path:
        return None
    try:
        check_checkpoint(path)
    except CheckpointError as e:
        where = ''
        if cfg.get('load_from') is None:
            where = (' (the latest checkpoint, named in '
                     f'{osp.join(cfg.work_dir, "last_checkpoint")})')
        message = f'cannot resume: {path}{where} {e.reason}.'
        earlier = _earlier_checkpoint(path)
        if earlier is not None:
            message += (' Resume from the previous checkpoint with '
                        f'--resume {earlier}, or delete the damaged file.')
        return message
    return None
