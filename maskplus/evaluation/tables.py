"""The paper's Tables 1-6 with our numbers beside the paper's: collection, statistics, rendering.

A run is a log directory holding ``run.json`` (written by train.py: preset and seed) and one or
more ``*-metrics.json`` evaluation files (written by ``predict.py --evaluate``; looked for in the
log directory and its ``eval/`` sub-folder). An evaluation that records a model outside the log
directory (``predict.py --evaluate`` writes the checkpoint it ran) scores another run: it is left
out, so that no row shows another run's numbers under this run's preset. Metric values are fractions (COCOeval's convention)
and are shown x100 like the paper's.
"""
import glob
import json
import os

import numpy as np
from tabulate import tabulate

PAPER_NUMBERS = os.path.join(os.path.dirname(__file__), "paper_numbers.json")
COLUMNS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def load_paper_numbers(path=PAPER_NUMBERS):
    with open(path) as f:
        return json.load(f)["tables"]


class Run:
    """One finished run: its preset, seed and evaluation metrics (the newest evaluation file)."""

    def __init__(self, logdir, preset, seed, metrics, dataset):
        self.logdir, self.preset, self.seed, self.metrics, self.dataset = logdir, preset, seed, metrics, dataset


def load_run(logdir, dataset=None):
    """A :class:`Run` from a log directory, or a ValueError naming what is missing."""
    info_path = os.path.join(logdir, "run.json")
    if not os.path.isfile(info_path):
        raise ValueError(f"{logdir}: no run.json (not a directory written by train.py).")
    with open(info_path) as f:
        info = json.load(f)
    if not info.get("preset"):
        raise ValueError(f"{logdir}: the run was not started with --preset, so its table row is unknown.")
    candidates = glob.glob(os.path.join(logdir, "*-metrics.json")) + glob.glob(os.path.join(logdir, "eval", "*-metrics.json"))
    evaluations, foreign = [], []
    for path in candidates:
        with open(path) as f:
            content = json.load(f)
        if dataset is not None and content.get("dataset") != dataset:
            continue
        model = content.get("model") if isinstance(content.get("model"), dict) else {}
        if model.get("checkpoint") and not _inside(model["checkpoint"], logdir):
            foreign.append(f"{os.path.basename(path)} scores {model['checkpoint']}")
            continue
        evaluations.append((os.path.getmtime(path), content))
    if not evaluations:
        raise ValueError(f"{logdir}: no evaluation of this run found (*-metrics.json from predict.py --evaluate"
                         f"{' on ' + dataset if dataset else ''}"
                         f"{'; left out, as they score other models: ' + '; '.join(foreign) if foreign else ''}).")
    newest = max(evaluations, key=lambda e: e[0])[1]
    return Run(logdir, info["preset"], info.get("seed"), newest["metrics"], newest.get("dataset"))


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def group_by_preset(runs):
    out = {}
    for run in runs:
        out.setdefault(run.preset, []).append(run)
    return out


def summarise(runs, iou_type):
    """{column: (mean, std, n)} over runs, x100; std is the sample standard deviation (0 for n=1)."""
    out = {}
    for col in COLUMNS + ["boundary"]:
        key = "boundary/AP" if col == "boundary" else f"{iou_type}/{col}"
        values = [100.0 * r.metrics[key] for r in runs if r.metrics.get(key) is not None]
        if values:
            out[col] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))
    return out


def _fmt(stat):
    if stat is None:
        return "-"
    mean, std, n = stat
    return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"


def table_rows(table, by_preset):
    """Rows [method, source, AP..APl, ΔAP, Boundary AP] for one paper table: the paper's line,
    then ours (mean ± std over seeds) with the change against our own baseline."""
    iou_type = table["iou_type"]
    paper_base = table["rows"][0]["paper"][0]
    ours_base = summarise(by_preset.get(table["rows"][0]["preset"], []), iou_type).get("AP")
    rows = []
    for row in table["rows"]:
        paper = row["paper"]
        rows.append([row["method"], "paper"] + [f"{v:.1f}" for v in paper] + [f"{paper[0] - paper_base:+.1f}", "-"])
        runs = by_preset.get(row["preset"], [])
        stats = summarise(runs, iou_type)
        delta = "-"
        if "AP" in stats and ours_base is not None:
            delta = f"{stats['AP'][0] - ours_base[0]:+.1f}"
        label = f"ours ({len(runs)} run{'s' if len(runs) != 1 else ''})" if runs else "ours (no run)"
        rows.append(["", label] + [_fmt(stats.get(c)) for c in COLUMNS] + [delta, _fmt(stats.get("boundary"))])
    return rows


# Boundary AP is always the mask's, also beside Table 5's box AP.
HEADERS = ["Method", "Source"] + COLUMNS + ["ΔAP", "mask Boundary AP"]


def render_table(number, table, by_preset, fmt="github"):
    kind = "box AP" if table["iou_type"] == "bbox" else "mask AP"
    title = f"Table {number}: {table['title']}" + ("" if kind in table["title"] else f" ({kind})")
    return title + "\n\n" + tabulate(table_rows(table, by_preset), headers=HEADERS, tablefmt=fmt, disable_numparse=True)


def delta_chart(tables, by_preset, path):
    """A PNG bar chart of ΔAP against the baseline per technique: ours (with std) and the paper's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, ours, ours_err, paper = [], [], [], []
    seen = set()
    for number, table in sorted(tables.items(), key=lambda t: int(t[0])):
        iou_type = table["iou_type"]
        base = summarise(by_preset.get(table["rows"][0]["preset"], []), iou_type).get("AP")
        for row in table["rows"][1:]:
            key = (row["preset"], iou_type)
            if key in seen:
                continue
            seen.add(key)
            stats = summarise(by_preset.get(row["preset"], []), iou_type).get("AP")
            labels.append(f"{row['preset']} (T{number}, {'box' if iou_type == 'bbox' else 'mask'})")
            paper.append(row["paper"][0] - table["rows"][0]["paper"][0])
            ours.append(stats[0] - base[0] if stats and base else np.nan)
            ours_err.append(stats[1] if stats else 0.0)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(labels)), 5.5))
    ax.bar(x - 0.2, paper, 0.4, label="paper")
    ax.bar(x + 0.2, ours, 0.4, yerr=ours_err, capsize=3, label="ours (mean ± std)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    # preset names are long: slanted labels do not overlap
    ax.set_xticklabels(labels, fontsize=8, rotation=30, ha="right")
    ax.set_ylabel("Δ AP vs baseline")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
