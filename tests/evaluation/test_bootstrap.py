"""The paired bootstrap of COCO AP against the slow obvious way: every resample's AP equals plain
pycocotools' AP on the resampled set built image by image; COCOeval's matching rules on hand-made
cases; intervals that must lie below zero, or be exactly [0, 0]."""
import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from maskplus.evaluation import bootstrap, matching
from maskplus.evaluation.bootstrap import paired_bootstrap, summarise
from maskplus.evaluation.matching import (RECALL_THRESHOLDS, ResultsError, load_ground_truth, load_results,
                                          match_detections, match_results)
from tests.evaluation.coco_cases import make_case, resampled_set


def _coco(gt):
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    return coco


def pycocotools_ap(gt, results, iou_type):
    """[AP, AP50, AP75] of plain pycocotools (boundary: its COCOeval with the boundary IoU of
    maskplus.evaluation.coco_eval, whose own tests pin it), -1 where undefined."""
    if iou_type == "boundary":
        from maskplus.evaluation.coco_eval import evaluate_coco
        m = evaluate_coco(_coco(gt), copy.deepcopy(results), iou_types=("segm",), backend="pycocotools")
        return [-1.0 if m[f"boundary/{k}"] is None else m[f"boundary/{k}"] for k in ("AP", "AP50", "AP75")]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = _coco(gt)
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return list(ev.stats[:3])


@pytest.fixture(scope="module")
def case():
    gt, results = make_case(num_images=30, seed=0)
    return gt, results, load_ground_truth(gt)


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "boundary"])
def test_each_resamples_ap_equals_pycocotools_on_the_resampled_images(case, iou_type):
    gt, results, truth = case
    table = match_results(truth, results, iou_type)
    # the case holds what the accumulation must get right: detections matched to crowd regions
    # (ignored), equal scores within an image and category, images with nothing, and a category
    # with crowd regions only (left out) or no ground truth at all
    assert table.ignored.any() and len(bootstrap._plan(table)["multi"]) > 0
    assert truth.not_ignored[:, truth.category_ids.index(6)].sum() == 0
    full = summarise(table)
    assert [full[m] for m in ("AP", "AP50", "AP75")] == pytest.approx(pycocotools_ap(gt, results, iou_type), abs=1e-9)
    assert 0.05 < full["AP"] < 0.9  # boundary AP is the lowest: masks shifted by a pixel lose boundary IoU
    rng = np.random.RandomState(20)
    repeated = 0
    for _ in range(20):
        draw = rng.randint(0, truth.num_images, truth.num_images)
        counts = np.bincount(draw, minlength=truth.num_images)
        repeated += counts.max() > 2
        fast = summarise(table, counts)
        slow = pycocotools_ap(*resampled_set(gt, results, draw), iou_type)
        assert [fast[m] for m in ("AP", "AP50", "AP75")] == pytest.approx(slow, abs=1e-9), (draw, fast, slow)
    assert repeated > 5  # images drawn three times and more


def test_recall_bins_equal_searchsorted_on_every_fraction():
    # recall n / npig as COCOeval computes it; 7/100 (0.07) lies just below the threshold 0.07000000000000001
    recall = np.array([n / npig for npig in range(1, 401) for n in range(npig + 1)])
    expected = np.searchsorted(RECALL_THRESHOLDS, recall, side="right") - 1
    np.testing.assert_array_equal(bootstrap._recall_bin(recall), expected)


# ------------------------------------------------------------------ COCOeval's matching, by hand
def test_a_detection_takes_the_free_ground_truth_of_highest_iou_and_of_equal_ones_the_last():
    ious = np.array([[0.6, 0.8, 0.8],     # best two are equal: the last (index 2)
                     [0.7, 0.9, 0.55]])  # index 1 (0.9); at 0.6 and up index 2 is taken
    matched, ignored = match_detections(ious, [False] * 3, [False] * 3, thresholds=[0.5, 0.75, 0.85])
    np.testing.assert_array_equal(matched, [[True, True], [True, True], [False, True]])
    assert not ignored.any()
    # which ground truth each took: a third detection at 0.75 finds only index 0 (0.76) free
    three = np.vstack([ious, [0.76, 0.95, 0.95]])
    matched, _ = match_detections(three, [False] * 3, [False] * 3, thresholds=[0.75])
    np.testing.assert_array_equal(matched, [[True, True, True]])
    matched, _ = match_detections(three, [False] * 3, [False] * 3, thresholds=[0.77])
    np.testing.assert_array_equal(matched, [[True, True, False]])


def test_a_crowd_region_is_matched_any_number_of_times_and_its_detections_are_ignored():
    # ground truth: a regular object (0.55 with both detections), then a crowd region last
    ious = np.array([[0.55, 0.9], [0.55, 0.9]])
    matched, ignored = match_detections(ious, [False, True], [False, True], thresholds=[0.5, 0.6])
    # at 0.5 the first detection takes the regular object although the crowd overlaps more;
    # the second takes the crowd region (the object is taken) and is ignored
    np.testing.assert_array_equal(matched, [[True, True], [True, True]])
    np.testing.assert_array_equal(ignored, [[False, True], [True, True]])


def test_ignored_ground_truth_that_is_not_a_crowd_is_matched_once():
    # e.g. outside the area range: the first detection takes it (and is ignored), the second finds it taken
    ious = np.array([[0.9], [0.9]])
    matched, ignored = match_detections(ious, [True], [False], thresholds=[0.5, 0.85])
    np.testing.assert_array_equal(matched, [[True, False], [True, False]])
    np.testing.assert_array_equal(ignored, [[True, False], [True, False]])


# ------------------------------------------------------------------ intervals
def _tables(gt, results, types=("bbox", "segm")):
    truth = load_ground_truth(gt)
    return truth, {t: [match_results(truth, results, t)] for t in types}


def test_a_file_against_itself_differs_by_exactly_zero(case):
    gt, results, truth = case
    _, tables = _tables(gt, results)
    _, again = _tables(gt, copy.deepcopy(results))
    for c in paired_bootstrap(tables, again, resamples=200, seed=3):
        assert (c.delta, c.low, c.high, c.fraction_positive) == (0.0, 0.0, 0.0, 0.0)
        assert c.verdict == "no difference within the evaluation's noise"


def test_removing_the_detections_of_a_tenth_of_the_images_gives_an_interval_below_zero():
    gt, results = make_case(num_images=120, seed=1, quality=0.9)
    with_objects = sorted({a["image_id"] for a in gt["annotations"] if not a["iscrowd"]})
    removed = set(np.random.RandomState(0).choice(with_objects, 12, replace=False).tolist())
    _, a = _tables(gt, results)
    _, b = _tables(gt, [r for r in results if r["image_id"] not in removed])
    comparisons = paired_bootstrap(a, b, resamples=300, seed=0)
    for c in comparisons:
        assert c.high < 0 and c.low <= c.delta <= c.high and c.fraction_positive == 0.0, c
    assert {c.verdict for c in comparisons} == {"A better"}


def test_the_interval_is_the_2_5th_to_97_5th_percentile_of_the_resampled_deltas():
    # 1001 deltas 0.0, 0.1, ..., 100.0: the 2.5th percentile is the 25th smallest (2.5), the
    # 97.5th the 975th (97.5); 999 of 1001 are positive
    c = bootstrap.Comparison.from_deltas("bbox", "AP", 30.0, 31.0, np.arange(1001) / 10.0 - 0.1 * (np.arange(1001) == 0))
    assert (c.low, c.high) == pytest.approx((2.5, 97.5)) and c.fraction_positive == pytest.approx(1000 / 1001)


def test_per_category_deltas_leave_out_resamples_without_the_category(case):
    gt, results, truth = case
    _, a = _tables(gt, results, ("bbox",))
    worse = [dict(r, score=r["score"] * 0.5) if r["category_id"] == 2 and r["score"] > 0.5 else r for r in results]
    _, b = _tables(gt, worse, ("bbox",))
    per = {c.category: c for c in paired_bootstrap(a, b, resamples=100, seed=0, per_category=True,
                                                   category_names=truth.category_names) if c.category}
    assert set(per) == {"class2", "class4", "class6", "class8"}
    assert per["class4"].delta == 0.0 and per["class2"].delta != 0.0
    for name in ("class6", "class8"):  # never any regular ground truth: no resample scores them
        assert per[name].resamples == 0 and np.isnan(per[name].low)


# ------------------------------------------------------------------ refusals
def test_results_of_image_ids_the_ground_truth_lacks_are_refused(case):
    gt, results, truth = case
    stranger = dict(results[0], image_id=123456789)
    with pytest.raises(ResultsError, match=r"res.json: detections of 1 image ids that the ground truth .* lacks "
                                           r"\(e.g. \[123456789\]\)"):
        load_results(results + [stranger], truth, name="res.json")


@pytest.mark.parametrize("content, message", [("", "the results file is empty"), ("[]", "holds no detections"),
                                              ("{}", "not a COCO results file"), ("[{", "not valid JSON")])
def test_empty_or_malformed_results_files_are_refused_by_name(case, tmp_path, content, message):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=f"{path}: {message}"):
        load_results(str(path), case[2])


def test_only_ground_truth_images_and_categories_count_and_crowds_are_ignored(case):
    gt, _, truth = case
    crowd_ids = {a["id"] for a in gt["annotations"] if a["iscrowd"]}
    assert truth.num_images == 30 and truth.category_ids == [2, 4, 6, 8]
    assert truth.not_ignored.sum() == len(gt["annotations"]) - len(crowd_ids) and len(crowd_ids) >= 5
    assert matching.available_iou_types([{"bbox": [0, 0, 1, 1]}]) == ["bbox"]


def test_malformed_ground_truth_and_results_are_refused_by_name(case, tmp_path):
    gt, results, truth = case
    no_area = dict(gt, annotations=[{k: v for k, v in a.items() if k != "area"} for a in gt["annotations"]])
    with pytest.raises(ResultsError, match=r"gt.json: a malformed image, category or annotation \(KeyError: 'area'\)"):
        load_ground_truth(no_area, name="gt.json")
    with pytest.raises(ResultsError, match="res.json: an image_id, category_id or score that is not a number"):
        load_results([dict(results[0], image_id="first")], truth, name="res.json")
    path = tmp_path / "bad.json"
    path.write_text(__import__("json").dumps([dict(results[0], bbox=[1, 2])]))
    with pytest.raises(ResultsError, match=f"{path}: a detection's box cannot be scored"):
        matching.match_file(truth, str(path), ["bbox"])
