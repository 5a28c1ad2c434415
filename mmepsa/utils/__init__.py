# Copyright (c) mmepsa contributors. All rights reserved.
from .checkpoint import (allow_mmengine_checkpoint_types,
                         mmengine_checkpoint_types,
                         replace_mmengine_checkpoint_loaders)
from .deploy import deploy_model

__all__ = [
    'allow_mmengine_checkpoint_types', 'mmengine_checkpoint_types',
    'replace_mmengine_checkpoint_loaders', 'deploy_model'
]
