#!/usr/bin/env python
"""Gather finished runs into the paper's Tables 1-6, with the paper's numbers beside ours.

    python scripts/paper_tables.py train_log/paper/*/seed* [--dataset coco_val2017]
        [--tables 1 3] [--markdown tables.md] [--chart delta_ap.png]

Each LOGDIR is a run of train.py --preset ROW that predict.py --evaluate has scored (see
scripts/reproduce_table.sh). Several runs of the same preset (seeds) give mean ± std.
"""
import argparse
import sys

from maskplus.evaluation.tables import delta_chart, group_by_preset, load_paper_numbers, load_run, render_table


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdirs", nargs="+")
    parser.add_argument("--dataset", help="use evaluations of this dataset only (default: the newest of each run)")
    parser.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--markdown", help="also write the tables as Markdown here")
    parser.add_argument("--chart", help="also write a PNG bar chart of ΔAP per technique here")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    runs, problems = [], []
    for logdir in args.logdirs:
        try:
            runs.append(load_run(logdir, args.dataset))
        except ValueError as e:
            problems.append(str(e))
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    if not runs:
        sys.exit("Error: no usable run among the given directories.")
    by_preset = group_by_preset(runs)
    tables = {k: v for k, v in load_paper_numbers().items() if int(k) in args.tables}
    text = "\n\n".join(render_table(k, t, by_preset, fmt="github") for k, t in sorted(tables.items(), key=lambda t: int(t[0])))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.chart:
        delta_chart(tables, by_preset, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
