#!/usr/bin/env python
"""Gather finished runs into the paper's Tables 1-6, with the paper's numbers beside ours.

    python scripts/paper_tables.py train_log/paper/*/seed* [--dataset coco_val2017]
        [--tables 1 3] [--markdown tables.md] [--chart delta_ap.png]
        [--resamples 1000] [--seed 0] [--annotations instances_val2017.json] [--no-intervals]

Each LOGDIR is a run of train.py --preset ROW that predict.py --evaluate has scored (see
scripts/reproduce_table.sh). Several runs of the same preset (seeds) give mean ± std. Each row's
ΔAP against its table's baseline gets a 95% paired-bootstrap interval over the validation images
(from the results files the evaluations recorded; a few seconds per run and IoU type on COCO val)
and a verdict on the paper's claimed gain: confirms, contradicts or cannot tell (docs/COMPARING.md).
"""
import argparse
import sys

from maskplus.evaluation.tables import (INTERVAL_LEGEND, delta_chart, delta_intervals, group_by_preset,
                                        load_paper_numbers, load_run, render_table)


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdirs", nargs="+")
    parser.add_argument("--dataset", help="use evaluations of this dataset only (default: the newest of each run)")
    parser.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--markdown", help="also write the tables as Markdown here")
    parser.add_argument("--chart", help="also write a PNG bar chart of ΔAP per technique here")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the ΔAP intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling")
    parser.add_argument("--annotations", help="the ground truth of the intervals (default: the one the "
                                              "evaluations recorded)")
    parser.add_argument("--no-intervals", action="store_true", help="no ΔAP intervals (no results files read)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be at least 1")

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
    intervals = {}
    if not args.no_intervals:
        intervals = delta_intervals(tables, by_preset, args.resamples, args.seed, args.annotations,
                                    warn=lambda message: print(message, file=sys.stderr))
    text = "\n\n".join([INTERVAL_LEGEND.format(resamples=args.resamples) if intervals else
                         "ΔAP intervals: none (--no-intervals, or no run's results file could be read: see above)."]
                        + [render_table(k, t, by_preset, fmt="github", intervals=intervals)
                           for k, t in sorted(tables.items(), key=lambda t: int(t[0]))])
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.chart:
        delta_chart(tables, by_preset, args.chart)
        print(f"chart: {args.chart}")


if __name__ == "__main__":
    main()
