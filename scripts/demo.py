#!/usr/bin/env python
"""The CPU demo behind `make demo`: generate the shapes dataset (once), train MaskPlus from
scratch with every technique on (preset demo-cpu), evaluate it, and write pictures.

    python scripts/demo.py [--minutes 14.5 | --steps N] [--out demo_output] [--data datasets/shapes]
                           [--resume] [--verbose] [--config KEY=VALUE ...]

The whole demo (dataset, training with its evaluations, pictures) fits in ``--minutes``: training
gets what the other phases leave, and its length in steps is fitted to the step rate measured
after warm-up starts (``train.py --minutes``). ``--steps N`` trains exactly N steps instead.
Each run gets a fresh folder demo_output/run-<time>/ (``--resume`` continues the latest one)
holding the checkpoints, the evaluation (AP table with bbox, segm and Boundary AP), prediction
PNGs for a few validation images, curves.png (loss and AP against training time) and demo.log:
everything the steps printed (config, model summary, statistics), of which the console shows
only progress bars and a few lines per phase (``--verbose`` shows it all). ``--config`` is passed
on to train.py and predict.py after the preset (e.g. ``TRAIN.PRECISION=fp32``).

Ctrl-C (or SIGTERM) is passed on to the running step: train.py writes a checkpoint and stops, the
demo stops after it and ``--resume`` continues; a second Ctrl-C stops train.py at once.
"""
import argparse
import functools
import glob
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

from maskplus.console import CONSOLE_FD  # the variable train.py/predict.py read
from maskplus.engine.run_dir import unused_path
from maskplus.parent_death import die_with_parent
from maskplus.presets import demo_schedule

#: seconds of a demo spent outside the training's own budget: starting train.py (imports) and,
#: after training, predict.py drawing the pictures and the curves, and the few seconds a run can
#: end past its budget
OUTSIDE_TRAINING_SECONDS = 35


class Runner:
    """Runs the demo's steps. Quiet: each step's output goes to ``log_path``; train.py and
    predict.py get the console as the file descriptor in MASKPLUS_CONSOLE_FD for their progress
    bar and few lines. Verbose: everything on the console, as before.

    Each step runs in a process group of its own, so that a Ctrl-C at the terminal reaches only
    this script, which passes it on once per Ctrl-C (train.py: the first writes a checkpoint,
    the second stops at once; other steps and their processes get SIGTERM) and waits for the step
    to end; a step gets SIGTERM if this script dies."""

    def __init__(self, log_path, quiet, resume_hint=""):
        self.log_path, self.quiet, self.resume_hint = log_path, quiet, resume_hint
        self.console_fd = os.dup(sys.stdout.fileno()) if quiet else None
        self.child, self.child_handles_signals, self.interrupted = None, False, None
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._pass_on)

    def _pass_on(self, signum, _frame):
        self.interrupted = signum
        if self.child is not None and self.child.poll() is None:
            if self.child_handles_signals:
                self.child.send_signal(signum)
            else:  # the step and any processes it started
                try:
                    os.killpg(self.child.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        else:  # between steps
            self._stopped()

    def _stopped(self):
        name = signal.Signals(self.interrupted).name
        print(f"\ndemo: stopped on {name}{self.resume_hint}", file=sys.stderr, flush=True)
        sys.exit(128 + self.interrupted)

    def _wait(self, cmd, **kwargs):
        """Run ``cmd`` to its end (see the class doc); its exit code."""
        self.child_handles_signals = os.path.basename(cmd[1]) == "train.py"
        self.child = subprocess.Popen(cmd, cwd=ROOT, process_group=0,
                                      preexec_fn=functools.partial(die_with_parent, os.getpid(), signal.SIGTERM),
                                      **kwargs)
        try:
            return self.child.wait()
        finally:
            self.child = None
            if self.interrupted:
                self._stopped()

    def run(self, cmd, show_stderr=False):
        """Run ``cmd`` from the repository root; on failure, show the end of its log and exit."""
        if not self.quiet:
            print("+ " + " ".join(cmd), flush=True)
            code = self._wait(cmd)
            if code != 0:
                sys.exit(f"demo: command failed with exit code {code}")
            return
        with open(self.log_path, "a") as log:
            log.write("+ " + " ".join(cmd) + "\n")
            log.flush()
            start = log.tell()
            env = dict(os.environ, **{CONSOLE_FD: str(self.console_fd)})
            code = self._wait(cmd, stdout=log, stderr=None if show_stderr else log, env=env,
                              pass_fds=(self.console_fd,))
        if code != 0:
            with open(self.log_path) as log:
                log.seek(start)
                tail = log.read().splitlines()[-25:]
            sys.exit("\n".join(tail) + f"\ndemo: {os.path.basename(cmd[1])} failed with exit code "
                     f"{code}; its whole output is in {self.log_path}")


def dataset_ready(data):
    """Both splits' annotation files exist (written after their images, so a run cut short is redone)."""
    return all(os.path.isfile(os.path.join(data, "annotations", f"instances_{s}2017.json")) for s in ("train", "val"))


def ensure_dataset(runner, data, train, val):
    start = time.time()
    if dataset_ready(data):
        print(f"Dataset: reusing {data}")
        return
    print(f"Dataset: generating {train} training and {val} validation images of shapes ...", flush=True)
    runner.run([PY, "scripts/make_shapes_dataset.py", "--out", data, "--train", str(train), "--val", str(val),
                "--seed", "0"], show_stderr=True)  # its progress bar
    print(f"Dataset: written to {data} in {time.time() - start:.0f} s")


def run_directory(out, resume):
    """The latest run with ``resume``, else a fresh run-<time> (never one that exists)."""
    runs = sorted(glob.glob(os.path.join(out, "run-*")))
    if resume and runs:
        return runs[-1]
    return unused_path(os.path.join(out, time.strftime("run-%Y%m%d-%H%M%S")))


def final_evaluation(logdir):
    """The metrics file the training run wrote when it evaluated its last checkpoint, if any."""
    step = last_step(logdir)
    if not step:
        return None
    path = os.path.join(logdir, f"outputs{step}-coco_val2017-metrics.json")
    return path if os.path.isfile(path) else None


def last_step(logdir):
    """The step of the latest checkpoint in ``logdir`` (0 if none)."""
    steps = [int(p.rsplit("-", 1)[-1][:-len(".index")]) for p in glob.glob(os.path.join(logdir, "model-*.index"))]
    return max(steps, default=0)


def ap_points(stats, kind):
    """(training minutes, AP in %, step) of each evaluation of ``kind`` among stats.json's entries."""
    key = f"coco_val2017/{kind}/AP"
    return [(e["elapsed_seconds"] / 60, 100 * e[key], e["global_step"]) for e in stats if key in e]


def plot_curves(logdir, path):
    """Total loss and AP (bbox, segm, boundary) against training seconds, from stats.json."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(os.path.join(logdir, "stats.json")) as f:
        stats = [e for e in json.load(f) if "elapsed_seconds" in e]
    if not stats:
        return None
    t = [e["elapsed_seconds"] / 60 for e in stats]
    # one time axis for both: the AP of a run that evaluates only at its end is a point at its end
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    ax1.plot(t, [e["total_cost"] for e in stats], label="total loss")
    ax1.plot(t, [e.get("maskrcnn_loss/maskrcnn_loss", float("nan")) for e in stats], label="mask loss")
    ax1.set_xlabel("training time (min)")
    ax1.legend()
    top = 0.0
    for kind in ("bbox", "segm", "boundary"):
        points = ap_points(stats, kind)
        if points:
            # the last AP named by its step: a run stopped early evaluated last before its schedule's end
            minutes, ap, step = zip(*points)
            ax2.plot(minutes, ap, marker="o", label=f"{kind} AP ({ap[-1]:.1f} at step {step[-1]})")
            top = max(top, *ap)
    ax2.set_xlabel("training time (min)")
    ax2.set_ylabel("AP (val)")
    ax2.set_ylim(0, 1.15 * top + 1)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--data", default="datasets/shapes")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue the latest run instead of starting one")
    parser.add_argument("--minutes", type=float, default=14.5,
                        help="time for the whole demo; training gets what the other steps leave (default 14.5: "
                             "`make demo` ends within 15 minutes after installation)")
    parser.add_argument("--steps", type=int, default=0, help="train exactly this many steps instead (reproducible)")
    parser.add_argument("--pictures", type=int, default=6)
    parser.add_argument("--verbose", action="store_true", help="show every step's whole output on the console")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config changes on top of the demo-cpu preset, for train.py and predict.py")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps <= 0 and args.minutes <= 0:
        parser.error("--minutes must be positive")

    start = time.time()
    data = os.path.abspath(args.data)
    logdir = os.path.abspath(run_directory(args.out, args.resume))
    os.makedirs(logdir, exist_ok=True)
    log_path = os.path.join(logdir, "demo.log")
    runner = Runner(log_path, quiet=not args.verbose,
                    resume_hint=" (run the same command with --resume to continue from the last checkpoint)")
    what = f"{args.steps} training steps" if args.steps else f"a {args.minutes:g}-minute budget"
    print(f"MaskPlus demo ({what}) in {logdir}")
    ensure_dataset(runner, data, args.train_images, args.val_images)
    config = [f"DATA.BASEDIR={data}"]
    if args.steps:
        config += demo_schedule(args.steps)
        budget = []
        print(f"Training: {args.steps} steps")
    else:
        minutes = (args.minutes * 60 - (time.time() - start) - OUTSIDE_TRAINING_SECONDS) / 60
        if minutes < 0.5:
            sys.exit(f"demo: --minutes {args.minutes:g} leaves {minutes:.1f} min for training; give more time")
        budget = ["--minutes", f"{minutes:.2f}"]
        print(f"Training: {minutes:.1f} min (steps fitted to this machine's speed after warm-up)")
    config += args.config

    train_start = time.time()
    runner.run([PY, "train.py", "--preset", "demo-cpu", "--logdir", logdir, *budget, "--config", *config])
    train_minutes = (time.time() - train_start) / 60
    steps = last_step(logdir)
    print(f"Training: {steps} steps in {train_minutes:.1f} min")

    # predict.py takes the model's config from the run directory (its run.json): only where the
    # data is, and the user's changes
    evaluation = [f"DATA.BASEDIR={data}"] + args.config
    metrics_path = final_evaluation(logdir)
    if metrics_path is None:  # no evaluation of the last checkpoint during training: run one
        print("Evaluating the last checkpoint ...", flush=True)
        results = os.path.join(logdir, "eval", "val2017.json")
        runner.run([PY, "predict.py", "--load", logdir, "--evaluate", results, "--config", *evaluation])
        metrics_path = results.replace(".json", "-metrics.json")
    val_dir = os.path.join(data, "val2017")
    images = sorted(os.listdir(val_dir))[:args.pictures]
    pictures = os.path.join(logdir, "predictions")
    runner.run([PY, "predict.py", "--load", logdir, "--output-dir", pictures,
                "--predict", *[os.path.join(val_dir, i) for i in images], "--config", *evaluation])
    curves = plot_curves(logdir, os.path.join(logdir, "curves.png"))
    print(f"Pictures: {len(images)} validation image{'s' if len(images) != 1 else ''} with the predictions drawn "
          f"in {pictures}/")

    from maskplus.evaluation.coco_eval import format_metrics_table
    with open(metrics_path) as f:
        metrics = json.load(f)["metrics"]
    print("\nMaskPlus demo: COCO metrics on the generated validation set (%)")
    print(format_metrics_table(metrics))
    print(f"\nTraining took {train_minutes:.1f} min ({steps} steps); predictions: {pictures}/; "
          f"curves: {curves}; checkpoints and everything else in {logdir}")
    if runner.quiet:
        print(f"Log (config, model summary, statistics, every step's output): {log_path}")
    print(f"Total demo time: {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
