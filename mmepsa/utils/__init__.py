# Copyright (c) mmepsa contributors. All rights reserved.
from .checkpoint import (allow_mmengine_checkpoint_types,
                         mmengine_checkpoint_types)
from .deploy import deploy_model

__all__ = [
    'allow_mmengine_checkpoint_types', 'mmengine_checkpoint_types',
    'deploy_model'
]
