"""scripts/paper_tables.py and reproduce_table.sh on hand-made runs: numbers, deltas, mean ± std."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def make_run(root, preset, seed, segm_ap, bbox_ap=0.40, boundary_ap=0.20):
    logdir = os.path.join(root, preset, f"seed{seed}")
    os.makedirs(os.path.join(logdir, "eval"))
    with open(os.path.join(logdir, "run.json"), "w") as f:
        json.dump({"preset": preset, "seed": seed}, f)
    metrics = {f"segm/{k}": segm_ap + 0.01 * i for i, k in enumerate(KEYS)}
    metrics.update({f"bbox/{k}": bbox_ap for k in KEYS})
    metrics["boundary/AP"] = boundary_ap
    with open(os.path.join(logdir, "eval", "coco_val2017-metrics.json"), "w") as f:
        json.dump({"dataset": "coco_val2017", "metrics": metrics}, f)
    return logdir


def run_tables(*args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "paper_tables.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _line(text, start_marker, source):
    """The row of ``source`` ('paper' or 'ours') following the method ``start_marker``."""
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if start_marker in l)
    j = next(k for k in range(i, len(lines)) if f"| {source}" in lines[k])
    return [c.strip() for c in lines[j].strip("|").split("|")]


@pytest.mark.slow
@pytest.mark.cli
def test_tables_show_paper_numbers_ours_with_mean_std_and_deltas(tmp_path):
    root = str(tmp_path)
    dirs = [make_run(root, "baseline", 1, 0.300, bbox_ap=0.40), make_run(root, "baseline", 2, 0.302, bbox_ap=0.42),
            make_run(root, "deconv-pyramid", 1, 0.310, boundary_ap=0.25),
            make_run(root, "deconv-pyramid", 2, 0.314, boundary_ap=0.27),
            make_run(root, "biased-training", 1, 0.305, bbox_ap=0.45)]
    md = tmp_path / "tables.md"
    chart = tmp_path / "delta.png"
    out = run_tables(*dirs, "--markdown", str(md), "--chart", str(chart))
    for n in range(1, 7):
        assert f"Table {n}:" in out
    # Table 2: baseline 30.0/30.2 -> 30.1 ± 0.1; pyramid 31.0/31.4 -> 31.2 ± 0.3, delta +1.1
    t2 = out[out.index("Table 2:"):out.index("Table 3:")]
    base = _line(t2, "Mask R-CNN", "ours")
    assert base[1] == "ours (2 runs)" and base[2] == "30.1 ± 0.1" and base[3] == "31.1 ± 0.1" and base[8] == "+0.0"
    pyr = _line(t2, "Deconvolutional pyramid", "ours")
    assert pyr[2] == "31.2 ± 0.3" and pyr[8] == "+1.1" and pyr[9] == "26.0 ± 1.4"
    paper = _line(t2, "Deconvolutional pyramid", "paper")
    assert paper[2:8] == ["35.4", "56.9", "37.6", "18.8", "38.6", "48.3"] and paper[8] == "+0.3"
    # Table 5 uses box AP: baseline 41.0 ± 1.4, biased 45.0 (one run), delta +4.0
    t5 = out[out.index("Table 5:"):out.index("Table 6:")]
    assert t5.splitlines()[0].count("box AP") == 1 and t5.splitlines()[1] == ""
    assert _line(t5, "Mask R-CNN", "ours")[2] == "41.0 ± 1.4"
    assert _line(t5, "Biased training", "ours")[2:3] == ["45.0"] and _line(t5, "Biased training", "ours")[8] == "+4.0"
    # rows without runs say so
    assert "ours (no run)" in out[out.index("Table 1:"):out.index("Table 2:")]
    assert md.read_text().strip() == out[:out.index("chart:")].strip()
    assert chart.stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.cli
def test_directories_that_are_not_runs_are_skipped_with_a_reason(tmp_path):
    good = make_run(str(tmp_path), "baseline", 1, 0.3)
    bad = tmp_path / "empty"
    bad.mkdir()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "paper_tables.py"), good, str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "skipped:" in proc.stderr and "no run.json" in proc.stderr


def test_an_evaluation_of_another_runs_model_is_not_shown_under_this_runs_preset(tmp_path):
    from maskplus.evaluation.tables import load_run
    logdir = make_run(str(tmp_path), "deconv-pyramid", 1, 0.31)
    own = os.path.join(logdir, "eval", "coco_val2017-metrics.json")
    info = json.load(open(own))
    json.dump(dict(info, model={"checkpoint": os.path.join(logdir, "model-100")}), open(own, "w"))
    other = os.path.join(logdir, "eval", "zoo-metrics.json")  # newer, but of the baseline's weights
    json.dump({"dataset": "coco_val2017", "metrics": {"segm/AP": 0.5},
               "model": {"checkpoint": str(tmp_path / "baseline" / "model-100")}}, open(other, "w"))
    os.utime(other, (os.path.getmtime(own) + 10,) * 2)
    assert load_run(logdir).metrics["segm/AP"] == pytest.approx(0.31)
    os.remove(own)
    with pytest.raises(ValueError, match="left out, as they score other models: zoo-metrics.json scores "):
        load_run(logdir)


def test_a_run_evaluated_several_times_shows_its_newest_evaluation_in_the_table(tmp_path):
    """Three evaluations of one run with different results: a training-time one at the top of the
    log directory, and predict.py --evaluate run twice (the first result kept as ``.previous-``).
    The table shows the newest by modification time, whatever the file names; made the newest,
    another evaluation takes its place."""
    from maskplus.evaluation.tables import group_by_preset, load_paper_numbers, load_run, render_table
    logdir = make_run(str(tmp_path), "baseline", 1, 0.3124)  # eval/coco_val2017-metrics.json
    files = {os.path.join(logdir, "outputs480-coco_val2017-metrics.json"): 0.2868,
             os.path.join(logdir, "eval", "coco_val2017.previous-20250301-101500-metrics.json"): 0.2957,
             os.path.join(logdir, "eval", "coco_val2017-metrics.json"): 0.3124}
    start = os.path.getmtime(os.path.join(logdir, "run.json"))
    for age, (path, ap) in enumerate(files.items()):  # oldest first, a minute apart
        json.dump({"dataset": "coco_val2017", "metrics": {f"segm/{k}": ap + 0.01 * i for i, k in enumerate(KEYS)}},
                  open(path, "w"))
        os.utime(path, (start + 60 * age,) * 2)
    table = load_paper_numbers()["2"]

    def baseline_ap():
        text = render_table("2", table, group_by_preset([load_run(logdir)]))
        return _line(text, "Mask R-CNN", "ours")[2]

    assert baseline_ap() == "31.2"
    os.utime(list(files)[1], (start + 300,) * 2)  # the kept first run of predict.py, touched last
    assert baseline_ap() == "29.6"
    os.utime(list(files)[0], (start + 400,) * 2)
    assert baseline_ap() == "28.7"


@pytest.mark.cli
@pytest.mark.parametrize("table, rows", [(1, 4), (2, 2), (3, 3), (4, 3), (5, 2), (6, 2)])
def test_reproduce_table_dry_run_prints_train_and_evaluate_for_every_row(table, rows):
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "reproduce_table.sh"), str(table), "--dry-run",
                           "--seeds", "2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    trains = [l for l in lines if " train.py --preset " in l]
    evals = [l for l in lines if " predict.py --load " in l and "--evaluate" in l]
    assert len(trains) == len(evals) == 2 * rows
    assert all("TRAIN.NUM_GPUS=8" in l for l in trains)


@pytest.mark.slow
@pytest.mark.cli
def test_ablation_cpu_dry_run_scales_every_table_preset_down(tmp_path):
    import shlex
    from maskplus.presets import TABLES
    env = dict(os.environ, PYTHON=sys.executable, DATA=str(tmp_path / "shapes"), LOGROOT=str(tmp_path / "runs"))
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "ablation_cpu.sh"), "--dry-run", "--seeds", "2",
                           "--steps", "240"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [shlex.split(l) for l in proc.stdout.strip().splitlines()]
    assert "scripts/make_shapes_dataset.py" in lines[0]  # the dataset is absent: generated first
    trains = [l for l in lines if "train.py" in l]
    presets = {name for rows in TABLES.values() for name in rows}
    assert sorted((l[l.index("--preset") + 1], l[l.index("--logdir") + 1]) for l in trains) == sorted(
        (p, str(tmp_path / "runs" / p / f"seed{s}")) for p in presets for s in (1, 2))
    for line in trains:
        overrides = line[line.index("--config") + 1:]
        assert "BACKBONE.RESNET_NUM_BLOCKS=[1,1,1,1]" in overrides and "FPN.NUM_CHANNEL=128" in overrides
        assert "TRAIN.LR_SCHEDULE=[30.0, 30.0, 30.0]" in overrides  # 240 steps of one image
        if line[line.index("--preset") + 1] == "context-fusion-720-512-512-256":
            assert "MASKPLUS.CONTEXT_FUSION_DIMS=[360, 256, 256, 128]" in overrides
    assert len([l for l in lines if "predict.py" in l and "--evaluate" in l]) == len(trains)


# ------------------------------------------------------------------ ΔAP intervals and verdicts
def make_evaluated_run(root, preset, seed, gt_path, results):
    """A run whose evaluation is real: its results file, and the metrics json predict.py writes."""
    from maskplus.evaluation.coco_eval import evaluate_coco, file_sha1
    from tests.evaluation.test_bootstrap import _coco
    logdir = os.path.join(root, preset, f"seed{seed}")
    os.makedirs(os.path.join(logdir, "eval"))
    json.dump({"preset": preset, "seed": seed}, open(os.path.join(logdir, "run.json"), "w"))
    path = os.path.join(logdir, "eval", "coco_val2017.json")
    json.dump(results, open(path, "w"))
    metrics = evaluate_coco(_coco(json.load(open(gt_path))), results, boundary=False, backend="pycocotools")
    json.dump({"dataset": "coco_val2017", "annotations": gt_path, "results": path, "results_sha1": file_sha1(path),
               "metrics": metrics}, open(os.path.join(logdir, "eval", "coco_val2017-metrics.json"), "w"))
    return logdir


@pytest.fixture(scope="module")
def evaluated_runs(tmp_path_factory):
    """Baseline (2 seeds); deconv-pyramid clearly better (2 seeds); biased-training clearly worse (2
    seeds); context-fusion-256-256 with exactly the baseline's results files; context-fusion-256-256-256
    better on the whole but with one good and one baseline-like seed; boundary-refinement-improved
    clearly better with one seed."""
    from tests.evaluation.coco_cases import make_case
    root = str(tmp_path_factory.mktemp("runs"))
    gt, _ = make_case(num_images=60, seed=5)
    gt_path = os.path.join(root, "instances_val2017.json")
    json.dump(gt, open(gt_path, "w"))
    results = {name: make_case(num_images=60, seed=5, quality=q, results_seed=s)[1]
               for name, q, s in (("base1", 0.55, 1), ("base2", 0.55, 2), ("good1", 0.95, 3), ("good2", 0.95, 4),
                                  ("bad", 0.2, 5), ("bad2", 0.2, 6), ("good3", 0.95, 7), ("good4", 0.95, 8))}
    dirs = [make_evaluated_run(root, "baseline", 1, gt_path, results["base1"]),
            make_evaluated_run(root, "baseline", 2, gt_path, results["base2"]),
            make_evaluated_run(root, "deconv-pyramid", 1, gt_path, results["good1"]),
            make_evaluated_run(root, "deconv-pyramid", 2, gt_path, results["good2"]),
            make_evaluated_run(root, "biased-training", 1, gt_path, results["bad"]),
            make_evaluated_run(root, "biased-training", 2, gt_path, results["bad2"]),
            make_evaluated_run(root, "context-fusion-256-256-256", 1, gt_path, results["good3"]),
            make_evaluated_run(root, "context-fusion-256-256-256", 2, gt_path, results["base2"]),
            make_evaluated_run(root, "boundary-refinement-improved", 1, gt_path, results["good4"]),
            make_evaluated_run(root, "context-fusion-256-256", 1, gt_path, results["base1"]),
            make_evaluated_run(root, "context-fusion-256-256", 2, gt_path, results["base2"])]
    return gt, gt_path, results, dirs


@pytest.mark.slow
def test_a_rows_interval_is_the_bootstrap_of_its_seeds_mean_against_the_baselines(evaluated_runs):
    from maskplus.evaluation.bootstrap import resampled_counts
    from maskplus.evaluation.tables import delta_intervals, group_by_preset, load_paper_numbers, load_run
    from tests.evaluation.coco_cases import resampled_set
    from tests.evaluation.test_bootstrap import pycocotools_ap
    gt, gt_path, results, dirs = evaluated_runs
    by_preset = group_by_preset([load_run(d) for d in dirs])
    tables = {k: v for k, v in load_paper_numbers().items() if k in ("1", "2")}
    intervals = delta_intervals(tables, by_preset, resamples=20, seed=7)
    assert set(intervals) == {("1", "context-fusion-256-256"), ("1", "context-fusion-256-256-256"),
                              ("2", "deconv-pyramid")}
    # the slow way: pycocotools on each resampled set, the mean of each side's two runs
    deltas = []
    for counts in resampled_counts(len(gt["images"]), 20, 7):
        draw = np.repeat(np.arange(len(counts)), counts)
        ap = {k: 100 * pycocotools_ap(*resampled_set(gt, results[k], draw), "segm")[0] for k in results}
        deltas.append((ap["good1"] + ap["good2"]) / 2 - (ap["base1"] + ap["base2"]) / 2)
    pyramid = intervals["2", "deconv-pyramid"]
    assert (pyramid.low, pyramid.high) == pytest.approx(tuple(np.percentile(deltas, [2.5, 97.5])), abs=1e-7)
    same = intervals["1", "context-fusion-256-256"]
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)


@pytest.mark.slow
@pytest.mark.cli
def test_the_tables_say_which_claimed_gains_the_intervals_confirm_contradict_or_cannot_tell(evaluated_runs, tmp_path):
    from scipy import stats
    _, _, _, dirs = evaluated_runs
    assert [os.path.basename(os.path.dirname(d)) for d in dirs[6:8]] == ["context-fusion-256-256-256"] * 2
    md = tmp_path / "tables.md"
    out = run_tables(*dirs, "--resamples", "200", "--markdown", str(md))
    assert "95% interval over the images is a paired bootstrap over the validation images (200 resamples)" in out
    t1, t2 = out[out.index("Table 1:"):out.index("Table 2:")], out[out.index("Table 2:"):out.index("Table 3:")]
    t3 = out[out.index("Table 3:"):out.index("Table 4:")]
    t5, t6 = out[out.index("Table 5:"):out.index("Table 6:")], out[out.index("Table 6:"):]
    bounds = lambda cell: tuple(float(v) for v in cell.strip("[]").split(","))  # noqa: E731
    pyramid = _line(t2, "Deconvolutional pyramid", "ours")
    low, high = bounds(pyramid[10])
    wide_low, wide_high = bounds(pyramid[11])
    assert 0 < wide_low <= low < float(pyramid[8]) < high <= wide_high and pyramid[12] == "confirms"
    same = _line(t1, "Contextual fusion 256-256 ", "ours")  # the baseline's own runs: its seeds' spread twice
    assert same[10] == "[+0.0, +0.0]" and -bounds(same[11])[0] == bounds(same[11])[1] > 0 and same[12] == "cannot tell"
    for table in (t5, t6):  # box AP (Table 5) and mask AP (Table 6) of the same runs
        biased = _line(table, "Biased training", "ours")
        assert bounds(biased[10])[1] <= bounds(biased[11])[1] < 0 and biased[12] == "contradicts"
    # a gain clear over the images, not over the seeds: one seed good, one like the baseline's
    mixed = _line(t1, "Contextual fusion 256-256-256", "ours")
    assert bounds(mixed[10])[0] > 0 and mixed[12] == "cannot tell"
    # by hand: the Welch t half-width of the two rows' mean segm AP, from the runs' metrics files
    ap = [100 * json.load(open(os.path.join(d, "eval", "coco_val2017-metrics.json")))["metrics"]["segm/AP"]
          for d in dirs]
    var_a, var_b = np.var(ap[0:2], ddof=1) / 2, np.var(ap[6:8], ddof=1) / 2  # baseline; the mixed row
    seeds = stats.t.ppf(0.975, (var_a + var_b) ** 2 / (var_a ** 2 + var_b ** 2)) * np.sqrt(var_a + var_b)
    delta = float(mixed[8])
    expected = (delta - np.hypot(delta - bounds(mixed[10])[0], seeds), delta + np.hypot(bounds(mixed[10])[1] - delta, seeds))
    assert bounds(mixed[11]) == pytest.approx(expected, abs=0.2)  # printed to 0.1 AP
    assert seeds > 2 * (bounds(mixed[10])[1] - bounds(mixed[10])[0])  # the seeds dominate: the 0.2 tolerance cannot hide them
    # one seed: a gain clear over the images gets no verdict
    improved = _line(t3, "Improved boundary refinement", "ours")
    assert bounds(improved[10])[0] > 0 and improved[11:13] == ["-", "no verdict: 1 seed"]
    assert _line(t2, "Deconvolutional pyramid", "paper")[10:13] == ["-", "-", "-"]
    assert _line(t2, "Mask R-CNN", "ours")[10:13] == ["-", "-", "-"]  # the baseline itself
    assert _line(t1, "Contextual fusion 720", "ours")[10:13] == ["-", "-", "-"]  # no run
    assert md.read_text().strip() == out.strip()


def test_the_seeds_widen_an_interval_by_a_welch_t_interval_in_quadrature():
    """By hand, off round numbers, unequal seed counts and spreads (Welch, not a pooled t or a normal z)."""
    from maskplus.evaluation.bootstrap import widened_by_seeds
    a, b = [40.13, 40.71], [41.02, 41.88, 41.35]
    # var(a)/2 = 0.1682/2, var(b)/3 = 0.376467/2/3; Welch-Satterthwaite dof = 2.3850; t(0.975, 2.3850) = 3.7011 (a t table)
    var_a, var_b = 0.0841, 0.376466667 / 6
    dof = (var_a + var_b) ** 2 / (var_a ** 2 / 1 + var_b ** 2 / 2)
    assert dof == pytest.approx(2.3850, abs=1e-4)
    seeds = 3.7011 * np.sqrt(var_a + var_b)
    delta = np.mean(b) - np.mean(a)
    low, high = widened_by_seeds(delta, delta - 0.31, delta + 0.47, a, b)
    assert (low, high) == pytest.approx((delta - np.hypot(0.31, seeds), delta + np.hypot(0.47, seeds)), abs=2e-3)
    assert widened_by_seeds(delta, delta - 0.31, delta + 0.47, a, b[:1]) is None  # one seed: unmeasured
    assert widened_by_seeds(1.0, 0.6, 1.5, [40.0, 40.0], [41.0, 41.0]) == (0.6, 1.5)  # no spread: the images' alone


@pytest.mark.slow
@pytest.mark.cli
def test_a_run_whose_results_file_changed_gets_no_interval_and_is_named(evaluated_runs, tmp_path):
    import shutil
    _, _, _, dirs = evaluated_runs
    copies = [shutil.copytree(d, tmp_path / os.path.relpath(d, os.path.dirname(os.path.dirname(d)))) for d in dirs[:3]]
    results = tmp_path / "deconv-pyramid" / "seed1" / "eval" / "coco_val2017.json"
    results.write_text(json.dumps(json.loads(results.read_text())[:-1]))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "paper_tables.py"), *map(str, copies),
                           "--tables", "2", "--resamples", "20"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{results} is not the results file its metrics were computed from" in proc.stderr
    assert _line(proc.stdout, "Deconvolutional pyramid", "ours")[10:12] == ["-", "-"]
