#!/usr/bin/env python
"""The cost of TRAIN.DETERMINISTIC=True in training step time; appends the result to BENCHMARKS.md.

    python scripts/benchmark_determinism.py [--rounds 2] [--epochs 4] [--steps-per-epoch 15] [--no-write]

Trains the CPU-scale baseline (scripts/ablation_cpu.sh's model, 256-px generated shapes, two
loader processes, one tower) with the mode off and on, alternately (off, on, off, on, ...), so
that both meet the same load of the machine; a step's time is 1 / the throughput each epoch
reports, the first epoch (graph building, warm-up) left out. Reports the medians and their
ratio, and the load average at the start.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from maskplus.precision import cpu_model_name
from scripts.measurements import commit, report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_scale_baseline():
    proc = subprocess.run([sys.executable, "-m", "maskplus.presets", "--cpu-scale", "baseline"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]


def step_times(data, logdir, epochs, steps_per_epoch, deterministic):
    """Seconds per step of each epoch after the first."""
    steps = epochs * steps_per_epoch
    config = cpu_scale_baseline() + [
        f"DATA.BASEDIR={data}", "DATA.NUM_WORKERS=2", "DATA.SEED=1", "TRAIN.NUM_GPUS=1", "TRAIN.EVAL_PERIOD=0",
        f"TRAIN.STEPS_PER_EPOCH={steps_per_epoch}",
        # in batch-8 steps, all three at the end (one tower: 8 steps each): a constant rate after warm-up
        "TRAIN.LR_SCHEDULE=" + str([steps / 8] * 3).replace(" ", ""),
        "TRAIN.WARMUP=10", f"TRAIN.CHECKPOINT_PERIOD={epochs}", f"TRAIN.DETERMINISTIC={deterministic}"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--logdir", logdir, "--config", *config],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"Error: train.py failed ({'on' if deterministic else 'off'}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(logdir, "stats.json")) as f:
        rates = [e["Throughput (samples/sec)"] for e in json.load(f) if "Throughput (samples/sec)" in e]
    return [1.0 / r for r in rates[1:]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (off, on)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps-per-epoch", type=int, default=15)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is left out)")

    folder = tempfile.mkdtemp(prefix="determinism-benchmark-")
    data = os.path.join(folder, "shapes")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_shapes_dataset.py"), "--out", data,
                    "--train", "200", "--val", "4", "--seed", "0"], cwd=ROOT, check=True, capture_output=True)
    load = os.getloadavg()[0]
    times = {False: [], True: []}
    for r in range(args.rounds):
        for deterministic in (False, True):
            logdir = os.path.join(folder, f"run{r}-{'on' if deterministic else 'off'}")
            times[deterministic] += step_times(data, logdir, args.epochs, args.steps_per_epoch, deterministic)
            print(f"round {r + 1}, {'on ' if deterministic else 'off'}: {statistics.median(times[deterministic]):.3f} "
                  f"s/step so far", flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    lines = [f"## {datetime.date.today().isoformat()} — `python scripts/benchmark_determinism.py`"
             + ("" if (args.rounds, args.epochs, args.steps_per_epoch) == (2, 4, 15) else
                f" (--rounds {args.rounds} --epochs {args.epochs} --steps-per-epoch {args.steps_per_epoch})"),
             "",
             "Step time of `TRAIN.DETERMINISTIC=True` against off: the CPU-scale baseline (scripts/ablation_cpu.sh's "
             "model) on 256-px generated shapes, two loader processes, one tower, runs alternated off/on; "
             f"median over {len(times[False])} epochs each (the first epoch of a run left out).",
             f"Machine: {cpu_model_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; commit {commit()}; "
             f"load average {load:.1f} at the start (other processes share the cores).",
             "",
             "| TRAIN.DETERMINISTIC | s/step (median) | epochs' range |",
             "|---|---|---|",
             f"| False | {off:.3f} | {min(times[False]):.3f}-{max(times[False]):.3f} |",
             f"| True | {on:.3f} | {min(times[True]):.3f}-{max(times[True]):.3f} |",
             "",
             f"Ratio on/off: {on / off:.2f}.", ""]
    report("\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
