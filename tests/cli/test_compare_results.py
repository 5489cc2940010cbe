"""scripts/compare_results.py as a user runs it: the table and verdict, the ground truth found
from predict.py's records or given by name, and one-line refusals of results it cannot compare."""
import json
import os
import subprocess
import sys

import pytest

from maskplus.evaluation.coco_eval import file_sha1, metrics_path
from tests.conftest import ROOT
from tests.evaluation.coco_cases import make_case

SCRIPT = os.path.join(ROOT, "scripts", "compare_results.py")


def compare(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=300)


def refused(proc, message):
    """Exit status 1 and the message as one line (the last: a dataset name imports TensorFlow,
    whose start-up log comes first)."""
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last, proc.stderr


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def record(results, dataset, annotations):
    """What predict.py --evaluate writes beside a results file (the fields compare_results reads)."""
    json.dump({"dataset": dataset, "annotations": str(annotations), "results_sha1": file_sha1(str(results)),
               "metrics": {}}, open(metrics_path(str(results)), "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    gt, results = make_case(num_images=40, seed=2, quality=0.9)
    ids = sorted({r["image_id"] for r in results})
    fewer = [r for r in results if r["image_id"] not in ids[:20]]  # half the images lose their detections
    return (write(folder / "gt.json", gt), write(folder / "a.json", results), write(folder / "b.json", fewer), gt)


def test_the_table_and_verdict_of_a_clearly_worse_b_and_its_json(files, tmp_path):
    gt, a, b, _ = files
    out = tmp_path / "cmp.json"
    proc = compare(a, b, "--dataset", gt, "--resamples", 200, "--iou-types", "bbox", "segm", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "Verdict: bbox AP: A better; segm AP: A better." in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| bbox ") or line.startswith("| segm ")]
    assert len(rows) == 6 and all("| 0.0%" in r for r in rows)
    saved = json.loads(out.read_text())
    assert saved["resamples"] == 200 and len(saved["comparisons"]) == 6
    first = saved["comparisons"][0]
    assert first["iou_type"] == "bbox" and first["metric"] == "AP" and first["high"] < 0 < first["a"]
    assert first["delta"] == pytest.approx(first["b"] - first["a"]) and first["verdict"] == "A better"


def test_the_ground_truth_recorded_by_predict_is_used_without_dataset(files, tmp_path):
    gt, a, _, _ = files
    copy = tmp_path / "a.json"
    copy.write_text(a.read_text())
    record(copy, "coco_val2017", gt)
    proc = compare(copy, copy, "--resamples", 50, "--iou-types", "bbox")
    assert proc.returncode == 0, proc.stderr
    assert f"images of {gt}" in proc.stdout and "+0.00 [+0.00, +0.00]" in proc.stdout


def test_results_of_different_datasets_are_refused(files, tmp_path):
    gt, a, _, case = files
    other = write(tmp_path / "other.json", dict(case, images=case["images"][:10]))
    a2, b2 = tmp_path / "a.json", tmp_path / "b.json"
    a2.write_text(a.read_text())
    b2.write_text(a.read_text())
    record(a2, "coco_val2017", gt)
    record(b2, "shapes_val", other)
    refused(compare(a2, b2, "--dataset", gt), "results of different datasets cannot be compared")


def test_results_of_images_the_dataset_lacks_are_refused(files, tmp_path):
    gt, a, _, case = files
    small = write(tmp_path / "small.json", dict(case, images=case["images"][:10]))
    refused(compare(a, a, "--dataset", small), f"{a}: detections of ")
    assert "image ids that the ground truth" in compare(a, a, "--dataset", small).stderr


@pytest.mark.parametrize("content, message", [("", "the results file is empty"), ("[]", "holds no detections")])
def test_an_empty_results_file_is_refused(files, tmp_path, content, message):
    gt, a, _, _ = files
    empty = tmp_path / "empty.json"
    empty.write_text(content)
    refused(compare(a, empty, "--dataset", gt), f"{empty}: {message}")


def test_without_a_dataset_or_record_the_user_is_told_to_give_one(files):
    _, a, b, _ = files
    refused(compare(a, b), "give the ground truth with --dataset")


@pytest.mark.slow
def test_a_dataset_name_is_found_under_data_basedir(files, tmp_path):
    gt, a, _, _ = files
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(gt.read_text())
    proc = compare(a, a, "--dataset", "coco_val2017", "--config", f"DATA.BASEDIR={tmp_path}", "--resamples", 20,
                   "--iou-types", "bbox")
    assert proc.returncode == 0, proc.stderr
    assert "instances_val2017.json" in proc.stdout
    refused(compare(a, a, "--dataset", "coco_train2017", "--config", f"DATA.BASEDIR={tmp_path}"),
            "--dataset 'coco_train2017' is not an annotation file, nor a dataset of the config")
