# Copyright (c) mmepsa contributors. All rights reserved.
"""The suite's memo of mmengine's lookup of ``package::`` bases
(``tests/base_lookup.py``) answers as mmengine does."""
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.config import utils as config_utils
from mmengine.utils import get_installed_path

from tests.base_lookup import memoize_base_lookup
from tests.utils import REPO

DEMO = osp.join(REPO, 'configs', 'demo',
                'mask-rcnn_epsanet50-s_fpn_demo-shapes.py')


def test_memo_answers_as_mmengine(monkeypatch):
    memoize_base_lookup()  # already done by the conftest: no second wrap
    memoized = config_utils._get_cfg_metainfo
    original = memoized.__wrapped__
    assert not hasattr(original, 'cache')
    mmdet = get_installed_path('mmdet')
    # a model config that mmdet's metafiles list: the same entry, a copy
    name = 'retinanet/retinanet_r50_fpn_1x_coco.py'
    found = memoized(mmdet, name)
    assert found == original(mmdet, name) == memoized(mmdet, name)
    assert found['Name'] == 'retinanet_r50_fpn_1x_coco'
    found['Name'] = 'changed'
    assert memoized(mmdet, name)['Name'] == 'retinanet_r50_fpn_1x_coco'
    # a _base_ file, in no metafile: mmengine's error, every time
    base = '_base_/models/retinanet_r50_fpn'
    for lookup in (original, memoized, memoized):
        with pytest.raises(ValueError, match='Expected configs'):
            lookup(mmdet, base)
    assert (mmdet, base) in memoized.cache
    # a config with mmdet:: bases parses to the same dict either way
    cfg = Config.fromfile(DEMO).to_dict()
    monkeypatch.setattr(config_utils, '_get_cfg_metainfo', original)
    assert Config.fromfile(DEMO).to_dict() == cfg
