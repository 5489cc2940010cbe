"""Ground truth with duplicate or non-positive annotation ids: the ground truth itself, given as
results, must score AP 100 on both COCO backends (they look annotations up by id and use id 0 as
"unmatched", so such ids mis-score perfect detections unless renumbered)."""
import numpy as np
import pytest
from pycocotools import mask as mask_util
from tensorpack.utils import logger

from maskplus.data.validate import annotation_id_problems
from maskplus.evaluation.coco_eval import _evaluate_pycocotools, evaluate_coco
from tests.evaluation.test_coco_eval import coco_from_dict

W, H = 90, 60  # not square: a swapped height/width would not fit the polygons


def _ground_truth(ids_of_image, num_images):
    """``num_images`` images, each with three rectangles (two categories); annotation ids from
    ``ids_of_image(image_index)`` (a list of three)."""
    images, anns = [], []
    rng = np.random.RandomState(0)
    for k in range(num_images):
        images.append({"id": 100 + k, "file_name": f"{k}.jpg", "width": W, "height": H})
        for ann_id, cat in zip(ids_of_image(k), (1, 2, 1)):
            x, y = rng.randint(0, 50), rng.randint(0, 25)
            w, h = rng.randint(12, 38), rng.randint(10, 33)
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append({"id": ann_id, "image_id": 100 + k, "category_id": cat, "iscrowd": 0, "bbox": [x, y, w, h],
                         "area": float(w * h), "segmentation": [poly]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "other"}]}


def _perfect_results(gt):
    out = []
    for ann in gt["annotations"]:
        rle = mask_util.merge(mask_util.frPyObjects(ann["segmentation"], H, W))
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
                    "score": 0.9, "segmentation": rle})
    return out


SCENARIOS = {
    "two images sharing ids": (lambda k: [1, 2, 3], 2),
    "an id 0": (lambda k: [3 * k, 3 * k + 1, 3 * k + 2], 2),
    "ids numbered per image from 0": (lambda k: [0, 1, 2], 6),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_scenarios_really_mis_score_without_renumbering(scenario):
    gt = _ground_truth(*SCENARIOS[scenario])
    duplicates, non_positive = annotation_id_problems(gt["annotations"])
    assert duplicates or non_positive
    stats = _evaluate_pycocotools(gt, _perfect_results(gt), "bbox")
    assert stats[0] < 0.9  # the evaluator itself, given these ids, does not find AP 100


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_perfect_detections_score_100_whatever_the_annotation_ids(scenario, backend, monkeypatch):
    ids_of_image, num_images = SCENARIOS[scenario]
    gt = _ground_truth(ids_of_image, num_images)
    warnings = []
    monkeypatch.setattr(logger, "warn", warnings.append)
    metrics = evaluate_coco(coco_from_dict(gt), _perfect_results(gt), backend=backend)
    for kind in ("bbox", "segm", "boundary"):
        assert metrics[f"{kind}/AP"] == pytest.approx(1.0), kind
    duplicates, non_positive = annotation_id_problems(gt["annotations"])
    (warning,) = [w for w in warnings if "annotation ids" in w]
    n = len(gt["annotations"])
    assert f"renumbering its {n} annotations 1..{n}" in warning
    if duplicates:
        assert f"{len(duplicates)} duplicate" in warning
    if non_positive:
        assert f"{len(non_positive)} zero, negative or non-integer" in warning


def test_unique_positive_ids_are_left_alone_and_not_warned_about(monkeypatch):
    gt = _ground_truth(lambda k: [10 * k + 5, 10 * k + 6, 10 * k + 7], 2)
    warnings = []
    monkeypatch.setattr(logger, "warn", warnings.append)
    metrics = evaluate_coco(coco_from_dict(gt), _perfect_results(gt), iou_types=("bbox",), backend="pycocotools")
    assert metrics["bbox/AP"] == pytest.approx(1.0) and warnings == []
    assert annotation_id_problems(gt["annotations"]) == ([], [])


def test_id_problems_are_named_by_kind():
    anns = [{"id": i} for i in (4, 0, 4, -2, 7, 7, 7)] + [{"id": "x"}, {"id": 2.0}, {}]
    assert annotation_id_problems(anns) == ([4, 7, 7], [0, -2, "x", 2.0, None])
