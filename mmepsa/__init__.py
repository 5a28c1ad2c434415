# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa: the EPSANet backbone for the OpenMMLab stack.

``import mmepsa`` (or ``custom_imports=dict(imports=['mmepsa'])`` in a config)
registers ``EPSANet`` in the ``MODELS`` registry of mmdet, mmpretrain and,
when installed, mmseg, and replaces mmengine's checkpoint loaders with safe
ones (an allow-list unpickler, the same on every torch: docs/checkpoints.md),
so mmengine resumes from its own checkpoints and a crafted file runs nothing.
"""
import mmcv
import mmengine
import torch
from mmengine.utils import digit_version

from .version import __version__, version_info

# Supported ranges, as mmdet checks its own (upper bounds exclusive; torch
# has none: the newest release is tested, see docs/compatibility.md).
_SUPPORTED = {
    'torch': (torch.__version__, '2.0.0', None),
    'mmcv': (mmcv.__version__, '2.0.0', '2.2.0'),
    'mmengine': (mmengine.__version__, '0.10.0', '1.0.0'),
}
try:
    import mmdet
except ImportError as e:  # pragma: no cover - mmdet is a requirement
    raise ImportError('mmepsa needs mmdet>=3.0.0,<3.4.0: pip install '
                      '"mmdet==3.3.0" (see README)') from e
_SUPPORTED['mmdet'] = (mmdet.__version__, '3.0.0', '3.4.0')

for _name, (_found, _low, _high) in _SUPPORTED.items():
    _version = digit_version(_found)
    if _version < digit_version(_low) or (_high is not None and
                                          _version >= digit_version(_high)):
        _range = f'>={_low}' + (f',<{_high}' if _high else '')
        raise ImportError(
            f'{_name}=={_found} is installed but mmepsa supports '
            f'{_name}{_range}. Please install a version in that range '
            '(docs/compatibility.md lists the tested stacks).')

from .utils import allow_mmengine_checkpoint_types  # noqa: E402
from .utils import replace_mmengine_checkpoint_loaders  # noqa: E402

allow_mmengine_checkpoint_types()
replace_mmengine_checkpoint_loaders()

# registers EpochSeedHook in mmengine's HOOKS, CPUBF16OptimWrapper in its
# OPTIM_WRAPPERS
from . import engine  # noqa: E402,F401
from .models import EPSANet  # noqa: E402,F401

__all__ = ['__version__', 'version_info', 'EPSANet']
