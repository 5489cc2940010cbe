"""Boundary IoU and Boundary AP on hand-made squares, with every count computed by hand.

Definition (Cheng et al. 2021, README): a mask's boundary region is the mask minus its erosion by
d = max(1, round(0.02 x image diagonal)) pixels with a 3x3 kernel, the image border counting as
outside. For an s x s square that does not touch the border the region is the ring of pixels
within d of its edge: s^2 - (s - 2d)^2.
"""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from maskplus.evaluation.coco_eval import boundary_iou, boundary_region, evaluate_coco


def _square(h, w, x, y, s):
    m = np.zeros((h, w), np.uint8)
    m[y:y + s, x:x + s] = 1
    return m


# (image side, d): 50 -> round(1.41) = 1, 60 -> round(1.70) = 2, 100 -> round(2.83) = 3
@pytest.mark.parametrize("side, d", [(50, 1), (60, 2), (100, 3)])
def test_the_boundary_of_a_20px_square_is_the_ring_within_d(side, d):
    square = _square(side, side, 15, 12, 20)
    region = boundary_region(square)
    assert region.sum() == 400 - (20 - 2 * d) ** 2  # d = 1: 76 pixels
    inner = _square(side, side, 15 + d, 12 + d, 20 - 2 * d)
    np.testing.assert_array_equal(region, square - inner)


@pytest.mark.parametrize("h, w", [(30, 90), (90, 30)])
def test_d_comes_from_the_diagonal_of_a_non_square_image(h, w):
    # diagonal sqrt(30^2 + 90^2) = 94.9 -> d = round(1.90) = 2 (the short side alone would give
    # round(0.02 * 42.4) = 1, the long one round(2.55) = 3)
    square = _square(h, w, 5, 5, 20)
    np.testing.assert_array_equal(boundary_region(square), square - _square(h, w, 7, 7, 16))


def test_a_mask_cut_by_the_image_border_has_its_boundary_along_the_border():
    corner = _square(50, 50, 0, 0, 20)        # touches the top and left border, d = 1
    assert boundary_region(corner).sum() == 76  # the border counts as outside: the full ring
    whole = np.ones((50, 50), np.uint8)
    assert boundary_region(whole).sum() == 2500 - 48 * 48
    right = np.zeros((50, 50), np.uint8)
    right[10:30, 40:50] = 1                   # 20 x 10 at the right border
    assert boundary_region(right).sum() == 200 - 18 * 8


def test_boundary_iou_of_a_square_and_its_one_pixel_erosion():
    # d = 2 (60 px image): gt ring = distances 0-1 from the gt edge, 400 - 16^2 = 144 px;
    # eroded 18 x 18 square's ring = distances 1-2, 324 - 14^2 = 128 px; both hold distance 1,
    # 18^2 - 16^2 = 68 px. Boundary IoU = 68 / (144 + 128 - 68) = 1/3.
    gt = _square(60, 60, 15, 12, 20)
    eroded = _square(60, 60, 16, 13, 18)
    assert boundary_iou(gt, eroded) == pytest.approx(68 / 204, abs=1e-12)
    assert boundary_iou(gt, gt) == 1.0
    assert boundary_iou(gt, _square(60, 60, 40, 40, 10)) == 0.0


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask[:, :, None]))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_boundary_ap_of_an_eroded_square_by_hand(backend, tmp_path):
    # 180 x 180 image: d = round(0.02 * 254.6) = 5. gt 40 x 40; prediction eroded by 1 px, 38 x 38.
    # mask IoU = 38^2 / 40^2 = 0.9025; gt ring 1600 - 30^2 = 700, prediction ring 1444 - 28^2 = 660,
    # common distances 1-4 = 38^2 - 30^2 = 544: boundary IoU = 544 / 816 = 0.667.
    # One gt, one detection: AP at a threshold is 1 if the IoU reaches it, else 0, so
    # segm AP = 9/10 (thresholds 0.5 .. 0.9) and Boundary AP = 4/10 (0.5 .. 0.65).
    gt_mask = _square(180, 180, 70, 60, 40)
    pred = _square(180, 180, 71, 61, 38)
    gt = {"images": [{"id": 1, "width": 180, "height": 180, "file_name": "1.jpg"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _rle(gt_mask),
                           "area": 1600.0, "bbox": [70.0, 60.0, 40.0, 40.0]}],
          "categories": [{"id": 1, "name": "square"}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [71.0, 61.0, 38.0, 38.0], "score": 0.9,
                "segmentation": _rle(pred)}]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    metrics = evaluate_coco(str(path), results, iou_types=("segm",), backend=backend)
    assert metrics["segm/AP"] == pytest.approx(0.9, abs=1e-9)
    assert metrics["boundary/AP"] == pytest.approx(0.4, abs=1e-9)
    assert metrics["boundary/AP50"] == pytest.approx(1.0) and metrics["boundary/AP75"] == 0.0


def _rectangle(h, w, x, y, width, height):
    m = np.zeros((h, w), np.uint8)
    m[y:y + height, x:x + width] = 1
    return m


@pytest.mark.parametrize("iscrowd", [1, True])
@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_a_detection_inside_a_crowd_region_is_ignored_by_boundary_ap(backend, iscrowd, tmp_path):
    # 150 x 200 image (h x w): d = round(0.02 * 250) = 5. A 40 x 40 object and, as in COCO files, a
    # crowd region (iscrowd the integer 1, uncompressed RLE): 60 wide, 50 high. Detection A (0.8) is the
    # object eroded by 1 px: mask IoU 0.9025, boundary IoU 544 / 816 = 0.667 (as above). Detection B
    # (0.9, higher) is a 20 x 20 square inside the crowd region, 20 px from its edges: the crowd IoU
    # (intersection over the detection's area) is 1, so COCO ignores B at every threshold, and the
    # Boundary IoU paper keeps the mask IoU for crowd regions. By hand: segm AP = 9/10 and Boundary AP
    # = 4/10 (A is the only one that counts). Were the crowd region's IoU taken through its boundary
    # too, B (boundary IoU 0: its ring lies inside the crowd region's interior) would be a false
    # positive ranked first: Boundary AP = 4/10 x 1/2 = 0.2 and AP50 = 0.5.
    from tests.conftest import _uncompressed_rle
    h, w = 150, 200
    gt = {"images": [{"id": 1, "width": w, "height": h, "file_name": "1.jpg"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": _rle(_square(h, w, 30, 50, 40)),
               "area": 1600.0, "bbox": [30.0, 50.0, 40.0, 40.0]},
              {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": iscrowd,
               "segmentation": _uncompressed_rle(_rectangle(h, w, 120, 40, 60, 50)),
               "area": 3000.0, "bbox": [120.0, 40.0, 60.0, 50.0]}],
          "categories": [{"id": 1, "name": "square"}]}
    results = [{"image_id": 1, "category_id": 1, "bbox": [31.0, 51.0, 38.0, 38.0], "score": 0.8,
                "segmentation": _rle(_square(h, w, 31, 51, 38))},
               {"image_id": 1, "category_id": 1, "bbox": [140.0, 60.0, 20.0, 20.0], "score": 0.9,
                "segmentation": _rle(_square(h, w, 140, 60, 20))}]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    metrics = evaluate_coco(str(path), results, iou_types=("segm",), backend=backend)
    assert metrics["segm/AP"] == pytest.approx(0.9, abs=1e-9)
    assert metrics["boundary/AP"] == pytest.approx(0.4, abs=1e-9)
    assert metrics["boundary/AP50"] == pytest.approx(1.0, abs=1e-9)


def _reference_boundary(mask, d):
    """Slow and obvious: a mask pixel is boundary unless every pixel within Chebyshev distance d
    (the (2d+1)^2 window; outside the image counts as background) belongs to the mask."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            y0, y1, x0, x1 = y - d, y + d + 1, x - d, x + d + 1
            inside_image = y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w
            out[y, x] = not (inside_image and mask[y0:y1, x0:x1].all())
    return out


def test_an_l_shape_keeps_its_inner_corner_in_the_boundary():
    # 20 x 20 minus its top-right 10 x 10 quadrant (300 px), d = 1: the eroded part is
    # rows/cols 1-18 minus rows 1-10 x cols 9-18 = 324 - 100 = 224, so the ring has 76 px; the
    # inner corner pixel (row 10, col 9 of the square) touches the cut-out only diagonally
    shape = _square(50, 50, 10, 10, 20)
    shape[10:20, 20:30] = 0
    region = boundary_region(shape)
    assert region.sum() == 76 and region[20, 19] == 1


@pytest.mark.parametrize("seed", range(4))
def test_boundary_region_of_random_blobs_equals_the_reference(seed):
    import cv2
    rng = np.random.RandomState(seed)
    h, w = 40 + 10 * seed, 70 - 5 * seed     # d = 2 for every size here
    mask = np.zeros((h, w), np.uint8)
    for _ in range(4):                        # discs and triangles, some cut by the border
        cv2.circle(mask, (int(rng.randint(0, w)), int(rng.randint(0, h))), int(rng.randint(3, 15)), 1, -1)
        pts = rng.randint(-5, max(h, w) + 5, (3, 2)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    d = max(1, int(round(0.02 * np.hypot(h, w))))
    assert d == 2
    np.testing.assert_array_equal(boundary_region(mask), _reference_boundary(mask, d))
