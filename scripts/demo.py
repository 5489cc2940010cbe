#!/usr/bin/env python
"""The CPU demo behind `make demo`: generate the shapes dataset (once), train MaskPlus from
scratch with every technique on (preset demo-cpu), evaluate it, and write pictures.

    python scripts/demo.py [--out demo_output] [--data datasets/shapes] [--resume] [--steps N]

Each run gets a fresh folder demo_output/run-<time>/ (``--resume`` continues the latest one)
holding the training log, the evaluation (AP table with bbox, segm and Boundary AP), prediction
PNGs for a few validation images and curves.png (loss and AP against training time).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
sys.path.insert(0, ROOT)

from maskplus.presets import demo_schedule  # noqa: E402


def run(cmd, **kwargs):
    print("+ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"demo: command failed with exit code {proc.returncode}")
    return proc


def ensure_dataset(data, train, val):
    if os.path.isfile(os.path.join(data, "annotations", "instances_val2017.json")):
        print(f"Dataset: reusing {data}")
        return
    run([PY, "scripts/make_shapes_dataset.py", "--out", data, "--train", str(train), "--val", str(val), "--seed", "0"])


def run_directory(out, resume):
    runs = sorted(glob.glob(os.path.join(out, "run-*")))
    if resume and runs:
        return runs[-1]
    return os.path.join(out, time.strftime("run-%Y%m%d-%H%M%S"))


def final_evaluation(logdir):
    """The metrics file the training run wrote when it evaluated its last checkpoint, if any."""
    steps = [int(p.rsplit("-", 1)[-1][:-len(".index")]) for p in glob.glob(os.path.join(logdir, "model-*.index"))]
    if not steps:
        return None
    path = os.path.join(logdir, f"outputs{max(steps)}-coco_val2017-metrics.json")
    return path if os.path.isfile(path) else None


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
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(t, [e["total_cost"] for e in stats], label="total loss")
    ax1.plot(t, [e.get("maskrcnn_loss/maskrcnn_loss", float("nan")) for e in stats], label="mask loss")
    ax1.set_xlabel("training time (min)")
    ax1.legend()
    for kind in ("bbox", "segm", "boundary"):
        points = [(e["elapsed_seconds"] / 60, 100 * e[f"coco_val2017/{kind}/AP"]) for e in stats
                  if f"coco_val2017/{kind}/AP" in e]
        if points:
            ax2.plot(*zip(*points), marker="o", label=f"{kind} AP")
    ax2.set_xlabel("training time (min)")
    ax2.set_ylabel("AP (val)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_output")
    parser.add_argument("--data", default="datasets/shapes")
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--resume", action="store_true", help="continue the latest run instead of starting one")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: the preset's 600)")
    parser.add_argument("--pictures", type=int, default=6)
    args = parser.parse_args(argv)

    start = time.time()
    data = os.path.abspath(args.data)
    ensure_dataset(data, args.train_images, args.val_images)
    logdir = os.path.abspath(run_directory(args.out, args.resume))
    os.makedirs(logdir, exist_ok=True)
    config = [f"DATA.BASEDIR={data}"]
    if args.steps:
        config += demo_schedule(args.steps)
    print(f"Run directory: {logdir}")

    train_start = time.time()
    run([PY, "train.py", "--preset", "demo-cpu", "--logdir", logdir, "--config", *config])
    train_minutes = (time.time() - train_start) / 60

    metrics_path = final_evaluation(logdir)
    if metrics_path is None:  # no evaluation of the last checkpoint during training: run one
        results = os.path.join(logdir, "eval", "val2017.json")
        run([PY, "predict.py", "--preset", "demo-cpu", "--load", logdir, "--evaluate", results, "--config", *config])
        metrics_path = results.replace(".json", "-metrics.json")
    val_dir = os.path.join(data, "val2017")
    images = sorted(os.listdir(val_dir))[:args.pictures]
    pictures = os.path.join(logdir, "predictions")
    run([PY, "predict.py", "--preset", "demo-cpu", "--load", logdir, "--output-dir", pictures,
         "--predict", *[os.path.join(val_dir, i) for i in images], "--config", *config])
    curves = plot_curves(logdir, os.path.join(logdir, "curves.png"))

    from maskplus.evaluation.coco_eval import format_metrics_table
    with open(metrics_path) as f:
        metrics = json.load(f)["metrics"]
    print("\nMaskPlus demo: COCO metrics on the generated validation set (%)")
    print(format_metrics_table(metrics))
    print(f"\nTraining took {train_minutes:.1f} min; predictions: {pictures}/; "
          f"curves: {curves}; everything in {logdir}")
    print(f"Total demo time: {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
