#!/usr/bin/env python
"""Is B better than A, or is the difference within the evaluation's own noise? A paired bootstrap
over the images of two COCO results files of the same dataset (see docs/COMPARING.md).

    python scripts/compare_results.py A.json B.json [--dataset ANNOTATIONS.json | NAME]
        [--config DATA.BASEDIR=/data/coco] [--resamples 1000] [--seed 0] [--per-category]
        [--iou-types bbox segm boundary] [--json OUT.json]

For bbox, segm and boundary AP (and AP50, AP75): A, B, B - A, the 95% interval of B - A over
--resamples resamples of the images (drawn with replacement, the same images for A and B), the
share of resamples in which B is higher, and a verdict per IoU type. The ground truth: --dataset
(an annotation json, or a dataset name registered from --config), else the one recorded beside
the results by predict.py --evaluate (A-metrics.json).
"""
import argparse
import json
import os
import sys

from maskplus.evaluation.bootstrap import format_comparisons, paired_bootstrap, verdict_line
from maskplus.evaluation.coco_eval import metrics_path, recorded_evaluation
from maskplus.evaluation.matching import IOU_TYPES, ResultsError, load_ground_truth, match_file


def fail(message):
    sys.exit(f"Error: {message}")


def recorded_dataset(results):
    """(dataset name, annotation json) recorded beside a results file, or None."""
    info = recorded_evaluation(results)
    if info is None or not info.get("dataset"):
        return None
    return info["dataset"], info.get("annotations")


def ground_truth_file(args):
    a, b = args.a, args.b
    rec_a, rec_b = recorded_dataset(a), recorded_dataset(b)
    if rec_a and rec_b and _dataset_key(rec_a) != _dataset_key(rec_b):
        fail(f"{a} holds results of dataset '{rec_a[0]}' ({rec_a[1] or 'annotations not recorded'}) and {b} of "
             f"'{rec_b[0]}' ({rec_b[1] or 'annotations not recorded'}) (as {metrics_path(a)} and {metrics_path(b)} "
             f"record): results of different datasets cannot be compared.")
    if args.dataset:
        if os.path.isfile(args.dataset):
            return args.dataset
        return registered_dataset_file(args.dataset, args.config)
    for rec in (rec_a, rec_b):
        if rec and rec[1] and os.path.isfile(rec[1]):
            return rec[1]
    known = [f"{p} scores '{r[0]}' ({r[1] or 'annotations not recorded'}, not found)" for p, r in ((a, rec_a), (b, rec_b))
             if r]
    fail("give the ground truth with --dataset (an annotation json, or a dataset name with --config "
         "DATA.BASEDIR=...)" + (f": {'; '.join(known)}." if known else ": no -metrics.json beside the results "
                                                                        "records their dataset."))


def _dataset_key(record):
    name, annotations = record
    return os.path.realpath(annotations) if annotations else name


def registered_dataset_file(name, overrides):
    from config import ConfigError, config as cfg
    from maskplus.cli import register_datasets
    from maskplus.data.coco import DatasetError, get_dataset
    try:
        cfg.update_args(overrides)
        register_datasets(cfg)
        return get_dataset(name).json_path
    except (ConfigError, DatasetError) as e:
        fail(f"--dataset '{name}' is not an annotation file, nor a dataset of the config: {e}")


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", metavar="A.json", help="the results to compare against (COCO results json)")
    parser.add_argument("b", metavar="B.json", help="the results compared (B - A is reported)")
    parser.add_argument("--dataset", help="the ground truth: a COCO annotation json, or a dataset name "
                                          "(coco_val2017, a DATA.CUSTOM name) registered from --config")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides that register --dataset NAME, e.g. DATA.BASEDIR=/data/coco")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    parser.add_argument("--per-category", action="store_true", help="also each category's AP change")
    parser.add_argument("--iou-types", nargs="+", choices=IOU_TYPES, default=list(IOU_TYPES),
                        help="what to compare (default: all the results allow)")
    parser.add_argument("--json", metavar="OUT.json", help="also write every comparison as JSON here")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be at least 1")

    gt_path = ground_truth_file(args)
    try:
        gt = load_ground_truth(gt_path)
        tables = [match_file(gt, path, args.iou_types) for path in (args.a, args.b)]
        comparisons = paired_bootstrap({t: [tab] for t, tab in tables[0].items()},
                                       {t: [tab] for t, tab in tables[1].items()},
                                       args.resamples, args.seed, args.per_category, gt.category_names)
    except ResultsError as e:
        fail(str(e))
    for path, have in zip((args.a, args.b), tables):
        missing = [t for t in args.iou_types if t not in have]
        if missing:
            print(f"{path}: no {' / '.join(missing)} results (no {'masks' if 'bbox' in have else 'boxes'}); "
                  f"not compared.", file=sys.stderr)
    print(f"A = {args.a}\nB = {args.b}\nPaired bootstrap over the {gt.num_images} images of {gt_path}: "
          f"{args.resamples} resamples (seed {args.seed}); AP x100, intervals are the 2.5th-97.5th percentiles "
          f"of B - A over the resamples.\n")
    print(format_comparisons(comparisons))
    print("\n" + verdict_line(comparisons))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"a": os.path.abspath(args.a), "b": os.path.abspath(args.b), "ground_truth": os.path.abspath(gt_path),
                       "resamples": args.resamples, "seed": args.seed,
                       "comparisons": [dict(vars(c), delta=c.delta, verdict=c.verdict) for c in comparisons]},
                      f, indent=1)


if __name__ == "__main__":
    main()
