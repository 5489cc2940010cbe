#!/usr/bin/env python
"""Predict, evaluate or export with a trained MaskPlus / Mask R-CNN model.

Examples:
    python predict.py --predict a.jpg b.jpg --load model.npz --config DATA.BASEDIR=/data/coco
    python predict.py --evaluate out.json --load model.npz --config DATA.BASEDIR=/data/coco DATA.VAL=coco_val2017
    python predict.py --benchmark --load model.npz --config ...
    python predict.py --export-npz model.npz --load train_log/run   (a training checkpoint -> model file)
    python predict.py --export-serving saved_model/ --export-pb model.pb --load model.npz --config ...

Class names come from the dataset (DATA.BASEDIR / DATA.VAL / DATA.TRAIN) or DATA.CLASS_NAMES; coco_*
dataset names with no files on disk (the defaults) stand for the 80 COCO classes.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import maskplus  # noqa: E402,F401  (compat shims first)
from config import ConfigError, config as cfg, finalize_configs  # noqa: E402
from maskplus.cli import add_config_arguments, apply_config_arguments, fail  # noqa: E402


def predict_files(predictor, paths, output_dir):
    import cv2
    from maskplus.engine.inference import predict_image
    from maskplus.viz import draw_predictions, save_image
    os.makedirs(output_dir, exist_ok=True)
    skipped = 0
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
        if img is None:
            reason = "it is not a readable image" if os.path.isfile(path) else "the file does not exist"
            print(f"Skipping '{path}': {reason}.", file=sys.stderr)
            skipped += 1
            continue
        start = time.time()
        dets = predict_image(predictor, img)
        elapsed = time.time() - start
        vis = draw_predictions(img, [d.box for d in dets], [d.score for d in dets], [d.class_id for d in dets],
                               [d.mask for d in dets] if cfg.MODE_MASK else None, cfg.DATA.CLASS_NAMES,
                               score_thresh=cfg.TEST.RESULT_SCORE_THRESH_VIS)
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        save_image(out, vis)
        shown = [d for d in dets if d.score >= cfg.TEST.RESULT_SCORE_THRESH_VIS]
        names = ", ".join(f"{cfg.DATA.CLASS_NAMES[d.class_id]} {d.score:.2f}" for d in shown[:8])
        print(f"{path}: {len(dets)} detections ({len(shown)} >= {cfg.TEST.RESULT_SCORE_THRESH_VIS}) "
              f"in {elapsed:.2f}s{': ' + names if names else ''} -> {out}")
    return skipped


def benchmark(predictor, repeats=10):
    import numpy as np
    from maskplus.engine.inference import predict_image
    h = int(cfg.PREPROC.TEST_SHORT_EDGE_SIZE)
    w = int(min(cfg.PREPROC.MAX_SIZE, h * 1333 / 800))
    img = np.random.RandomState(0).randint(0, 255, (h, w, 3)).astype("uint8")
    predict_image(predictor, img)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.time()
        predict_image(predictor, img)
        times.append(time.time() - start)
    print(f"Inference at {h}x{w}: median {np.median(times):.3f}s/image over {repeats} runs.")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--load", help="a .npz model file or a TF checkpoint (file prefix or directory)")
    parser.add_argument("--predict", nargs="+", metavar="IMG", help="images to visualise")
    parser.add_argument("--output-dir", default="predictions", help="where --predict writes PNGs")
    parser.add_argument("--evaluate", metavar="OUT.json",
                        help="evaluate on DATA.VAL, writing COCO results here (an existing file is re-scored)")
    parser.add_argument("--benchmark", action="store_true", help="time inference on a synthetic image")
    parser.add_argument("--export-npz", metavar="FILE", help="write the model's weights as a model-zoo style .npz")
    parser.add_argument("--export-serving", metavar="DIR",
                        help="write a TensorFlow SavedModel (BGR uint8 image in; boxes, scores, labels, masks out)")
    parser.add_argument("--export-pb", metavar="FILE", help="write the same graph frozen into one .pb file")
    args = parser.parse_args(argv)
    apply_config_arguments(args)
    exports = args.export_npz or args.export_serving or args.export_pb
    if not (args.predict or args.evaluate or args.benchmark or exports):
        parser.error("nothing to do: give --predict, --evaluate, --benchmark or an --export-* option")

    from maskplus.data.coco import DatasetError, get_dataset
    from maskplus.engine.checkpoint import CheckpointError
    try:
        finalize_configs(is_training=False)
        if args.evaluate:
            for name in cfg.DATA.VAL:  # a missing split is named before any model is built
                get_dataset(name)
        rescore_only = bool(args.evaluate) and os.path.isfile(args.evaluate)
        needs_model = args.predict or args.benchmark or exports or (args.evaluate and not rescore_only)
        if needs_model and not args.load:
            fail("--load is required (a .npz or a TF checkpoint).")
        predictor = None
        if args.predict or args.benchmark or args.export_npz or (args.evaluate and not rescore_only):
            from maskplus.engine.inference import build_predictor
            predictor = build_predictor(args.load)
        if args.export_npz:
            from maskplus.engine.checkpoint import export_npz
            export_npz(predictor.sess, args.export_npz)
        if args.export_serving:
            from maskplus.engine.export import export_serving
            export_serving(args.load, args.export_serving)
        if args.export_pb:
            from maskplus.engine.export import export_frozen_graph
            export_frozen_graph(args.load, args.export_pb)
        if args.predict:
            skipped = predict_files(predictor, args.predict, args.output_dir)
            if skipped == len(args.predict):
                fail("none of the input images could be read.")
        if args.evaluate:
            from maskplus.engine.evaluate import evaluate_datasets
            evaluate_datasets(predictor, args.evaluate)
        if args.benchmark:
            benchmark(predictor)
    except (ConfigError, DatasetError, CheckpointError, FileExistsError) as e:
        fail(str(e))


if __name__ == "__main__":
    main()
