#!/usr/bin/env python
"""Generate the shapes instance-segmentation dataset in COCO format.

    python scripts/make_shapes_dataset.py --out datasets/shapes --train 1500 --val 100 --seed 0

Writes DIR/annotations/instances_{train,val}2017.json and DIR/{train,val}2017/*.jpg, so that
``--config DATA.BASEDIR=DIR`` makes it available as coco_train2017 / coco_val2017.
"""
import argparse
import os
import time

from maskplus.data import shapes  # no TensorFlow: its forked workers stay safe


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes drawing images (default: one per CPU; the files do not depend on it)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.time()
    paths = shapes.write_dataset(args.out, args.train, args.val, seed=args.seed, size=args.size,
                                 workers=args.workers)
    for split, path in paths.items():
        s = shapes.summarize(path)
        cats = ", ".join(f"{k} {v}" for k, v in s["per_category"].items())
        print(f"{split}: {s['images']} images, {s['instances']} instances ({cats}); "
              f"small {s['small']:.0%}, medium {s['medium']:.0%}, large {s['large']:.0%}")
    print(f"written to {args.out} in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
