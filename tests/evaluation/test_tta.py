"""Test-time augmentation's arithmetic (maskplus/evaluation/tta.py) on hand-made detections of a
non-square image, 60 px high and 100 px wide, seen in three views: short edge 120 (200 px wide,
scale 2), the same mirrored, and short edge 90 (150 px wide, scale 1.5). Pixel i covers [i, i + 1),
so mirroring a view W px wide maps x to W - x: a box x1..x2 becomes W - x2..W - x1."""
import itertools

import numpy as np
import pytest

from maskplus.evaluation.tta import (View, ViewGeometry, augmented_views, average_masks, boxes_to_image,
                                     boxes_to_view, merge_views)
from tests.evaluation.full_masks import paste_mask_accurate

H, W = 60, 100
BIG = ViewGeometry(H, W, 120, 200, False)
BIG_MIRRORED = ViewGeometry(H, W, 120, 200, True)
SMALL = ViewGeometry(H, W, 90, 150, False)


def test_the_views_are_each_size_then_its_mirror():
    assert augmented_views([800, 600], flip=True) == [View(800, False), View(800, True), View(600, False),
                                                      View(600, True)]
    assert augmented_views([700], flip=False) == [View(700, False)]


def test_a_box_of_a_mirrored_view_goes_back_by_w_minus_x_without_an_off_by_one():
    # (20, 10, 60, 50) in the mirrored 200 px view is (140, 10, 180, 50) unmirrored, (70, 5, 90, 25) in the image
    np.testing.assert_allclose(boxes_to_image([[20, 10, 60, 50]], BIG_MIRRORED), [[70, 5, 90, 25]], atol=1e-5)
    np.testing.assert_allclose(boxes_to_image([[20, 10, 60, 50]], BIG), [[10, 5, 30, 25]], atol=1e-5)
    # the right edge of the image (x = 100) is the left edge of the mirrored view (x = 0)
    np.testing.assert_allclose(boxes_to_image([[0, 0, 7, 8]], BIG_MIRRORED), [[96.5, 0, 100, 4]], atol=1e-5)


def test_boxes_go_into_a_view_and_back_unchanged():
    boxes = np.array([[10.25, 3.5, 31, 44.75], [0, 0, 100, 60], [87, 12, 99.5, 13]], np.float32)
    for geometry in (BIG, BIG_MIRRORED, SMALL):
        np.testing.assert_allclose(boxes_to_image(boxes_to_view(boxes, geometry), geometry), boxes, atol=1e-4)
    np.testing.assert_allclose(boxes_to_view([[70, 5, 90, 25]], BIG_MIRRORED), [[20, 10, 60, 50]], atol=1e-5)
    np.testing.assert_allclose(boxes_to_view([[70, 5, 90, 25]], SMALL), [[105, 7.5, 135, 37.5]], atol=1e-5)


def _hand_made_views():
    """Per view: (geometry, boxes in its pixels, scores, labels)."""
    big = ([[20, 20, 60, 80],      # class 1, (10, 10, 30, 40) in the image
            [140, 10, 180, 50],    # class 2, (70, 5, 90, 25): loses to its mirrored twin's 0.7
            [0, 0, 10, 10]],       # below TEST.RESULT_SCORE_THRESH (0.05)
           [0.9, 0.6, 0.04], [1, 2, 1])
    mirrored = ([[140, 20, 180, 80],  # class 1, (10, 10, 30, 40) again: suppressed by the 0.9
                 [20, 10, 60, 50],    # class 2, (70, 5, 90, 25): kept, 0.7
                 [20, 10, 60, 50]],   # class 3 at the same place: another class, kept
                [0.8, 0.7, 0.5], [1, 2, 3])
    small = ([[16.5, 15, 46.5, 60],   # class 1, (11, 10, 31, 40): IoU 0.905 with the 0.9 one
              [105, 7.5, 135, 37.5],  # class 2, (70, 5, 90, 25): suppressed
              [120, 60, 150, 90],     # class 1, (80, 40, 100, 60): kept
              [15, 30, 45, 75],       # class 1, (10, 20, 30, 50): IoU exactly 0.5 with the 0.9 one: kept
              [130, 0, 151, 30],      # class 3, (86.67, 0, 100.67 -> 100, 20): clipped to the image
              [0, 0, 3, 3]],          # class 2, (0, 0, 2, 2): kept by NMS, the 7th: over the cap of 6
             [0.65, 0.3, 0.55, 0.2, 0.25, 0.06], [1, 2, 1, 1, 3, 2])
    return [(BIG,) + big, (BIG_MIRRORED,) + mirrored, (SMALL,) + small]


def _merge(views, max_detections=6):
    found = [(boxes_to_image(b, g), s, lab) for g, b, s, lab in views]
    return merge_views(found, iou_threshold=0.5, score_threshold=0.05, max_detections=max_detections)


def test_the_merge_of_hand_made_views_keeps_what_per_class_nms_keeps():
    boxes, scores, labels = _merge(_hand_made_views())
    np.testing.assert_allclose(boxes, [[10, 10, 30, 40], [70, 5, 90, 25], [80, 40, 100, 60], [70, 5, 90, 25],
                                       [130 / 1.5, 0, 100, 20], [10, 20, 30, 50]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.55, 0.5, 0.25, 0.2], rtol=1e-6)
    assert labels.tolist() == [1, 2, 1, 3, 3, 1]


def _reference_merge(views, iou_threshold, score_threshold, max_detections):
    """A slow, obviously correct merge: map each box back by hand (mirror x -> W - x in the view,
    divide by the one scale, clip), then greedy NMS per class in plain Python."""
    found = []
    for geometry, boxes, scores, labels in views:
        s = np.sqrt(geometry.view_height / geometry.height * geometry.view_width / geometry.width)
        for (x1, y1, x2, y2), score, label in zip(np.asarray(boxes, np.float64).tolist(), scores, labels):
            if geometry.flip:
                x1, x2 = geometry.view_width - x2, geometry.view_width - x1
            box = (max(x1 / s, 0.0), max(y1 / s, 0.0), min(x2 / s, geometry.width), min(y2 / s, geometry.height))
            found.append((float(score), int(label), box))

    def iou(a, b):
        area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
        if area_a <= 0 or area_b <= 0:
            return 0.0
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / (area_a + area_b - inter)

    kept = []
    for label in sorted({lab for _, lab, _ in found}):
        mine = sorted([d for d in found if d[1] == label and d[0] > score_threshold], key=lambda d: -d[0])
        chosen = []
        for d in mine:
            if all(iou(d[2], c[2]) <= iou_threshold for c in chosen):
                chosen.append(d)
        kept += chosen
    return sorted(kept, key=lambda d: -d[0])[:max_detections]


def test_the_merge_of_many_random_detections_agrees_with_a_slow_reference():
    rng = np.random.RandomState(3)
    views, n = [], 40
    all_scores = rng.permutation(4 * n) / (4.0 * n)  # no two equal: the order is the scores'
    objects = np.array([[5, 5, 40, 30], [30, 20, 70, 58], [60, 2, 98, 30], [80, 35, 100, 60]], np.float64)
    for k, geometry in enumerate((BIG, BIG_MIRRORED, SMALL, ViewGeometry(H, W, 75, 125, True))):
        # jittered copies of a few objects (their IoUs spread around the NMS threshold), some
        # crossing the image's border, in the view's pixels (mirrored by hand)
        jittered = objects[rng.randint(0, len(objects), n)] + rng.uniform(-8, 8, (n, 4))
        s = geometry.view_width / geometry.width
        boxes = jittered * s
        if geometry.flip:
            boxes[:, [0, 2]] = geometry.view_width - boxes[:, [2, 0]]
        views.append((geometry, boxes.astype(np.float32), all_scores[k * n:(k + 1) * n], rng.randint(1, 4, n)))
    boxes, scores, labels = _merge(views, max_detections=25)
    expected = _reference_merge(views, 0.5, 0.05, 25)
    assert len(_reference_merge(views, 0.5, 0.05, 1000)) == 34  # of 151 above the score threshold: NMS works
    assert len(expected) == 25 and len(set(labels.tolist())) == 3
    assert labels.tolist() == [d[1] for d in expected]
    np.testing.assert_allclose(scores, [d[0] for d in expected], rtol=1e-6)
    np.testing.assert_allclose(boxes, [d[2] for d in expected], atol=1e-4)


def test_masks_are_averaged_as_probabilities_a_mirrored_views_mirrored_back():
    left = np.array([[0.9, 0.7, 0.2, 0.1]] * 4, np.float32)  # a mask brighter on the box's left
    mirrored = left[:, ::-1]  # the same mask as the mirrored view sees it
    weak = np.full((4, 4), 0.1, np.float32)
    mean = average_masks([left[None], mirrored[None], weak[None]], flips=[False, True, False])
    np.testing.assert_allclose(mean[0], [[(0.9 * 2 + 0.1) / 3, 0.5, (0.2 * 2 + 0.1) / 3, 0.1]] * 4, atol=1e-6)


def test_the_pasted_mask_thresholds_the_mean_probability_not_the_views_masks():
    # 0.6, 0.6 and 0.1 average 0.43 (below 0.5: nothing pasted); thresholded first, they would average 0.67
    views = [np.full((1, 28, 28), p, np.float32) for p in (0.6, 0.6, 0.1)]
    mean = average_masks(views, flips=[False, True, False])
    np.testing.assert_allclose(mean, np.full((1, 28, 28), 1.3 / 3), atol=1e-6)
    assert paste_mask_accurate([10, 10, 40, 50], mean[0], H, W).sum() == 0


@pytest.mark.parametrize("flip", [False, True])
def test_a_masks_mirror_is_its_boxs_mirror(flip):
    """A mask pasted from the mirrored view (its box mapped into the view, the mask mirrored back)
    covers the image pixels the unmirrored view's covers: the box x1..x2 -> W - x2..W - x1 and the
    columns reversed agree with each other."""
    mask = np.zeros((28, 28), np.float32)
    mask[4:20, 2:9] = 1.0  # an off-centre blob
    box = np.array([[12.0, 7.0, 47.0, 52.0]], np.float32)
    geometry = ViewGeometry(H, W, H, W, flip)  # scale 1: the paste happens in view pixels too
    in_view = boxes_to_view(box, geometry)[0]
    view_mask = mask[:, ::-1] if flip else mask  # what the view's mask branch would predict
    pasted_in_view = paste_mask_accurate(in_view, view_mask, H, W)
    back = pasted_in_view[:, ::-1] if flip else pasted_in_view  # the view's pixels, in the image
    expected = paste_mask_accurate(box[0], average_masks([view_mask[None]], [flip])[0], H, W)
    assert expected.sum() > 100
    np.testing.assert_array_equal(back, expected)


def test_equal_scores_keep_the_order_of_the_views():
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10]], np.float32)
    found = [(boxes[:1], [0.5], [1]), (boxes[1:], [0.5, 0.5], [2, 1])]
    _, _, labels = merge_views(found, 0.5, 0.05, 10)
    assert labels.tolist() == [1, 2, 1]
    for order in itertools.permutations(range(3)):
        merged = merge_views([(boxes[list(order)], [0.5] * 3, [1, 2, 1])], 0.5, 0.05, 10)[0]
        np.testing.assert_array_equal(merged, boxes[list(order)])
