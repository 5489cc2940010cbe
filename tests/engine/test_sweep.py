"""The checkpoint sweep's pieces (maskplus/engine/sweep.py): which checkpoints, where their files go,
when an earlier evaluation counts as this one, the table and its best row, the curve. End to end
(predict.py --checkpoints): tests/cli/test_evaluate_run.py."""
import hashlib
import json
import os

import pytest

from maskplus.engine.evaluate import EvaluationParams
from maskplus.engine.sweep import (SweepError, best_step, evaluation_sha1, format_sweep_table, list_checkpoints,
                                   plot_sweep, recorded_metrics, select_checkpoints, step_output, summary_paths)


#: the evaluation the sweeps below are given (their datasets: one)
PARAMS = EvaluationParams(datasets=("coco_val2017",), masks=True, boundary=False)


def _run(tmp_path, steps=(10, 2, 4)):
    for s in steps:
        (tmp_path / f"model-{s}.index").write_bytes(b"")
        (tmp_path / f"model-{s}.data-00000-of-00001").write_bytes(b"")
    (tmp_path / "model-7.meta").write_bytes(b"")  # not a checkpoint
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model-10"')
    return str(tmp_path)


def test_checkpoints_are_listed_by_step_as_numbers(tmp_path):
    run = _run(tmp_path)
    assert list_checkpoints(run) == [(2, f"{run}/model-2"), (4, f"{run}/model-4"), (10, f"{run}/model-10")]


@pytest.mark.parametrize("spec, steps", [(["all"], [2, 4, 10]), (["last", "2"], [4, 10]), (["last 1"], [10]),
                                         (["10", "2"], [2, 10]), (["4,10"], [4, 10])])
def test_which_checkpoints(tmp_path, spec, steps):
    assert [s for s, _ in select_checkpoints(list_checkpoints(_run(tmp_path)), spec)] == steps


@pytest.mark.parametrize("spec, message", [
    (["3", "4"], "--checkpoints: no checkpoint of step 3; the run has steps 2, 4, 10."),
    (["last", "0"], "--checkpoints takes 'all', 'last N' or steps (e.g. 4 10), got 'last 0'."),
    (["best"], "--checkpoints takes 'all', 'last N' or steps (e.g. 4 10), got 'best'."),
])
def test_a_checkpoint_the_run_lacks_is_named_with_those_it_has(tmp_path, spec, message):
    with pytest.raises(SweepError) as e:
        select_checkpoints(list_checkpoints(_run(tmp_path)), spec)
    assert str(e.value) == message


def test_a_directory_without_checkpoints_is_an_error(tmp_path):
    with pytest.raises(SweepError, match="holds no checkpoint"):
        select_checkpoints(list_checkpoints(str(tmp_path)), ["all"])


def test_each_checkpoint_has_its_own_files_beside_the_summary():
    assert step_output("out/val.json", 1200) == "out/val-step1200.json"
    assert step_output("out/val", 8) == "out/val-step8.json"
    assert summary_paths("out/val.json") == ("out/val-checkpoints.json", "out/val-checkpoints.png")


def _evaluated(tmp_path, weights="w1", evaluation="e1", dataset="coco_val2017"):
    results = tmp_path / "r-step4.json"
    results.write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    metrics = {"bbox/AP": 0.25}
    (tmp_path / "r-step4-metrics.json").write_text(json.dumps({
        "dataset": dataset, "results_sha1": hashlib.sha1(results.read_bytes()).hexdigest(), "metrics": metrics,
        "model": {"weights_sha1": weights, "evaluation_sha1": evaluation}}))
    return [("coco_val2017", str(results))], metrics


def test_an_earlier_evaluation_counts_only_with_the_same_weights_config_and_results(tmp_path):
    paths, metrics = _evaluated(tmp_path)
    assert recorded_metrics(paths, "w1", "e1") == {"coco_val2017": metrics}
    assert recorded_metrics(paths, "w2", "e1") is None  # other weights
    assert recorded_metrics(paths, "w1", "e2") is None  # another config or annotations
    _evaluated(tmp_path, dataset="coco_train2017")
    assert recorded_metrics(paths, "w1", "e1") is None  # scores another dataset
    _evaluated(tmp_path)
    (tmp_path / "r-step4.json").write_text("[]")  # the results changed since they were scored
    assert recorded_metrics(paths, "w1", "e1") is None
    os.remove(tmp_path / "r-step4-metrics.json")
    assert recorded_metrics(paths, "w1", "e1") is None
    (tmp_path / "r-step4-metrics.json").write_text('{"dataset": ')  # cut short
    assert recorded_metrics(paths, "w1", "e1") is None


def test_the_evaluation_digest_follows_what_decides_results_not_the_machine():
    config = {"TEST.RESULT_SCORE_THRESH": 0.05, "DATA.NUM_WORKERS": 4, "DATA.BASEDIR": "/a", "MASKPLUS.X": True}
    annotations = {"coco_val2017": "sha256:0123"}
    same = evaluation_sha1(config, annotations)
    assert evaluation_sha1(dict(config, **{"DATA.NUM_WORKERS": 1, "DATA.BASEDIR": "/b"}), annotations) == same
    assert evaluation_sha1(dict(config, **{"TEST.RESULT_SCORE_THRESH": 0.001}), annotations) != same
    assert evaluation_sha1(config, {"coco_val2017": "sha256:4567"}) != same


ROWS = [(2, {"bbox/AP": 0.1, "bbox/AP50": 0.2, "segm/AP": 0.05, "segm/AP50": 0.15, "boundary/AP": 0.01,
             "boundary/AP50": 0.02}),
        (4, {"bbox/AP": 0.3, "bbox/AP50": 0.5, "segm/AP": 0.1234, "segm/AP50": 0.3, "boundary/AP": 0.04,
             "boundary/AP50": None}),
        (6, {"bbox/AP": 0.35, "bbox/AP50": 0.55, "segm/AP": 0.12, "segm/AP50": 0.31, "boundary/AP": 0.05,
             "boundary/AP50": 0.1})]


def test_the_table_marks_the_best_by_mask_ap_not_the_last_or_box_ap():
    assert best_step(ROWS) == 4  # step 6 has the best box AP, step 4 the best mask AP
    lines = format_sweep_table(ROWS).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == ["step", "bbox AP", "bbox AP50", "segm AP", "segm AP50",
                                                             "boundary AP", "boundary AP50"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["4 *", "30.00", "50.00", "12.34", "30.00", "4.00", "-"]
    assert "*" not in lines[2] + lines[4]


def test_without_masks_the_best_is_by_box_ap_and_ties_go_to_the_earliest():
    rows = [(s, {"bbox/AP": ap, "bbox/AP50": 0.5}) for s, ap in ((2, 0.3), (4, 0.4), (6, 0.4))]
    assert best_step(rows) == 4
    assert format_sweep_table(rows).splitlines()[0].count("AP") == 2


def test_the_curve_is_a_png_written_in_one_piece(tmp_path):
    path = str(tmp_path / "r-checkpoints.png")
    plot_sweep({"coco_val2017": ROWS}, path, "run")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["r-checkpoints.png"]


class _Stand:
    """Stand-ins for the model side of a sweep: which checkpoint each call got."""

    def __init__(self, unreadable=(), refused=()):
        self.unreadable, self.refused, self.calls = set(unreadable), set(refused), []

    def describe_model(self, prefix):
        from maskplus.engine.checkpoint import CheckpointError
        if prefix.endswith(tuple(f"-{s}" for s in self.unreadable)):
            raise CheckpointError(f"'{prefix}' is not a readable TensorFlow checkpoint: truncated")
        return {"checkpoint": prefix, "weights_sha1": "sha-" + prefix[-1]}

    def build_predictor(self, prefix, strict):
        self.calls.append(("build", os.path.basename(prefix), strict))
        self._check(prefix)
        return "predictor"

    def load_weights(self, predictor, prefix, strict, model_switches):
        self.calls.append(("load", os.path.basename(prefix), strict))
        self._check(prefix)

    def _check(self, prefix):
        from maskplus.engine.strict_load import CheckpointRefused
        if prefix.endswith(tuple(f"-{s}" for s in self.refused)):
            raise CheckpointRefused("another model")

    def evaluate_datasets(self, predictor, out, params, model):
        step = int(out.rsplit("-step", 1)[1][:-len(".json")])
        return {"coco_val2017": {"bbox/AP": step / 100, "bbox/AP50": 0.5}}


@pytest.fixture
def stand(monkeypatch):
    from maskplus.engine import evaluate, sweep
    s = _Stand()
    monkeypatch.setattr(evaluate, "describe_model", s.describe_model)
    monkeypatch.setattr(evaluate, "evaluate_datasets", s.evaluate_datasets)
    monkeypatch.setattr(sweep, "load_weights", s.load_weights)
    return s


def test_one_graph_for_the_sweep_and_an_unreadable_checkpoint_is_skipped_and_counted(tmp_path, stand):
    from maskplus.engine.sweep import evaluate_checkpoints
    os.makedirs(tmp_path / "run")
    run = _run(tmp_path / "run", (2, 4, 6, 8))
    stand.unreadable = {4}
    said = []
    per_dataset, done, skipped, unreadable = evaluate_checkpoints(
        run, list_checkpoints(run), str(tmp_path / "out" / "val.json"), "e1", stand.build_predictor, say=said.append,
        params=PARAMS, model_switches=set())
    assert (done, skipped, unreadable) == (3, 0, [4])
    assert stand.calls == [("build", "model-2", True), ("load", "model-6", True), ("load", "model-8", True)]
    assert [s for s, _ in per_dataset["coco_val2017"]] == [2, 6, 8]
    assert said[1] == (f"Checkpoint step 4 ({run}/model-4) cannot be read, skipped: '{run}/model-4' is not a "
                       f"readable TensorFlow checkpoint: truncated")
    summary = json.load(open(tmp_path / "out" / "val-checkpoints.json"))
    assert [c["step"] for c in summary["checkpoints"]] == [2, 6, 8] and summary["best"] == {"coco_val2017": 8}


def test_a_checkpoint_of_another_model_ends_the_sweep(tmp_path, stand):
    from maskplus.engine.strict_load import CheckpointRefused
    from maskplus.engine.sweep import evaluate_checkpoints
    os.makedirs(tmp_path / "run")
    run = _run(tmp_path / "run", (2, 4, 6))
    stand.refused = {4}
    with pytest.raises(CheckpointRefused):
        evaluate_checkpoints(run, list_checkpoints(run), str(tmp_path / "out" / "val.json"), "e1",
                             stand.build_predictor, strict=True, say=lambda line: None, params=PARAMS,
                             model_switches=set())
    assert stand.calls == [("build", "model-2", True), ("load", "model-4", True)]
    # what was done before is kept: the summary of step 2
    assert [c["step"] for c in json.load(open(tmp_path / "out" / "val-checkpoints.json"))["checkpoints"]] == [2]
