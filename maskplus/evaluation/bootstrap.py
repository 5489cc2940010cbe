"""Paired bootstrap over images of COCO AP: is B's AP higher than A's by more than the evaluation's
own noise (which images the evaluation set happens to hold)?

Each results file is matched once (:mod:`maskplus.evaluation.matching`). A resample of the images,
drawn with replacement, is scored by re-accumulating precision and recall from those matches with
each image weighted by how often it was drawn: no IoU is computed and nothing is matched again,
so a thousand resamples of COCO val take seconds per results file and IoU type.

The AP of a resample is exactly COCOeval's AP on the resampled set in which an image drawn k times
is k images, in dataset order, the copies of one image one after another (the order decides how
detections of equal score are ranked, to which COCOeval's accumulation is sensitive).
"""
from dataclasses import dataclass

import numpy as np

from maskplus.evaluation.matching import (IOU_THRESHOLDS, IOU_TYPES, METRICS, RECALL_THRESHOLDS,  # noqa: F401
                                          MatchTable, ResultsError)

_T50 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.5))[0])
_T75 = int(np.flatnonzero(np.isclose(IOU_THRESHOLDS, 0.75))[0])


# ------------------------------------------------------------------ accumulation with image weights
def _plan(table):
    """Index arrays that let :func:`precision` re-accumulate any weighting of the images in a few
    vectorised passes: one over all detections, the others over the true positives (built once)."""
    if "plan" in table.cache:
        return table.cache["plan"]
    num_t, num_e = table.true_positive.shape
    num_k = table.num_categories
    cat_first = np.searchsorted(table.category, np.arange(num_k), side="left")
    # blocks: runs of detections of one image and category with equal scores; COCOeval ranks the
    # copies of a repeated image one after another, so such a run repeats as a whole
    new_block = np.ones(num_e, bool)
    new_block[1:] = ((table.category[1:] != table.category[:-1]) | (table.image[1:] != table.image[:-1])
                     | (table.score[1:] != table.score[:-1]))
    block = np.cumsum(new_block) - 1
    block_start = np.flatnonzero(new_block)
    block_size = np.diff(np.append(block_start, num_e))

    # true positives and ignored detections, threshold-major: (threshold, category) groups in order
    t_tp, tp_pos = np.nonzero(table.true_positive)
    t_ig, ig_pos = np.nonzero(table.ignored)
    tp_group = t_tp * num_k + table.category[tp_pos]
    ig_group = t_ig * num_k + table.category[ig_pos]
    tp_group_first = np.searchsorted(tp_group, tp_group, side="left")  # index of the group's first
    # ignored detections of the group ranked before each true positive: [ig_first, ig_upto)
    ig_key, tp_key = ig_group * num_e + ig_pos, tp_group * num_e + tp_pos
    ig_first = np.searchsorted(ig_key, tp_group * num_e, side="left")
    ig_upto = np.searchsorted(ig_key, tp_key, side="left")
    multi = block_size[block[tp_pos]] > 1
    plan = {"num_t": num_t, "num_k": num_k, "cat_first": np.minimum(cat_first, max(num_e - 1, 0)),
            "tp_pos": tp_pos.astype(np.int64), "tp_cat": table.category[tp_pos], "tp_group": tp_group,
            "tp_group_first": tp_group_first, "ig_pos": ig_pos, "ig_first": ig_first, "ig_upto": ig_upto,
            "multi": np.flatnonzero(multi)}
    if multi.any():
        # per true positive in a block of several: the block's true and false positives, the true
        # ones up to it (inclusive) and the false ones before it, at its threshold
        m = plan["multi"]
        t, e = t_tp[m], tp_pos[m]
        start, size = block_start[block[e]], block_size[block[e]]
        width = int(size.max())
        col = np.arange(width)[None, :]
        inside = col < size[:, None]
        at = np.where(inside, start[:, None] + col, 0)
        tp_in = table.true_positive[t[:, None], at] & inside
        fp_in = ~(table.true_positive | table.ignored)[t[:, None], at] & inside
        here = (e - start)[:, None]
        plan.update(block_tp=tp_in.sum(1), block_fp=fp_in.sum(1), tp_upto=(tp_in & (col <= here)).sum(1),
                    fp_before=(fp_in & (col < here)).sum(1))
    table.cache["plan"] = plan
    return plan


def precision(table, counts=None):
    """COCOeval's interpolated precision [T, K, R] of the images weighted by ``counts`` ([N] how many
    times each is drawn; None = each once), and [K] whether each category has ground truth there
    (COCOeval leaves the others out, as -1)."""
    p = _plan(table)
    num_t, num_k, num_r = p["num_t"], p["num_k"], len(RECALL_THRESHOLDS)
    counts = np.ones(table.num_images, np.int64) if counts is None else np.asarray(counts, np.int64)
    # int32 running sums while they cannot overflow: half the memory traffic
    dtype = np.int32 if len(table.image) * max(int(counts.max(initial=0)), 1) < 2 ** 31 else np.int64
    weight = counts.astype(dtype)[table.image]
    total = np.cumsum(weight, dtype=dtype)
    cat_before = total[p["cat_first"]] - weight[p["cat_first"]]
    pos = p["tp_pos"]
    w = weight[pos]
    # weighted counts, within the (threshold, category), of what is ranked before each true positive:
    # all detections, true positives, ignored ones; the rest are false positives
    all_before = total[pos] - w - cat_before[p["tp_cat"]]
    run = np.cumsum(w, dtype=dtype) - w
    tp_before = run - run[p["tp_group_first"]]
    fp_before = all_before - tp_before
    if len(p["ig_pos"]):
        ig_run = np.concatenate(([0], np.cumsum(weight[p["ig_pos"]], dtype=dtype)))
        fp_before -= ig_run[p["ig_upto"]] - ig_run[p["ig_first"]]

    gt_count = counts @ table.not_ignored  # [K]
    npig = np.maximum(gt_count, 1).astype(np.float64)[p["tp_cat"]]
    best = np.zeros(num_t * num_k * num_r)
    # A detection of an image drawn c times is c true positives in a row (the copies follow each
    # other): the last of them has the highest recall and precision, so it alone counts.
    n = (tp_before + w).astype(np.float64)
    prec = _precision_at(n, fp_before.astype(np.float64))
    prec[p["multi"]] = 0.0  # their copies are not in a row: below
    np.maximum.at(best, _bin(p["tp_group"], n, npig), prec)
    if len(p["multi"]):
        # equal scores in one image: the whole run repeats per copy, and every copy's points count
        m = p["multi"]
        c = w[m].astype(np.int64)
        start_tp = tp_before[m] - c * (p["tp_upto"] - 1)
        start_fp = fp_before[m] - c * p["fp_before"]
        src = np.repeat(np.arange(len(m)), c)
        copy = np.arange(len(src)) - np.repeat(np.cumsum(c) - c, c)
        n = (start_tp[src] + copy * p["block_tp"][src] + p["tp_upto"][src]).astype(np.float64)
        fp = (start_fp[src] + copy * p["block_fp"][src] + p["fp_before"][src]).astype(np.float64)
        np.maximum.at(best, _bin(p["tp_group"][m][src], n, npig[m][src]), _precision_at(n, fp))
    # interpolated precision at recall r: the best precision at any recall >= r
    best = best.reshape(num_t * num_k, num_r)
    best = np.maximum.accumulate(best[:, ::-1], axis=1)[:, ::-1]
    return best.reshape(num_t, num_k, num_r), gt_count > 0


def _recall_bin(recall):
    """The index of the highest recall threshold <= ``recall`` (what searchsorted(RECALL_THRESHOLDS,
    recall, "right") - 1 gives, with the same float comparisons, in fewer passes)."""
    last = len(RECALL_THRESHOLDS) - 1
    bins = np.minimum((recall * last).astype(np.int64), last)
    bins -= recall < RECALL_THRESHOLDS[bins]
    bins += (recall >= RECALL_THRESHOLDS[np.minimum(bins + 1, last)]) & (bins < last)
    return bins


def _precision_at(n, fp):
    """COCOeval's precision after n true and fp false positives, with its arithmetic."""
    return n / (fp + n + np.spacing(1))


def _bin(group, n, npig):
    """Flat index into [groups x R] of each point's group and recall bin (recall n / npig)."""
    return group * len(RECALL_THRESHOLDS) + _recall_bin(n / npig)


def summarise(table, counts=None, per_category=False):
    """{"AP", "AP50", "AP75"} (fractions, None where no category has ground truth) of the images
    weighted by ``counts``; with ``per_category`` also {"per_category": [K] AP, NaN where absent}."""
    q, present = precision(table, counts)
    out = {}
    for name, rows in (("AP", slice(None)), ("AP50", _T50), ("AP75", _T75)):
        out[name] = float(np.mean(q[rows][..., present, :])) if present.any() else None
    if per_category:
        per = np.full(table.num_categories, np.nan)
        per[present] = q[:, present, :].mean(axis=(0, 2))
        out["per_category"] = per
    return out


# ------------------------------------------------------------------ the paired bootstrap
def resampled_counts(num_images, resamples, seed):
    """``resamples`` arrays [num_images]: how often each image is drawn in N draws with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.bincount(rng.integers(0, num_images, size=num_images), minlength=num_images)


@dataclass
class Comparison:
    """B - A of one metric (x100, AP points): on the whole set, and over the resamples."""
    iou_type: str
    metric: str
    a: float
    b: float
    low: float             # the 2.5th percentile of the resampled deltas
    high: float            # the 97.5th
    fraction_positive: float
    resamples: int
    category: str = None   # a per-category comparison: the category's name

    @property
    def delta(self):
        return self.b - self.a

    @property
    def verdict(self):
        return verdict(self.low, self.high)

    @classmethod
    def from_deltas(cls, iou_type, metric, a, b, deltas, category=None):
        """From the whole-set values and the resampled deltas B - A (NaN where a resample scores
        neither: no ground truth of the category in it)."""
        deltas = deltas[~np.isnan(deltas)]
        if len(deltas):
            low, high = (float(v) for v in np.percentile(deltas, [2.5, 97.5]))
            positive = float(np.mean(deltas > 0))
        else:
            low = high = positive = float("nan")
        return cls(iou_type, metric, float(a), float(b), low, high, positive, len(deltas), category)


def verdict(low, high):
    if low > 0:
        return "B better"
    if high < 0:
        return "A better"
    return "no difference within the evaluation's noise"


def widened_by_seeds(delta, low, high, a_values, b_values):
    """The interval (low, high) of ``delta`` = mean(B's runs) - mean(A's runs), widened by the seeds'
    spread, or None when a side has fewer than two runs (the seeds' spread is then unmeasured).

    ``a_values``, ``b_values``: each run's AP on the whole set. The bootstrap interval holds the
    evaluation set's noise with the models fixed; the runs' spread holds the training's noise with
    the set fixed. Taken as independent, their variances add: each side's half-width is the bootstrap's
    and the 95% Welch t interval's of a difference of two means (Welch-Satterthwaite degrees of
    freedom; with two seeds a side it is wide, as two seeds say little of a spread) in quadrature."""
    if min(len(a_values), len(b_values)) < 2:
        return None
    from scipy import stats
    var_a, var_b = (np.var(v, ddof=1) / len(v) for v in (a_values, b_values))
    if var_a + var_b == 0:
        seeds = 0.0
    else:
        dof = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a_values) - 1) + var_b ** 2 / (len(b_values) - 1))
        seeds = float(stats.t.ppf(0.975, dof) * np.sqrt(var_a + var_b))
    return delta - float(np.hypot(max(delta - low, 0.0), seeds)), delta + float(np.hypot(max(high - delta, 0.0), seeds))


def resampled_metrics(table, resamples, seed, per_category=False):
    """AP, AP50, AP75 (x100) of a :class:`MatchTable`: {metric: (on the whole set, [resamples] on each
    resample)}, NaN where no category has ground truth; with ``per_category`` also "per_category":
    ([K], [resamples, K]) each category's AP, NaN where it has none. The resamples are
    :func:`resampled_counts` ``(table.num_images, resamples, seed)``: the same for every table of
    the same images and seed, which is what pairs them."""
    def score(counts):
        s = summarise(table, counts, per_category)
        row = {m: np.nan if s[m] is None else 100 * s[m] for m in METRICS}
        if per_category:
            row["per_category"] = 100 * s["per_category"]
        return row

    full = score(None)
    draws = [score(c) for c in resampled_counts(table.num_images, resamples, seed)]
    return {key: (full[key], np.array([d[key] for d in draws])) for key in full}


def paired_bootstrap(side_a, side_b, resamples=1000, seed=0, per_category=False, category_names=None):
    """Compare two sides, each {iou type: [MatchTable, ...]} (one table per run; a side's metric is
    the mean over its runs), on the IoU types both have. Every resample draws the images once for
    all tables, so A and B are always scored on the same images. Returns [:class:`Comparison`]
    (per IoU type AP, AP50, AP75; with ``per_category`` also each category's AP)."""
    iou_types = [t for t in IOU_TYPES if side_a.get(t) and side_b.get(t)]
    if not iou_types:
        raise ResultsError("the two sides have no IoU type in common (one has only boxes, the other only masks?).")
    if len({tab.num_images for t in iou_types for tab in side_a[t] + side_b[t]}) != 1:
        raise ResultsError("the results were matched against different ground truths.")
    out = []
    for t in iou_types:
        a, b = (mean_over_runs([resampled_metrics(tab, resamples, seed, per_category) for tab in side[t]])
                for side in (side_a, side_b))
        for m in METRICS:
            out.append(Comparison.from_deltas(t, m, a[m][0], b[m][0], b[m][1] - a[m][1]))
        if per_category:
            (full_a, draws_a), (full_b, draws_b) = a["per_category"], b["per_category"]
            for k in range(len(full_a)):
                name = category_names[k] if category_names else str(side_a[t][0].category_ids[k])
                out.append(Comparison.from_deltas(t, "AP", full_a[k], full_b[k], draws_b[:, k] - draws_a[:, k], category=name))
    return out


def mean_over_runs(metrics):
    """The mean of several runs' :func:`resampled_metrics`, resample by resample."""
    return {key: (np.mean([m[key][0] for m in metrics], axis=0), np.mean([m[key][1] for m in metrics], axis=0))
            for key in metrics[0]}


# ------------------------------------------------------------------ reporting
def format_delta(delta, low, high):
    """'+0.34 [+0.12, +0.57]': a change in AP points with its 95% interval."""
    if np.isnan(low):
        return f"{delta:+.2f} [-]"
    return f"{delta:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_comparisons(comparisons):
    """A Markdown table of :class:`Comparison` rows (AP points; per-category rows by their delta)."""
    from tabulate import tabulate
    overall = [c for c in comparisons if c.category is None]
    rows = [[c.iou_type, c.metric, f"{c.a:.2f}", f"{c.b:.2f}", format_delta(c.delta, c.low, c.high),
             "-" if np.isnan(c.fraction_positive) else f"{100 * c.fraction_positive:.1f}%"] for c in overall]
    text = tabulate(rows, headers=["IoU type", "metric", "A", "B", "B - A [95% interval]", "resamples with B > A"],
                    tablefmt="github", disable_numparse=True)
    per = sorted((c for c in comparisons if c.category is not None), key=lambda c: (c.iou_type, -c.delta))
    if per:
        rows = [[c.iou_type, c.category, f"{c.a:.2f}", f"{c.b:.2f}", format_delta(c.delta, c.low, c.high),
                 c.verdict] for c in per]
        text += "\n\nPer category (AP):\n\n" + tabulate(
            rows, headers=["IoU type", "category", "A", "B", "B - A [95% interval]", "verdict"],
            tablefmt="github", disable_numparse=True)
    return text


def verdict_line(comparisons):
    """One line: the verdict on AP of each IoU type compared."""
    parts = [f"{c.iou_type} AP: {c.verdict}" for c in comparisons if c.category is None and c.metric == "AP"]
    return ("Verdict: " + "; ".join(parts) + ". (The evaluation set's noise only: the seeds' noise is not in "
            "these intervals; several runs a side measure it, docs/COMPARING.md.)")
