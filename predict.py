#!/usr/bin/env python
"""Predict, evaluate or export with a trained MaskPlus / Mask R-CNN model.

Examples:
    python predict.py --evaluate out.json --load train_log/run --config DATA.BASEDIR=/data/coco
    python predict.py --evaluate sweep/val.json --load train_log/run --checkpoints all --config DATA.BASEDIR=/data/coco
    python predict.py --predict a.jpg b.jpg photos/ --load train_log/run
    python predict.py --evaluate out.json --load model.npz --preset zoo-r50fpn-2x --config DATA.BASEDIR=/data/coco
    python predict.py --benchmark --load train_log/run
    python predict.py --export-npz model.npz --load train_log/run   (a training checkpoint -> model file)
    python predict.py --export-serving saved_model/ --export-pb model.pb --load train_log/run

--load naming a run directory, or a checkpoint inside one, starts from the run's config (its
run.json); --preset and --config apply on top (docs/EVALUATION.md). A checkpoint that does not hold
exactly the model the config builds is refused, naming what differs; --allow-partial-load loads
what fits instead.

--predict writes one PNG per image into --output-dir, named after the image, never over an input
(a name already taken gets -2, -3, ...); a folder means its images, recursively. An image that
fails is reported and skipped; the exit status is 1 if any did. EXIF orientation is applied.
--evaluate with --load runs the model (an existing results file is replaced, the old one kept as
OUT.previous-<time>.json); without --load it re-scores existing results files.
--config TEST.AUGMENT.ENABLED=True adds test-time augmentation (mirrored and resized views) to
--predict, --evaluate and --benchmark (docs/TTA.md).

Class names come from the run's config, else from the dataset (DATA.BASEDIR / DATA.VAL / DATA.TRAIN)
or DATA.CLASS_NAMES; coco_* dataset names with no files on disk (the defaults) stand for the 80 COCO
classes. --evaluate checks that each DATA.VAL dataset has the model's classes.
"""
import argparse
import os
import sys
import time

from maskplus import compat  # noqa: F401  (its shims before anything imports TensorFlow)
from config import ConfigError, config as cfg
from maskplus.cli import add_config_arguments, apply_model_config_arguments, fail, finalize
from maskplus.console import one_line


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".ppm", ".pgm", ".pbm")


def find_images(arguments, output_dir):
    """([(image path, output name without extension)], [(argument, why it gives no image)]).

    A file is taken as it is (its name: the file's stem); a folder means every file with an image
    extension under it, recursively, in sorted order (names: the path inside the folder), except
    the output folder when it lies inside (earlier drawings are not new inputs)."""
    output_real = os.path.realpath(output_dir)
    images, problems = [], []
    for arg in arguments:
        if os.path.isfile(arg):
            images.append((arg, os.path.splitext(os.path.basename(arg))[0]))
        elif os.path.isdir(arg):
            found = []
            inside_output = _is_within(os.path.realpath(arg), output_real)
            for folder, subfolders, files in os.walk(arg):
                if not inside_output and os.path.realpath(folder) == output_real:
                    print(f"Not looking in '{folder}': it is the output folder.", file=sys.stderr)
                    subfolders[:] = []
                    continue
                subfolders.sort()
                found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                problems.append((arg, f"the folder holds no image file ({', '.join(IMAGE_EXTENSIONS)})"))
            images += [(p, os.path.splitext(os.path.relpath(p, arg))[0]) for p in found]
        else:
            problems.append((arg, "the file does not exist"))
    return images, problems


def _is_within(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def output_paths(images, output_dir):
    """One PNG per image in ``output_dir``, named after it; never an input file, never the same
    for two images: a name already taken gets ``-2``, ``-3``, ... (``a/x.jpg b/x.jpg`` -> x.png, x-2.png)."""
    input_ids = {_file_id(p) for p, _ in images}  # device and inode: symbolic and hard links included
    taken, out = set(), []
    for _, name in images:
        k, candidate = 1, os.path.join(output_dir, name + ".png")
        while os.path.realpath(candidate) in taken or (os.path.exists(candidate) and _file_id(candidate) in input_ids):
            k += 1
            candidate = os.path.join(output_dir, f"{name}-{k}.png")
        taken.add(os.path.realpath(candidate))
        out.append(candidate)
    return out


def _file_id(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def predict_files(predictor, images, outputs, failures):
    """Draw each image's detections into its output PNG; an image that cannot be read or whose
    prediction fails (cv2.error, MemoryError, any exception) is reported and skipped, and the
    batch goes on. ``failures`` collects (path, reason). Returns the number of drawings written."""
    from maskplus.data.image_io import read_header, read_image
    from maskplus.engine.inference import predict_image
    from maskplus.viz import draw_predictions, save_image
    written = 0
    for (path, _), out in zip(images, outputs):
        try:
            img = read_image(path)
            if img is None:
                raise _Unreadable()
            start = time.time()
            dets = predict_image(predictor, img)
            elapsed = time.time() - start
            vis = draw_predictions(img, [d.box for d in dets], [d.score for d in dets], [d.class_id for d in dets],
                                   [d.mask for d in dets] if cfg.MODE_MASK else None, cfg.DATA.CLASS_NAMES,
                                   score_thresh=cfg.TEST.RESULT_SCORE_THRESH_VIS)
            del img
            save_image(out, vis)
        except _Unreadable:
            failures.append((path, "it is not a readable image"))
            print(f"Skipping '{path}': it is not a readable image.", file=sys.stderr)
            continue
        except Exception as e:  # noqa: BLE001  (one image must not end the batch)
            failures.append((path, one_line(e, kind=True)))
            print(f"Skipping '{path}': prediction failed: {one_line(e, kind=True)}", file=sys.stderr)
            continue
        written += 1
        shown = [d for d in dets if d.score >= cfg.TEST.RESULT_SCORE_THRESH_VIS]
        names = ", ".join(f"{cfg.DATA.CLASS_NAMES[d.class_id]} {d.score:.2f}" for d in shown[:8])
        try:
            orientation = read_header(path).orientation
        except Exception:  # noqa: BLE001  (only a remark)
            orientation = 1
        rotated = f" (EXIF orientation {orientation} applied)" if orientation != 1 else ""
        print(f"{path}{rotated}: {len(dets)} detections ({len(shown)} >= {cfg.TEST.RESULT_SCORE_THRESH_VIS}) "
              f"in {elapsed:.2f}s{': ' + names if names else ''} -> {out}")
    return written


class _Unreadable(Exception):
    pass


def benchmark(predictor, repeats=10):
    """The median time per image of a synthetic image at the test size; with test-time augmentation
    the single view's too, measured alternately (one run, the same conditions) with their ratio."""
    import numpy as np
    from maskplus.engine.inference import predict_image
    h = int(cfg.PREPROC.TEST_SHORT_EDGE_SIZE)
    w = int(min(cfg.PREPROC.MAX_SIZE, h * 1333 / 800))
    img = np.random.RandomState(0).randint(0, 255, (h, w, 3)).astype("uint8")
    runs = {"single view": getattr(predictor, "single_view", None) or predictor}
    if hasattr(predictor, "views"):
        runs[f"test-time augmentation ({len(predictor.views)} views)"] = predictor
    times = {name: [] for name in runs}
    for name, p in runs.items():
        predict_image(p, img)  # warm-up
    for _ in range(repeats):
        for name, p in runs.items():
            start = time.time()
            predict_image(p, img)
            times[name].append(time.time() - start)
    medians = {name: float(np.median(t)) for name, t in times.items()}
    print(f"Inference at {h}x{w}: " + ", ".join(f"{name} median {m:.3f}s/image" for name, m in medians.items())
          + f" over {repeats} runs" + (f"; ratio {medians[name] / medians['single view']:.2f}, measured alternately."
                                       if len(runs) > 1 else "."))


def evaluate_checkpoints(run, which, output, strict):
    """--checkpoints: the sweep of maskplus/engine/sweep.py; Ctrl-C keeps every checkpoint done."""
    from maskplus.engine.evaluate import EvaluationParams
    from maskplus.engine.sweep import sweep_checkpoints
    try:
        _, _, _, unreadable = sweep_checkpoints(run, which, output, EvaluationParams.from_config(cfg),
                                                dict(cfg.items_flat()), strict)
    except KeyboardInterrupt:
        print("Stopped (Ctrl-C): the checkpoints evaluated so far are kept; the same command continues with "
              "the others.", file=sys.stderr)
        sys.exit(130)
    if unreadable:
        fail(f"{len(unreadable)} checkpoint{'s' if len(unreadable) > 1 else ''} could not be read (steps "
             f"{', '.join(map(str, unreadable))}), each reported above.")


def build_parser():
    """predict.py's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--load", help="a run directory (its latest checkpoint, with the config of its run.json), a "
                                       "checkpoint inside one, or any .npz model file or TF checkpoint")
    parser.add_argument("--allow-partial-load", action="store_true",
                        help="load what fits of a checkpoint that does not hold exactly the model the config builds "
                             "(the rest keeps its random initialisation; the load report lists it) instead of "
                             "refusing it")
    parser.add_argument("--checkpoints", nargs="+", metavar="WHICH",
                        help="with --evaluate OUT and --load RUN_DIR: evaluate the run's checkpoints 'all', 'last N' "
                             "or of the steps given, in step order with one graph, into OUT-step<N>.json files, "
                             "skipping those already evaluated with the same weights and config; prints a table, "
                             "writes OUT-checkpoints.json and OUT-checkpoints.png (AP against step)")
    parser.add_argument("--predict", nargs="+", metavar="IMG",
                        help="images to visualise; a folder means every image under it (recursively, leaving "
                             "out the output folder). Exit status 1 if any image failed (each is reported)")
    parser.add_argument("--output-dir", default="predictions",
                        help="where --predict writes one PNG per image, named after it (never over an input; "
                             "a name already taken gets -2, -3, ...; a folder's images keep their sub-folders)")
    parser.add_argument("--evaluate", metavar="OUT.json",
                        help="COCO evaluation on DATA.VAL (OUT-<dataset>.json for each of several datasets). "
                             "With --load the model runs and an existing results file is replaced, the old one "
                             "kept as OUT.previous-<its time>.json; without --load existing results files are "
                             "re-scored")
    parser.add_argument("--benchmark", action="store_true",
                        help="time inference on a synthetic image (with TEST.AUGMENT.ENABLED: the single view "
                             "and the views alternately, and their ratio)")
    parser.add_argument("--export-npz", metavar="FILE", help="write the model's weights as a model-zoo style .npz")
    parser.add_argument("--export-serving", metavar="DIR",
                        help="write a TensorFlow SavedModel (BGR uint8 image in; boxes, scores, labels, masks out)")
    parser.add_argument("--export-pb", metavar="FILE", help="write the same graph frozen into one .pb file")
    return parser


def settle_predict_outputs(paths, output_dir):
    """--predict, before any model is built: ``(images, their output files, problems)``, each
    problem ``(argument, reason)`` reported; stops if the output folder is unusable or no image is left."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        fail(f"--output-dir '{output_dir}' is a file, not a folder.")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        fail(f"cannot create the --output-dir folder '{output_dir}': {e.strerror}.")
    if not os.access(output_dir, os.W_OK):
        fail(f"the --output-dir folder '{output_dir}' is not writable.")
    images, problems = find_images(paths, output_dir)
    for arg, reason in problems:
        print(f"Skipping '{arg}': {reason}.", file=sys.stderr)
    if not images:
        fail(f"no image to predict: {'; '.join(f'{a}: {r}' for a, r in problems)}.")
    return images, output_paths(images, output_dir), problems


def report_predictions(written, images, failures, output_dir):
    """--predict's last line; exit status 1 if any input failed."""
    if failures:
        fail(f"{len(failures)} input{'s' if len(failures) > 1 else ''} failed, each reported above "
             f"({', '.join(repr(p) for p, _ in failures[:5])}{', ...' if len(failures) > 5 else ''}); "
             f"{written} of {len(images)} images drawn into {output_dir}/.")
    print(f"Done: {written} images drawn into {output_dir}/.")


def check_val_datasets(with_model):
    """--evaluate, before any model is built: each DATA.VAL dataset exists and, when a model runs,
    has the model's classes (which come from its run, not from the dataset)."""
    from maskplus.data.coco import get_dataset
    from maskplus.engine.evaluate import check_dataset_classes
    for name in cfg.DATA.VAL:
        get_dataset(name)
        if with_model:
            check_dataset_classes(name, cfg.DATA.CLASS_NAMES[1:])


def check_model_arguments(args):
    """What the modes needing a model lack (--load; an export without augmentation), named before any
    model is built."""
    exports = args.export_npz or args.export_serving or args.export_pb
    if (args.predict or args.benchmark or exports) and not args.load:
        fail("--load is required (a run directory, a .npz or a TF checkpoint).")
    if (args.export_serving or args.export_pb) and cfg.TEST.AUGMENT.ENABLED:
        fail("TEST.AUGMENT.ENABLED=True: the exported graph sees one view; test-time augmentation runs in "
             "predict.py (--predict, --evaluate, --benchmark). Export without it.")


def load_predictor(load, strict):
    """``(predictor, model description)`` of the checkpoint ``load``, one graph for every mode."""
    from maskplus.engine.evaluate import describe_model
    from maskplus.engine.inference import build_predictor
    model = describe_model(load)
    return build_predictor(load, strict=strict), model


def export(args, predictor, strict):
    """--export-npz (from the predictor's session), --export-serving and --export-pb."""
    if args.export_npz:
        from maskplus.engine.checkpoint import export_npz
        with predictor.graph.as_default():  # the predictor's graph, not the (empty) default one
            export_npz(predictor.sess, args.export_npz)
    if args.export_serving:
        from maskplus.engine.export import export_serving
        export_serving(args.load, args.export_serving, strict)
    if args.export_pb:
        from maskplus.engine.export import export_frozen_graph
        export_frozen_graph(args.load, args.export_pb, strict)


def with_augmentation(predictor, model):
    """The predictor with test-time augmentation if TEST.AUGMENT.ENABLED (itself otherwise), its
    views recorded in ``model`` (stored with the metrics)."""
    from maskplus.engine.tta import AugmentationParams, augmented
    predictor = augmented(predictor, AugmentationParams.from_config(cfg))
    if model is not None and hasattr(predictor, "describe"):
        model["test_time_augmentation"] = predictor.describe()
    return predictor


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    exports = args.export_npz or args.export_serving or args.export_pb
    if not (args.predict or args.evaluate or args.benchmark or exports or args.list_presets):
        parser.error("nothing to do: give --predict, --evaluate, --benchmark or an --export-* option")
    if args.checkpoints and not (args.evaluate and args.load) or args.checkpoints and (
            args.predict or args.benchmark or exports):
        parser.error("--checkpoints goes with --evaluate OUT and --load RUN_DIR only")
    apply_model_config_arguments(args)
    strict = not args.allow_partial_load

    from maskplus.data.coco import DatasetError
    from maskplus.engine.checkpoint import CheckpointError
    from maskplus.engine.evaluate import EvaluationError
    from maskplus.engine.sweep import SweepError
    failures, written = [], 0
    try:
        # every mode's inputs are checked before any model is built, then one model serves them all
        finalize(is_training=False)
        if args.predict:
            images, outputs, problems = settle_predict_outputs(args.predict, args.output_dir)
            failures += problems
        if args.evaluate:
            from maskplus.engine.evaluate import check_evaluation
            check_val_datasets(with_model=bool(args.load))
            if args.checkpoints:
                return evaluate_checkpoints(args.load, args.checkpoints, args.evaluate, strict)
            check_evaluation(args.evaluate, with_model=bool(args.load), datasets=cfg.DATA.VAL)
        check_model_arguments(args)
        predictor = model = None
        if args.load and (args.predict or args.benchmark or args.export_npz or args.evaluate):
            predictor, model = load_predictor(args.load, strict)
        export(args, predictor, strict)
        if predictor is not None:
            predictor = with_augmentation(predictor, model)
        if args.predict:
            written = predict_files(predictor, images, outputs, failures)
        if args.evaluate:
            from maskplus.engine.evaluate import EvaluationParams, evaluate_datasets
            evaluate_datasets(predictor, args.evaluate, EvaluationParams.from_config(cfg), model)
        if args.benchmark:
            benchmark(predictor)
    except (ConfigError, DatasetError, CheckpointError, EvaluationError, SweepError, FileExistsError) as e:
        fail(str(e))
    if args.predict:
        report_predictions(written, images, failures, args.output_dir)


if __name__ == "__main__":
    main()
