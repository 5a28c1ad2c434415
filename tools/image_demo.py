# Copyright (c) mmepsa contributors. All rights reserved.
"""Detect objects in images with a trained model and save the drawings.

Runs mmdet's ``DetInferencer`` and writes, for each input image ``NAME.*``,
``OUT_DIR/vis/NAME.png`` (boxes, labels, scores and, for instance
segmentation models, masks) and ``OUT_DIR/preds/NAME.json`` (the raw
predictions)::

    python tools/image_demo.py demo.jpg CONFIG CHECKPOINT \\
        --out-dir outputs --device cpu --pred-score-thr 0.3

``IMG`` may also be a folder (all images in it) or several paths.
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the detections of a model on images (PNG)')
    parser.add_argument(
        'img', nargs='+', help='image file(s) or a folder of images')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='output folder: vis/NAME.png and preds/NAME.json')
    parser.add_argument(
        '--device',
        default=None,
        help='cpu, cuda or cuda:N (default: cuda '
        'when available, else cpu)')
    parser.add_argument(
        '--pred-score-thr',
        type=float,
        default=0.3,
        help='draw only detections with at least this score')
    parser.add_argument(
        '--palette',
        default='none',
        choices=['coco', 'voc', 'citys', 'random', 'none'],
        help='color palette of the drawing; "none" keeps the model\'s')
    parser.add_argument(
        '--no-save-pred',
        action='store_true',
        help='do not write preds/NAME.json')
    parser.add_argument(
        '--print-result', action='store_true', help='print the predictions')
    # argparse gives the trailing positionals to config and checkpoint.
    return parser.parse_args(argv)


def expand_images(paths) -> list:
    """The images ``paths`` name (:func:`mmepsa.utils.paths.list_images`),
    each one existing, else an error exit naming it."""
    from mmepsa.utils.paths import list_images
    try:
        images = list_images(paths)
    except ValueError as e:
        sys.exit(f'error: {e}')
    for path in images:
        if not osp.isfile(path):
            sys.exit(f'error: image not found: {path}')
    return images


def main(argv=None):
    args = parse_args(argv)
    for name, path in (('config', args.config), ('checkpoint',
                                                 args.checkpoint)):
        if not osp.isfile(path):
            sys.exit(f'error: {name} file not found: {path}')
    images = expand_images(args.img)

    import mmcv
    import torch
    from mmdet.apis import DetInferencer

    import mmepsa  # noqa: F401  (registers EPSANet)

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    inferencer = DetInferencer(
        model=args.config,
        weights=args.checkpoint,
        device=device,
        palette=args.palette,
        show_progress=False)
    results = inferencer(
        images,
        out_dir='' if args.no_save_pred else args.out_dir,
        pred_score_thr=args.pred_score_thr,
        return_vis=True,
        no_save_vis=True,
        no_save_pred=args.no_save_pred,
        print_result=args.print_result)

    vis_dir = osp.join(args.out_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    written = []
    for path, vis in zip(images, results['visualization']):
        out_file = osp.join(vis_dir,
                            osp.splitext(osp.basename(path))[0] + '.png')
        mmcv.imwrite(vis[..., ::-1], out_file)  # the drawing is RGB
        written.append(out_file)
    for path, pred in zip(written, results['predictions']):
        n = sum(s >= args.pred_score_thr for s in pred.get('scores', []))
        print(f'{path}: {n} detections with score >= {args.pred_score_thr}')
    if not args.no_save_pred:
        print(f'predictions saved to {osp.join(args.out_dir, "preds")}')
    return written


if __name__ == '__main__':
    main()
