# Copyright (c) mmepsa contributors. All rights reserved.
"""mmepsa: the EPSANet backbone for the OpenMMLab stack.

``import mmepsa`` (or ``custom_imports=dict(imports=['mmepsa'])`` in a config)
registers ``EPSANet`` in the ``MODELS`` registry of mmdet, mmpretrain and,
when installed, mmseg, and lets mmengine resume from its own checkpoints
under torch's safe ``weights_only`` loading.
"""
import mmcv
import mmengine
from mmengine.utils import digit_version

from .version import __version__, version_info

# Supported ranges, as mmdet checks its own (upper bounds exclusive).
_SUPPORTED = {
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
    if not (digit_version(_low) <= digit_version(_found) <
            digit_version(_high)):
        raise ImportError(
            f'{_name}=={_found} is installed but mmepsa supports '
            f'{_name}>={_low},<{_high}. Please install a version in that '
            'range (the README pins the tested stack).')

from .utils import allow_mmengine_checkpoint_types  # noqa: E402

allow_mmengine_checkpoint_types()

from .models import EPSANet  # noqa: E402,F401
from . import engine  # noqa: E402,F401  (registers CPUBF16OptimWrapper)

__all__ = ['__version__', 'version_info', 'EPSANet']
