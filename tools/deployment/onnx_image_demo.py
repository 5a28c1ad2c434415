# Copyright (c) mmepsa contributors. All rights reserved.
"""Detect objects in images with an exported ONNX detector under plain
onnxruntime or OpenVINO (``mmepsa.deployment.OnnxDetector``: no torch,
mmcv or mmdet needed to run it) and draw them::

    python tools/deployment/onnx_image_demo.py demo.jpg model.onnx \\
        --out-dir outputs --score-thr 0.3 \\
        [--backend openvino [--precision bf16]]

``--backend openvino`` also runs an IR ``.xml`` (the int8 model of
``tools/deployment/quantize.py`` runs in int8).

writes ``OUT_DIR/vis/NAME.png`` (boxes, labels, scores, masks) and
``OUT_DIR/preds/NAME.json`` (every detection, in the image's pixels).
``IMG`` may also be a folder or several paths. Exits 1 on bad input (a
missing or unreadable image, one that is not 8-bit with 3 channels).
"""
import argparse
import json
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the detections of an ONNX detector on images')
    parser.add_argument(
        'img', nargs='+', help='image file(s) or a folder of images')
    parser.add_argument(
        'model', help='the .onnx file (OpenVINO: or an IR .xml)')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='output folder: vis/NAME.png and preds/NAME.json')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='draw only detections with at least this score')
    parser.add_argument(
        '--threads',
        type=int,
        help='the runtime\'s threads (default: '
        'one per core)')
    parser.add_argument(
        '--backend',
        default='onnxruntime',
        choices=('onnxruntime', 'openvino'),
        help='the runtime (default onnxruntime)')
    parser.add_argument(
        '--precision',
        choices=('fp32', 'bf16', 'int8', 'int8-bf16'),
        help='all but fp32 need --backend openvino, int8 and int8-bf16 '
        '(int8 with the rest in bf16) an int8 .xml; default: what the file '
        'holds (int8 for an int8 .xml, else fp32)')
    parser.add_argument(
        '--static-shapes',
        action='store_true',
        help='OpenVINO: compile the model for each input shape met (faster '
        'where images keep one size; a compile per new shape)')
    # argparse gives the trailing positional to model.
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import cv2

    from mmepsa.deployment.runner import (OnnxDetector, draw_detections,
                                          load_image)
    from mmepsa.utils.paths import list_images
    try:
        images = list_images(args.img)  # a missing file: the runner says
        model = OnnxDetector(
            args.model,
            threads=args.threads,
            backend=args.backend,
            precision=args.precision,
            static_shapes=args.static_shapes)
        loaded = [(path, load_image(path, model.channel_order))
                  for path in images]
    except (OSError, ValueError, ImportError) as e:
        sys.exit(f'onnx_image_demo: error: {e}')
    for sub in ('vis', 'preds'):
        os.makedirs(osp.join(args.out_dir, sub), exist_ok=True)
    for path, img in loaded:
        result = model(img)
        name = osp.splitext(osp.basename(path))[0]
        bgr = img if model.channel_order == 'bgr' else img[..., ::-1]
        vis = draw_detections(bgr, result, model.classes, args.score_thr)
        vis_file = osp.join(args.out_dir, 'vis', name + '.png')
        cv2.imwrite(vis_file, vis)
        labels = result['labels'].tolist()
        preds = dict(
            bboxes=result['bboxes'].astype(float).round(2).tolist(),
            scores=result['scores'].astype(float).round(4).tolist(),
            labels=labels,
            classes=[
                model.classes[i] if i < len(model.classes) else str(i)
                for i in labels
            ])
        with open(osp.join(args.out_dir, 'preds', name + '.json'), 'w') as f:
            json.dump(preds, f)
        n = int((result['scores'] >= args.score_thr).sum())
        print(f'{vis_file}: {n} detections with score >= {args.score_thr}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
