"""COCO metrics: perfect predictions, Boundary AP on eroded masks, backend agreement, empty results."""
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from maskplus.evaluation.coco_eval import (boundary_iou, detections_to_coco_results, evaluate_coco,
                                           format_metrics_table)

H, W = 120, 160


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _square(x, y, s):
    m = np.zeros((H, W), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


def _disc(cx, cy, r):
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


@pytest.fixture(scope="module")
def ground_truth():
    masks = {1: [(_square(10, 10, 40), 1), (_disc(110, 60, 30), 2)], 2: [(_disc(50, 60, 45), 2), (_square(100, 20, 20), 1)]}
    images, anns = [], []
    for img_id, items in masks.items():
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"{img_id}.jpg"})
        for mask, cat in items:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "iscrowd": 0,
                         "segmentation": _rle(mask), "area": float(mask.sum()), "bbox": _bbox(mask)})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    return gt, masks


def _results(masks, transform=lambda m: m, score=0.9):
    out = []
    for img_id, items in masks.items():
        for mask, cat in items:
            m = transform(mask)
            out.append({"image_id": img_id, "category_id": cat, "bbox": _bbox(m), "score": score, "segmentation": _rle(m)})
    return out


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_perfect_predictions_score_one_everywhere(ground_truth, backend, tmp_path):
    gt, masks = ground_truth
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    metrics = evaluate_coco(str(path), _results(masks), backend=backend)
    for kind in ("bbox", "segm", "boundary"):
        assert metrics[f"{kind}/AP"] == pytest.approx(1.0)
        assert metrics[f"{kind}/AP50"] == pytest.approx(1.0)
    assert "boundary" in format_metrics_table(metrics) and "100.00" in format_metrics_table(metrics)


def test_an_eroded_mask_keeps_mask_iou_but_loses_boundary_iou():
    gt = _disc(80, 60, 50)
    eroded = cv2.erode(gt, np.ones((3, 3), np.uint8), iterations=3)
    mask_iou = np.logical_and(gt, eroded).sum() / np.logical_or(gt, eroded).sum()
    assert mask_iou > 0.85
    assert boundary_iou(gt, gt) == pytest.approx(1.0)
    assert boundary_iou(gt, eroded) < 0.6


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_eroded_predictions_keep_segm_ap_high_and_boundary_ap_clearly_lower(ground_truth, backend):
    gt, masks = ground_truth
    erode = lambda m: cv2.erode(m, np.ones((3, 3), np.uint8), iterations=2)  # noqa: E731
    metrics = evaluate_coco(coco_from_dict(gt), _results(masks, erode), iou_types=("segm",), backend=backend)
    assert metrics["segm/AP50"] == pytest.approx(1.0)
    assert metrics["boundary/AP"] < metrics["segm/AP"] - 0.2


def coco_from_dict(gt):
    """A pycocotools COCO object of a ground-truth dict, as ``score_results`` passes the dataset's."""
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    return coco


def test_backends_agree_on_imperfect_results(ground_truth):
    gt, masks = ground_truth
    rng = np.random.RandomState(0)
    results = []
    for img_id, items in masks.items():
        for mask, cat in items:
            shift = rng.randint(-4, 5, size=2)
            moved = np.roll(mask, tuple(shift), axis=(0, 1))
            results.append({"image_id": img_id, "category_id": cat, "bbox": _bbox(moved),
                            "score": float(rng.uniform(0.3, 1)), "segmentation": _rle(moved)})
        fp = _square(rng.randint(0, 100), rng.randint(0, 60), 15)
        results.append({"image_id": img_id, "category_id": 1, "bbox": _bbox(fp), "score": float(rng.uniform(0, 1)),
                        "segmentation": _rle(fp)})
    fast = evaluate_coco(coco_from_dict(gt), results, backend="faster")
    slow = evaluate_coco(coco_from_dict(gt), results, backend="pycocotools")
    assert fast.keys() == slow.keys()
    for key in fast:
        if fast[key] is None:
            assert slow[key] is None
        else:
            assert fast[key] == pytest.approx(slow[key], abs=1e-4), key
    assert 0.1 < fast["segm/AP"] < 0.99


def test_empty_results_give_zero_not_a_crash(ground_truth):
    gt, _ = ground_truth
    metrics = evaluate_coco(coco_from_dict(gt), [])
    assert metrics["bbox/AP"] == 0 and metrics["segm/AP"] == 0 and metrics["boundary/AP"] == 0


def test_detections_become_coco_results_with_category_ids_and_rles():
    mask = _square(10, 20, 5)
    res = detections_to_coco_results(7, [[10, 20, 15, 25]], [0.91234], [1], [mask], {1: 42})
    assert res[0]["category_id"] == 42 and res[0]["image_id"] == 7 and res[0]["bbox"] == [10.0, 20.0, 5.0, 5.0]
    assert res[0]["score"] == 0.9123 and isinstance(res[0]["segmentation"]["counts"], str)
    np.testing.assert_array_equal(mask_util.decode(res[0]["segmentation"]), mask)


def test_results_of_non_square_boxes_score_one_with_plain_pycocotools():
    """Our xyxy detections with contiguous labels, converted to COCO results, are scored by plain
    pycocotools (loadRes + COCOeval, not our wrapper) against a hand-made ground truth of tall and
    wide boxes whose category ids are not 1..K: matching boxes and masks give AP 1. Swapped w/h,
    unmapped labels or a transposed mask would miss. The false positive at 0.90004 listed before
    the true positive at 0.90006 ranks below it only if scores keep 4 digits (0.9000 < 0.9001)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    sizes = {1: (80, 100), 2: (90, 60)}  # image id: (height, width)
    # (image, category id, x, y, w, h): category 3 "tall", 9 "wide"
    objects = [(1, 9, 10.5, 20.25, 30, 12), (1, 3, 50, 5, 8, 40.5), (2, 9, 5, 5, 40, 15.5), (2, 3, 20, 30, 11, 50)]
    gt = {"images": [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, (h, w) in sizes.items()],
          "categories": [{"id": 3, "name": "tall"}, {"id": 9, "name": "wide"}], "annotations": []}
    for k, (img, cat, x, y, w, h) in enumerate(objects, start=1):
        gt["annotations"].append({"id": k, "image_id": img, "category_id": cat, "bbox": [x, y, w, h], "area": w * h,
                                  "iscrowd": 0, "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    coco_gt = COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    label_to_category = {1: 3, 2: 9}
    results = []
    for img, (h, w) in sizes.items():
        mine = [o for o in objects if o[0] == img]
        boxes = [[x, y, x + bw, y + bh] for _, _, x, y, bw, bh in mine]
        labels = [1 if cat == 3 else 2 for _, cat, *_ in mine]
        scores = [0.95, 0.8]
        masks = [coco_gt.annToMask(a) for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img]))]
        if img == 1:  # the false positive (far from every wide box) first, then the true positives
            boxes, labels, scores = [[60, 60, 90, 70]] + boxes, [2] + labels, [0.90004, 0.90006, 0.8]
            masks = [np.zeros((h, w), np.uint8)] + masks
        results += detections_to_coco_results(img, boxes, scores, labels, masks, label_to_category)
    assert [r["score"] for r in results[:2]] == [0.9, 0.9001]
    assert results[1]["bbox"] == [10.5, 20.25, 30.0, 12.0] and results[1]["category_id"] == 9
    coco_dt = coco_gt.loadRes(results)
    for iou_type in ("bbox", "segm"):
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0), iou_type


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_each_area_range_reports_its_own_ap(backend):
    """APs, APm and APl by hand, each a different value. One 300 x 400 (h x w) image, one category:
    a small gt (20 x 20 = 400 px < 32^2), a medium one (50 x 50) and a large one (120 x 120 > 96^2).
    The small one is found exactly (score 0.9), the medium one not at all, the large one by a box
    of its full width and 92 of its 120 rows (score 0.8): IoU 92 / 120 = 0.767, a match at the six
    thresholds 0.5 .. 0.75. So APs = 1, APm = 0, APl = 6/10. Over all areas (101 recall points): at
    those six thresholds recall 2/3 at precision 1 (67 points), at the other four 1/3 (34 points):
    AP = (6 x 67 + 4 x 34) / 1010, AP50 = AP75 = 67/101."""
    h, w = 300, 400

    def rect(x, y, rw, rh):
        m = np.zeros((h, w), np.uint8)
        m[y:y + rh, x:x + rw] = 1
        return m

    gts = [rect(20, 30, 20, 20), rect(100, 40, 50, 50), rect(200, 100, 120, 120)]
    gt = {"images": [{"id": 1, "width": w, "height": h, "file_name": "1.jpg"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _rle(m),
                           "area": float(m.sum()), "bbox": _bbox(m)} for k, m in enumerate(gts)],
          "categories": [{"id": 1, "name": "square"}]}
    found = [(gts[0], 0.9), (rect(200, 100, 120, 92), 0.8)]
    results = [{"image_id": 1, "category_id": 1, "bbox": _bbox(m), "score": s, "segmentation": _rle(m)} for m, s in found]
    metrics = evaluate_coco(coco_from_dict(gt), results, iou_types=("segm",), backend=backend)
    expected = {"AP": (6 * 67 + 4 * 34) / 1010, "AP50": 67 / 101, "AP75": 67 / 101, "APs": 1.0, "APm": 0.0, "APl": 0.6}
    assert {k: metrics[f"segm/{k}"] for k in expected} == pytest.approx(expected, abs=1e-9)
