# Copyright (c) mmepsa contributors. All rights reserved.
"""Inference-only fast path for a trained backbone (or any conv network)."""
import torch
import torch.nn as nn
from mmcv.cnn import fuse_conv_bn


def deploy_model(model: nn.Module, compile: bool = False) -> nn.Module:
    """Put ``model`` in eval mode, fold every conv+BN pair into the conv
    (mmcv's :func:`~mmcv.cnn.fuse_conv_bn`, in place) and, with
    ``compile=True``, compile it with torch inductor's ``freezing``, which
    treats the weights as constants and lets oneDNN pre-pack them on CPU.

    For inference only: the folded model has no BN to train, and a frozen
    compiled model ignores later changes to its weights. In EPSANet the BN
    after each PSA module stays (the attention sits between it and the
    branch convs); EPSANet folds it into the weighting of the branches at
    run time, as it folds every eval-mode BN
    (``mmepsa.models.fast.fold``), so for EPSANet the gain of this
    function is the saved run-time fold and its cache. Compile a detector's
    backbone, not the whole detector (its heads run Python-side
    post-processing).

    Args:
        model (nn.Module): A trained model, e.g. ``detector.backbone``.
        compile (bool): Also ``torch.compile`` it (the first call compiles,
            which takes tens of seconds on CPU; each new input shape
            recompiles). Defaults to False.

    Returns:
        nn.Module: The folded model, or its compiled wrapper.

    Example:
        >>> import torch
        >>> from mmepsa.models import EPSANet
        >>> from mmepsa.utils import deploy_model
        >>> model = EPSANet(depth=50)
        >>> fast = deploy_model(model)
        >>> [tuple(o.shape) for o in fast(torch.rand(1, 3, 64, 64))][-1]
        (1, 2048, 2, 2)
    """
    model.eval()
    model = fuse_conv_bn(model)
    if compile:
        model = torch.compile(model, options={'freezing': True})
    return model
