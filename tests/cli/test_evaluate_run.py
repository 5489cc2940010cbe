"""Evaluating a run as a researcher does (predict.py): the run directory gives the model's config, a
checkpoint of another model is refused, and --checkpoints evaluates every checkpoint of a run
with one graph, skipping those already evaluated and continuing after an interruption.

One tiny run of the boundary-refinement-improved preset (train.py, 6 steps, a checkpoint every 2);
the reference is a separate evaluation of each checkpoint in this process, configured as the run
was trained (--preset and --config), not from its run.json."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.test_predict import dataset  # noqa: F401  (the tiny set pycocotools can score)
from tests.engine.test_training import ROOT, TINY_ARGS, train

pytestmark = pytest.mark.slow

PRESET = "boundary-refinement-improved"
TRAINING = ["TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.BASE_LR=0.02", "TRAIN.WARMUP=2",
            "TRAIN.LR_SCHEDULE=[0.75,0.75,0.75]", "TRAIN.STEPS_PER_EPOCH=2", "TRAIN.CHECKPOINT_PERIOD=1"]
STEPS = [2, 4, 6]
#: this evaluation's settings: a low score threshold, so that there are detections to compare
EVALUATION = ["TEST.RESULT_SCORE_THRESH=0.001"]


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):  # noqa: F811
    logdir = tmp_path_factory.mktemp("run")
    train(dataset, logdir, *TRAINING, extra=["--preset", PRESET])
    assert sorted(f for f in os.listdir(logdir) if f.endswith(".index")) == [f"model-{s}.index" for s in STEPS]
    return str(logdir)


def predict(dataset, *args, config=()):  # noqa: F811
    cmd = [sys.executable, os.path.join(ROOT, "predict.py"), *args, "--config", f"DATA.BASEDIR={dataset}",
           *EVALUATION, *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def separately(dataset, run, tmp_path_factory):  # noqa: F811
    """{step: (metrics, results)} of each checkpoint evaluated on its own, in this process, with
    the config the run was trained with (its --preset and --config, as the test gives them)."""
    from config import config as cfg
    from maskplus.cli import finalize
    from maskplus.engine.evaluate import EvaluationParams, describe_model, evaluate_datasets
    from maskplus.engine.inference import build_predictor
    from maskplus.presets import preset_overrides
    from tests.helpers import config_snapshot
    out = tmp_path_factory.mktemp("separately")
    found = {}
    for step in STEPS:
        with config_snapshot():
            cfg.update_args(preset_overrides(PRESET) + [f"DATA.BASEDIR={dataset}", *TINY_ARGS, *TRAINING, *EVALUATION])
            finalize(is_training=False)
            prefix = os.path.join(run, f"model-{step}")
            results = str(out / f"step{step}.json")
            metrics = evaluate_datasets(build_predictor(prefix), results, EvaluationParams.from_config(cfg),
                                        describe_model(prefix))
        found[step] = (metrics["coco_train2017"], json.load(open(results)))
    return found


def _same_detections(got, want):
    """The same detections (masks to the pixel, as RLEs), scores and boxes within round-off."""
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert (a["image_id"], a["category_id"], a["segmentation"]) == (b["image_id"], b["category_id"],
                                                                        b["segmentation"])
        assert abs(a["score"] - b["score"]) < 1e-5 and max(abs(x - y) for x, y in zip(a["bbox"], b["bbox"])) < 1e-3


def test_the_run_directory_gives_its_config_without_the_preset(dataset, run, separately, tmp_path):  # noqa: F811
    out, exported = tmp_path / "r.json", tmp_path / "model.npz"
    proc = predict(dataset, "--evaluate", str(out), "--export-npz", str(exported), "--load", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the export holds the checkpoint's model: every variable but the training state
    import numpy as np
    import tensorflow as tf
    from maskplus.engine.strict_load import is_training_state
    reader = tf.train.load_checkpoint(os.path.join(run, "model-6"))
    model = {n for n in reader.get_variable_to_shape_map() if not is_training_state(n)
             and not n.startswith("quasi_multitask/")}
    with np.load(exported) as f:
        assert {k[:-2] for k in f.files} == model and "boundary_refinement/fuse/W" in model
        np.testing.assert_array_equal(f["boundary_refinement/fuse/W:0"],
                                      reader.get_tensor("boundary_refinement/fuse/W"))
    line = [x for x in proc.stdout.splitlines() if x.startswith("Model: ")]
    assert len(line) == 1 and line[0].startswith(f"Model: the run in {run} (preset {PRESET}, ")
    assert line[0].endswith("recorded in its run.json); this evaluation: TEST.RESULT_SCORE_THRESH=0.001.")
    metrics = json.load(open(tmp_path / "r-metrics.json"))
    assert metrics["model"]["checkpoint"] == os.path.join(run, "model-6")
    assert metrics["metrics"] == separately[6][0]
    _same_detections(json.load(open(out)), separately[6][1])


def test_the_checkpoint_out_of_its_run_without_its_config_is_refused_before_any_image(
        dataset, run, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    for f in os.listdir(run):
        if f.startswith("model-6."):
            shutil.copy(os.path.join(run, f), elsewhere)
    out = tmp_path / "r.json"
    # the tiny model as trained, but not its preset: the baseline mask head
    proc = predict(dataset, "--evaluate", str(out), "--load", str(elsewhere / "model-6"), config=TINY_ARGS)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"Model: {elsewhere / 'model-6'} (no run.json beside it: the default config with " in proc.stdout
    error = proc.stderr[proc.stderr.index("Error: "):]
    assert error.startswith(f"Error: The checkpoint '{elsewhere / 'model-6'}' does not hold the model this config "
                            f"builds")
    assert ("\n  in the checkpoint, not in this model:\n    boundary_refinement/: 58 variables of boundary refinement, "
            "improved (paper 3.3): this checkpoint was trained with MASKPLUS.BOUNDARY_REFINEMENT=improved\n") in error
    assert "(here --config MASKPLUS.BOUNDARY_REFINEMENT=improved; presets with these techniques: " \
           "boundary-refinement-improved)" in error
    assert "Momentum" not in error and "global_step" not in error
    assert "Inference coco_train2017" not in proc.stderr and not out.exists()  # no image was read
    # a deliberate partial load: the baseline graph on what fits, with the report of what did not
    partial = predict(dataset, "--evaluate", str(out), "--load", str(elsewhere / "model-6"), "--allow-partial-load",
                      config=TINY_ARGS)
    assert partial.returncode == 0, partial.stderr[-3000:]
    assert "file entries are not used by this graph:\n    boundary_refinement/fuse/W\n" in partial.stdout + \
        partial.stderr
    assert out.exists()


def _sweep(dataset, run, out):  # noqa: F811
    return [sys.executable, os.path.join(ROOT, "predict.py"), "--evaluate", str(out), "--load", run,
            "--checkpoints", "all", "--config", f"DATA.BASEDIR={dataset}", *EVALUATION]


def _files(folder):
    """{name: modification time in ns} of the per-checkpoint results and metrics files."""
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder) if "-step" in f}


def _counts(output):
    line = [x for x in output.splitlines() if x.startswith("Checkpoints: ") and "evaluated" in x][-1]
    words = line.split()
    return int(words[1]), int(words[3])  # evaluated, already evaluated


def test_the_sweep_continues_after_an_interruption_then_evaluates_nothing_again(
        dataset, run, separately, tmp_path):  # noqa: F811
    out = tmp_path / "sweep" / "val.json"
    with open(tmp_path / "first.txt", "w") as log:
        proc = subprocess.Popen(_sweep(dataset, run, out), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        start = time.time()
        while not (tmp_path / "sweep" / "val-step2-metrics.json").exists():
            assert proc.poll() is None and time.time() - start < 300, (tmp_path / "first.txt").read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 130
    first = (tmp_path / "first.txt").read_text()
    assert "Traceback" not in first and "Stopped (Ctrl-C): the checkpoints evaluated so far are kept" in first
    done = _files(tmp_path / "sweep")
    kept = sorted(f for f in done if f.endswith("-metrics.json"))
    assert kept in (["val-step2-metrics.json"], ["val-step2-metrics.json", "val-step4-metrics.json"]), done

    second = subprocess.run(_sweep(dataset, run, out), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _counts(second.stdout) == (3 - len(kept), len(kept))
    after = _files(tmp_path / "sweep")
    for metrics in kept:  # the checkpoints done before the interruption were not evaluated again
        for f in (metrics, metrics.replace("-metrics.json", ".json")):
            assert after[f] == done[f], f
    for step in STEPS:  # each checkpoint's AP and detections are those of its separate evaluation
        info = json.load(open(tmp_path / "sweep" / f"val-step{step}-metrics.json"))
        assert info["model"]["checkpoint"] == os.path.join(run, f"model-{step}")
        assert info["metrics"] == separately[step][0], step
        _same_detections(json.load(open(tmp_path / "sweep" / f"val-step{step}.json")), separately[step][1])
    summary = json.load(open(tmp_path / "sweep" / "val-checkpoints.json"))
    assert [c["step"] for c in summary["checkpoints"]] == STEPS
    assert [c["metrics"]["coco_train2017"] for c in summary["checkpoints"]] == [separately[s][0] for s in STEPS]
    best = max(STEPS, key=lambda s: (separately[s][0]["segm/AP"], -s))
    assert summary["best"] == {"coco_train2017": best}
    table = second.stdout[second.stdout.index("Checkpoints of "):]
    rows = [r.split("|")[1].strip() for r in table.splitlines()[3:6]]
    assert rows == [f"{s} *" if s == best else str(s) for s in STEPS]
    with open(tmp_path / "sweep" / "val-checkpoints.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"

    third = subprocess.run(_sweep(dataset, run, out), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert third.returncode == 0, third.stderr[-3000:]
    assert _counts(third.stdout) == (0, 3)
    assert _files(tmp_path / "sweep") == after  # nothing evaluated or written again
