#!/usr/bin/env python
"""Time of a paired-bootstrap comparison at COCO val size; appends the result to BENCHMARKS.md.

    python scripts/benchmark_bootstrap.py [--images 5000] [--detections 100] [--resamples 1000]
        [--iou-types bbox segm] [--no-write] [--keep DIR]

Generates a ground truth (the images' sizes and about 7 objects per image, polygons, 1% crowd
regions, 80 categories, like COCO val) and two results files with --detections per image (boxes
and mask RLEs; about 80% and 75% of the objects found, the rest random), then times what
scripts/compare_results.py does with them: loading and matching each file once per IoU type, and
the resamples. Reports wall and CPU time per step (other processes on the machine stretch the
wall time, not the CPU time) and the load average before the run.
"""
import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np
from pycocotools import mask as mask_util

from maskplus.evaluation.bootstrap import paired_bootstrap
from maskplus.evaluation.matching import load_ground_truth, match_file
from maskplus.precision import cpu_model_name
from scripts.measurements import commit, report


NUM_CATEGORIES = 80


def make_ground_truth(num_images, rng):
    """(COCO annotation dict, per image [(x, y, w, h, category)])."""
    images, annotations, objects = [], [], []
    for i in range(num_images):
        h, w = int(rng.choice([427, 480, 500, 640])), int(rng.choice([480, 500, 612, 640]))
        images.append({"id": 100000 + 3 * i, "height": h, "width": w, "file_name": f"{i:012d}.jpg"})
        boxes = []
        for _ in range(rng.poisson(7)):
            bw, bh = int(rng.integers(6, w // 2)), int(rng.integers(6, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            category = int(rng.integers(NUM_CATEGORIES)) + 1
            polygon = [x, y, x + bw, y, x + bw, y + 0.7 * bh, x + 0.5 * bw, y + bh, x, y + bh]
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"], "category_id": category,
                                "bbox": [float(x), float(y), float(bw), float(bh)], "area": 0.85 * bw * bh,
                                "iscrowd": int(rng.random() < 0.01), "segmentation": [polygon]})
            boxes.append((x, y, bw, bh, category))
        objects.append(boxes)
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(NUM_CATEGORIES)]
    return {"images": images, "annotations": annotations, "categories": categories}, objects


def make_results(gt, objects, detections, found, rng):
    """A results list: up to two detections per object (each found with probability ``found``,
    boxes jittered, scores in [0.5, 1)), the rest random boxes scoring below 0.6; masks are the
    boxes' upper 90%; scores rounded to 4 decimals as predict.py writes them."""
    results = []
    for img, boxes in zip(gt["images"], objects):
        h, w = img["height"], img["width"]
        rows = []
        for d in range(detections):
            if boxes and d < 2 * len(boxes) and rng.random() < found:
                x, y, bw, bh, category = boxes[d % len(boxes)]
                x = float(np.clip(x + 0.05 * bw * rng.standard_normal(), 0, w - 2))
                y = float(np.clip(y + 0.05 * bh * rng.standard_normal(), 0, h - 2))
                bw = float(np.clip(bw * np.exp(0.1 * rng.standard_normal()), 1, w - x))
                bh = float(np.clip(bh * np.exp(0.1 * rng.standard_normal()), 1, h - y))
                score = 0.5 + 0.5 * rng.random()
            else:
                bw, bh = float(rng.integers(4, w // 3)), float(rng.integers(4, h // 3))
                x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
                category, score = int(rng.integers(NUM_CATEGORIES)) + 1, 0.6 * rng.random()
            rows.append(([x, y, bw, bh], category, round(score, 4)))
        rles = mask_util.frPyObjects(np.array([[b[0], b[1], b[2], 0.9 * b[3]] for b, _, _ in rows]), h, w)
        for (box, category, score), rle in zip(rows, rles):
            results.append({"image_id": img["id"], "category_id": category, "bbox": [round(v, 2) for v in box],
                            "score": score, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
    return results


class Clock:
    """Wall and CPU seconds of each step."""

    def __init__(self):
        self.steps = []

    def __call__(self, name, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.steps.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        print(f"{name}: {self.steps[-1][1]:.1f} s wall, {self.steps[-1][2]:.1f} s CPU", flush=True)
        return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100, help="per image")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm", "boundary"])
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    parser.add_argument("--keep", metavar="DIR", help="write the generated files here and keep them")
    args = parser.parse_args(argv)

    folder = args.keep or tempfile.mkdtemp(prefix="bootstrap-benchmark-")
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, f"{name}.json") for name in ("ground_truth", "a", "b")}
    print(f"Generating {args.images} images x {args.detections} detections in {folder} ...", flush=True)
    rng = np.random.default_rng(0)
    gt, objects = make_ground_truth(args.images, rng)
    contents = {"ground_truth": gt, "a": make_results(gt, objects, args.detections, 0.80, rng),
                "b": make_results(gt, objects, args.detections, 0.75, rng)}
    for name, obj in contents.items():
        with open(paths[name], "w") as f:
            json.dump(obj, f)
    del contents, gt, objects

    load = os.getloadavg()[0]
    clock = Clock()
    truth = clock("ground truth", load_ground_truth, paths["ground_truth"])
    tables_a = clock("A: load, match " + " + ".join(args.iou_types), match_file, truth, paths["a"], args.iou_types)
    tables_b = clock("B: load, match " + " + ".join(args.iou_types), match_file, truth, paths["b"], args.iou_types)
    comparisons = clock(f"{args.resamples} resamples", paired_bootstrap, {t: [v] for t, v in tables_a.items()},
                        {t: [v] for t, v in tables_b.items()}, args.resamples, 0)
    wall, cpu = sum(s[1] for s in clock.steps), sum(s[2] for s in clock.steps)
    ap = next(c for c in comparisons if c.metric == "AP")

    lines = [f"## {datetime.date.today().isoformat()} — `python scripts/benchmark_bootstrap.py"
             + (f" --images {args.images}" if args.images != 5000 else "")
             + (f" --detections {args.detections}" if args.detections != 100 else "")
             + (f" --resamples {args.resamples}" if args.resamples != 1000 else "")
             + (f" --iou-types {' '.join(args.iou_types)}" if args.iou_types != ["bbox", "segm"] else "") + "`",
             "",
             f"Paired bootstrap of two results files (scripts/compare_results.py's work), {args.images} images x "
             f"{args.detections} detections each (synthetic, {len(truth.annotations)} objects, "
             f"{len(truth.category_ids)} categories), {', '.join(args.iou_types)}, {args.resamples} resamples.",
             f"Machine: {cpu_model_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy "
             f"{np.__version__}; commit {commit()}; load average {load:.1f} at the start (other processes share "
             f"the cores: wall time above CPU time is theirs).",
             "",
             "| step | wall s | CPU s |",
             "|---|---|---|"]
    lines += [f"| {name} | {w:.1f} | {c:.1f} |" for name, w, c in clock.steps]
    lines += [f"| total | {wall:.1f} | {cpu:.1f} |", "",
              f"Goal: under 120 s on 2 cores. (Check: {ap.iou_type} AP A {ap.a:.2f}, B {ap.b:.2f}, B - A "
              f"{ap.delta:+.2f} [{ap.low:+.2f}, {ap.high:+.2f}].)", ""]
    report("\n".join(lines), write=not args.no_write)
    if not args.keep:
        for path in paths.values():
            os.remove(path)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
