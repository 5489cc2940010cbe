"""The paper's Tables 1-6 with our numbers beside the paper's: collection, statistics, rendering.

A run is a log directory holding ``run.json`` (written by train.py: preset and seed) and one or
more ``*-metrics.json`` evaluation files (written by ``predict.py --evaluate``; looked for in the
log directory and its ``eval/`` sub-folder). An evaluation that records a model outside the log
directory (``predict.py --evaluate`` writes the checkpoint it ran) scores another run: it is left
out, so that no row shows another run's numbers under this run's preset. Metric values are fractions (COCOeval's convention)
and are shown x100 like the paper's.

Each row's change against its table's baseline comes with a 95% paired-bootstrap interval over the
validation images (:mod:`maskplus.evaluation.bootstrap`; it needs the results file each
evaluation records, and the ground truth it recorded), and a verdict on the paper's claimed gain.
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
    """One finished run: its preset, seed and evaluation metrics (the newest evaluation file), and
    that evaluation's record: the results file it scored (with its hash) and the ground truth."""

    def __init__(self, logdir, preset, seed, metrics, dataset, evaluation=None):
        self.logdir, self.preset, self.seed, self.metrics, self.dataset = logdir, preset, seed, metrics, dataset
        self.evaluation = evaluation or {}


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
        evaluations.append((os.path.getmtime(path), dict(content, metrics_file=path)))
    if not evaluations:
        raise ValueError(f"{logdir}: no evaluation of this run found (*-metrics.json from predict.py --evaluate"
                         f"{' on ' + dataset if dataset else ''}"
                         f"{'; left out, as they score other models: ' + '; '.join(foreign) if foreign else ''}).")
    newest = max(evaluations, key=lambda e: e[0])[1]
    return Run(logdir, info["preset"], info.get("seed"), newest["metrics"], newest.get("dataset"), newest)


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


# ------------------------------------------------------------------ intervals of the deltas
def results_file(run):
    """The results file the run's evaluation scored, or (None, why not): the json beside the metrics
    file (predict.py's naming; the log directory may have moved), else the path recorded; its
    contents must still hash as recorded."""
    from maskplus.evaluation.coco_eval import file_sha1
    ev = run.evaluation
    candidates = [ev.get("results")]
    if ev.get("metrics_file", "").endswith("-metrics.json"):
        candidates.insert(0, ev["metrics_file"][:-len("-metrics.json")] + ".json")
    path = next((c for c in candidates if c and os.path.isfile(c)), None)
    if path is None:
        return None, f"{run.logdir}: the results file of its evaluation is gone ({ev.get('results')})"
    if ev.get("results_sha1") and file_sha1(path) != ev["results_sha1"]:
        return None, f"{run.logdir}: {path} is not the results file its metrics were computed from (changed since)"
    return path, None


def delta_intervals(tables, by_preset, resamples=1000, seed=0, annotations=None, warn=None):
    """{(table number, preset): :class:`~maskplus.evaluation.bootstrap.Comparison`} of the AP (the
    table's IoU type, x100) of each row's runs (their mean) against its table's baseline runs, with
    the 95% paired-bootstrap interval over the ground truth's images. ``annotations``: the ground
    truth (default: the one the evaluations recorded, which must agree). A row whose runs or
    baseline lack a usable results file gets no interval; ``warn`` is told why, once per run."""
    from maskplus.evaluation.bootstrap import Comparison, mean_over_runs, resampled_metrics
    from maskplus.evaluation.matching import ResultsError, load_ground_truth, load_results, match_results
    warn = warn or (lambda message: None)
    wanted = []
    for number, table in sorted(tables.items(), key=lambda t: int(t[0])):
        base = by_preset.get(table["rows"][0]["preset"], [])
        for row in table["rows"][1:]:
            if by_preset.get(row["preset"]) and base:
                wanted.append((number, table["iou_type"], row["preset"], base, by_preset[row["preset"]]))
    if not wanted:
        return {}
    runs = {id(r): r for _, _, _, base, rows in wanted for r in base + rows}
    paths, missing = {}, set()
    for key, run in runs.items():
        paths[key], why = results_file(run)
        if why:
            warn(f"no interval for rows with {why}")
            missing.add(key)
    truth = _ground_truth([r for k, r in runs.items() if k not in missing], annotations, warn)
    if truth is None:
        return {}
    try:
        gt = load_ground_truth(truth)
    except ResultsError as e:
        warn(f"no intervals: {e}")
        return {}
    # each run once: loaded, matched with the IoU types its tables need, resampled, let go
    needed = {}
    for _, iou_type, _, base, rows in wanted:
        for r in base + rows:
            needed.setdefault(id(r), set()).add(iou_type)
    metrics = {}
    for key, types in needed.items():
        if key in missing:
            continue
        try:
            results = load_results(paths[key], gt)
            for iou_type in sorted(types):
                metrics[key, iou_type] = resampled_metrics(match_results(gt, results, iou_type), resamples, seed)
        except ResultsError as e:
            warn(f"no interval for rows with {runs[key].logdir}: {e}")
            missing.add(key)
        results = None

    out = {}
    for number, iou_type, preset, base, rows in wanted:
        if any(id(r) in missing for r in base + rows):
            continue
        a = mean_over_runs([metrics[id(r), iou_type] for r in base])["AP"]
        b = mean_over_runs([metrics[id(r), iou_type] for r in rows])["AP"]
        out[number, preset] = Comparison.from_deltas(iou_type, "AP", a[0], b[0], b[1] - a[1])
    return out


def _ground_truth(runs, annotations, warn):
    if annotations:
        return annotations
    recorded = {os.path.realpath(r.evaluation["annotations"]) for r in runs if r.evaluation.get("annotations")}
    if len(recorded) > 1:
        warn(f"no intervals: the evaluations scored different ground truths ({', '.join(sorted(recorded))}); "
             f"give the one to use with --annotations")
        return None
    if not recorded or not os.path.isfile(next(iter(recorded))):
        warn("no intervals: the evaluations do not record their ground truth (evaluated before it was recorded, "
             "or it moved); give it with --annotations")
        return None
    return next(iter(recorded))


ONE_SEED = "no verdict: 1 seed"


def seed_aware_interval(comparison, base_runs, row_runs):
    """The row's ΔAP interval over the images widened by the seeds' spread of both rows
    (:func:`~maskplus.evaluation.bootstrap.widened_by_seeds`), or None: no interval, or a row with
    one run."""
    from maskplus.evaluation.bootstrap import widened_by_seeds
    if comparison is None or np.isnan(comparison.low):
        return None
    key = f"{comparison.iou_type}/{comparison.metric}"
    return widened_by_seeds(comparison.delta, comparison.low, comparison.high,
                            [100.0 * r.metrics[key] for r in base_runs], [100.0 * r.metrics[key] for r in row_runs])


def claim_verdict(paper_delta, comparison, interval):
    """What our seed-aware ``interval`` (:func:`seed_aware_interval`) says of the paper's claimed
    gain: confirms (above 0), contradicts (below 0), cannot tell (it holds 0); no verdict with one run
    in either row, as one seed's luck is unmeasured; "-" when there is no comparison or the paper
    claims no gain."""
    if comparison is None or not paper_delta > 0 or np.isnan(comparison.low):
        return "-"
    if interval is None:
        return ONE_SEED
    low, high = interval
    if low > 0:
        return "confirms"
    if high < 0:
        return "contradicts"
    return "cannot tell"


def _interval(bounds):
    return "-" if bounds is None or np.isnan(bounds[0]) else f"[{bounds[0]:+.1f}, {bounds[1]:+.1f}]"


def table_rows(table, by_preset, intervals=None, number=None):
    """Rows [method, source, AP..APl, ΔAP, Boundary AP, ΔAP interval over the images, the same
    widened by the seeds' spread, paper's gain] for one paper table: the paper's line, then ours (mean
    ± std over seeds) with the change against our own baseline, its 95% bootstrap interval
    (``intervals``: :func:`delta_intervals`), that interval with the seeds' noise and the verdict on
    the paper's claimed gain."""
    iou_type = table["iou_type"]
    paper_base = table["rows"][0]["paper"][0]
    base_runs = by_preset.get(table["rows"][0]["preset"], [])
    ours_base = summarise(base_runs, iou_type).get("AP")
    rows = []
    for row in table["rows"]:
        paper = row["paper"]
        rows.append([row["method"], "paper"] + [f"{v:.1f}" for v in paper] + [f"{paper[0] - paper_base:+.1f}", "-",
                                                                              "-", "-", "-"])
        runs = by_preset.get(row["preset"], [])
        stats = summarise(runs, iou_type)
        delta = "-"
        if "AP" in stats and ours_base is not None:
            delta = f"{stats['AP'][0] - ours_base[0]:+.1f}"
        comparison = (intervals or {}).get((number, row["preset"]))
        widened = seed_aware_interval(comparison, base_runs, runs)
        label = f"ours ({len(runs)} run{'s' if len(runs) != 1 else ''})" if runs else "ours (no run)"
        rows.append(["", label] + [_fmt(stats.get(col)) for col in COLUMNS]
                    + [delta, _fmt(stats.get("boundary")),
                       _interval(None if comparison is None else (comparison.low, comparison.high)),
                       _interval(widened), claim_verdict(paper[0] - paper_base, comparison, widened)])
    return rows


# Boundary AP is always the mask's, also beside Table 5's box AP.
HEADERS = ["Method", "Source"] + COLUMNS + ["ΔAP", "mask Boundary AP", "ΔAP 95% interval: images",
                                            "images + seeds", "paper's gain"]


def render_table(number, table, by_preset, fmt="github", intervals=None):
    kind = "box AP" if table["iou_type"] == "bbox" else "mask AP"
    title = f"Table {number}: {table['title']}" + ("" if kind in table["title"] else f" ({kind})")
    return title + "\n\n" + tabulate(table_rows(table, by_preset, intervals, number), headers=HEADERS, tablefmt=fmt,
                                      disable_numparse=True)


INTERVAL_LEGEND = (
    "ΔAP: our row's AP (mean over its runs) minus our baseline's. Its 95% interval over the images is a paired "
    "bootstrap over the validation images ({resamples} resamples): which images the set holds. \"images + seeds\" "
    "widens it by the spread of both rows' seeds (a Welch t interval, added in quadrature), and needs two runs in "
    "each row. Paper's gain: that interval above 0 confirms the paper's gain, below 0 contradicts it, holding 0 "
    "cannot tell; with one run in either row there is no verdict, as one seed's luck is unmeasured "
    "(docs/COMPARING.md).")


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
