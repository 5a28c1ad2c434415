# Copyright (c) mmepsa contributors. All rights reserved.
"""configs/cascade_rcnn and configs/dino: Cascade Mask R-CNN and DINO with
an EPSANet backbone.

Each config is mmdet's ResNet config with the backbone swapped (and nothing
else but what the table below names); DINO's backbone hands the
ChannelMapper the channels it expects; the EPSANet-50 Cascade Mask R-CNN and
DINO train 2 iterations on the demo data and are evaluated; the ONNX
exporter refuses both detector types. Building every config, the COCO
recipe and the zoo metadata: test_configs.py.
"""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config

import mmepsa  # noqa: F401  (registers EPSANet)
from tests.test_configs.utils import (build, load, on_demo_data,
                                      train_two_iterations, without_scope)

CASCADE = 'configs/cascade_rcnn/cascade-mask-rcnn_epsanet50-s_fpn_1x_coco.py'
CASCADE_3X = ('configs/cascade_rcnn/'
              'cascade-mask-rcnn_epsanet50-s_fpn_ms-3x_coco.py')
CASCADE_101 = ('configs/cascade_rcnn/'
               'cascade-mask-rcnn_epsanet101-s_fpn_1x_coco.py')
DINO = 'configs/dino/dino-4scale_epsanet50-s_8xb2-12e_coco.py'
CONFIGS = [CASCADE, CASCADE_3X, CASCADE_101, DINO]

# ours -> (mmdet's ResNet config it follows, the top-level keys that differ
# besides custom_imports, model.backbone and the neck's type)
MMDET_CASCADE = 'mmdet::cascade_rcnn/cascade-mask-rcnn_'
MMDET_DINO = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
MMDET_CONFIG = {
    CASCADE: (MMDET_CASCADE + 'r50_fpn_1x_coco.py', ()),
    # mmdet's ms-3x base evaluates boxes only; ours boxes and masks
    CASCADE_3X: (MMDET_CASCADE + 'r50_fpn_ms-3x_coco.py', ('val_evaluator',
                                                           'test_evaluator')),
    CASCADE_101: (MMDET_CASCADE + 'r101_fpn_1x_coco.py', ()),
    # mmdet's says dict(base_batch_size=16): enable=False is the default
    DINO: (MMDET_DINO, ('auto_scale_lr', )),
}
# the exporter's refusal names the detector's type ('DINOHead' for DINO:
# a detector it does not know is refused by its head)
UNSUPPORTED_TYPE = {
    CASCADE: 'CascadeRCNN',
    CASCADE_3X: 'CascadeRCNN',
    CASCADE_101: 'CascadeRCNN',
    DINO: 'DINO',
}


@pytest.mark.parametrize('config', CONFIGS)
def test_recipe_is_mmdets_with_the_backbone_swapped(config):
    mmdet_config, differing = MMDET_CONFIG[config]
    ours = without_scope(load(config).to_dict())
    theirs = without_scope(get_config(mmdet_config).to_dict())
    assert ours.pop('custom_imports') == dict(
        imports=['mmepsa'], allow_failed_imports=False)
    for key in differing:
        assert ours.pop(key) != theirs.pop(key), key
    ours_model, theirs_model = ours.pop('model'), theirs.pop('model')
    assert ours == theirs
    ours_backbone = ours_model.pop('backbone')
    theirs_backbone = theirs_model.pop('backbone')
    ours_neck, theirs_neck = ours_model.pop('neck'), theirs_model.pop('neck')
    assert ours_model == theirs_model
    if config == DINO:
        assert ours_neck == theirs_neck  # ChannelMapper, [512, 1024, 2048]
        assert ours_backbone.pop('contiguous_outputs') is True
    else:
        assert dict(ours_neck, type='FPN') == theirs_neck
        assert ours_neck['type'] == 'ChannelsLastFPN'
        assert ours_backbone.pop('contiguous_outputs') is False
    assert (theirs_backbone.pop('type'),
            ours_backbone.pop('type')) == ('ResNet', 'EPSANet')
    assert ours_backbone.pop('variant') == 'small'
    depth = ours_backbone['depth']
    checkpoint = f'checkpoints/epsanet{depth}-s_imagenet.pth'
    assert ours_backbone.pop('init_cfg') == dict(
        type='Pretrained', checkpoint=checkpoint)
    assert theirs_backbone.pop('init_cfg')['type'] == 'Pretrained'
    assert ours_backbone == theirs_backbone


@pytest.mark.parametrize('config', CONFIGS)
def test_onnx_exporter_refuses(config):
    from mmepsa.deployment import UnsupportedModelError, check_supported
    with pytest.raises(UnsupportedModelError, match=UNSUPPORTED_TYPE[config]):
        check_supported(load(config).model)


def test_dino_backbone_feeds_the_channel_mapper():
    """out_indices=(1, 2, 3): EPSANet-50's stages 2-4, 512/1024/2048
    channels, what the ChannelMapper's in_channels say; it makes the 4
    levels the deformable attention reads."""
    cfg = load(DINO)
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    backbone_cfg.init_cfg = None
    backbone, neck = build(backbone_cfg).eval(), build(cfg.model.neck).eval()
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 64))
        outs = neck(feats)
    assert [f.shape[1] for f in feats] == cfg.model.neck.in_channels
    assert [f.shape[1] for f in feats] == [512, 1024, 2048]
    levels = cfg.model.encoder.layer_cfg.self_attn_cfg.num_levels
    assert len(outs) == cfg.model.neck.num_outs == levels == 4
    assert [o.shape[1:] for o in outs] == [(256, 8, 8), (256, 4, 4),
                                           (256, 2, 2), (256, 1, 1)]


def train_and_test(cfg: Config):
    """Train ``cfg`` (already on the demo data) and test it: the train
    losses (all finite) and the test metrics."""
    runner, losses = train_two_iterations(cfg)
    return losses, runner.test()


def test_cascade_mask_rcnn_trains_and_tests(demo_data, tmp_path,
                                            keep_determinism):
    cfg = on_demo_data(load(CASCADE), demo_data, str(tmp_path))
    losses, metrics = train_and_test(cfg)
    # the RPN's, then each of the three stages' box and mask losses
    for stage in ('s0', 's1', 's2'):
        for loss in ('loss_cls', 'loss_bbox', 'loss_mask'):
            assert f'{stage}.{loss}' in losses, losses
    assert 'loss_rpn_cls' in losses
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert key in metrics, metrics


def test_dino_trains_and_tests(demo_data, tmp_path, keep_determinism):
    cfg = on_demo_data(load(DINO), demo_data, str(tmp_path))
    losses, metrics = train_and_test(cfg)
    # the last decoder layer's, the 5 others', the encoder's proposals' and
    # the denoising queries'
    for loss in ('loss_cls', 'loss_bbox', 'loss_iou', 'd4.loss_cls',
                 'enc_loss_cls', 'dn_loss_cls'):
        assert loss in losses, losses
    assert 'coco/bbox_mAP' in metrics, metrics
