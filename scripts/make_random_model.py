#!/usr/bin/env python
"""Write a model file (.npz, model-zoo variable names) with freshly initialised weights.

For trying prediction, export and loading without a trained model, e.g.:
    python scripts/make_random_model.py --out random_r50fpn.npz --config DATA.CLASS_NAMES=coco
    python predict.py --predict some.jpg --load random_r50fpn.npz --config DATA.CLASS_NAMES=coco
"""
import argparse

from maskplus.cli import add_config_arguments, apply_config_arguments, finalize
from maskplus.testing import write_random_model


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the .npz to write")
    parser.add_argument("--seed", type=int, default=0)
    add_config_arguments(parser)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    apply_config_arguments(args)
    finalize(is_training=False)

    n = write_random_model(args.out, args.seed)
    print(f"Wrote {n} freshly initialised variables to {args.out}")


if __name__ == "__main__":
    main()
