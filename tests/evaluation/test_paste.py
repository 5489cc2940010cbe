"""Mask pasting: the vectorised accurate paste against an obviously correct per-pixel reference."""
import numpy as np
import pytest
from pycocotools import mask as mask_util

from maskplus.evaluation.paste import paste_masks_to_rle
from tests.evaluation.full_masks import paste_mask_accurate, paste_mask_fast


def reference_accurate_paste(box, mask, height, width):
    """Per-pixel loops and an explicit bilinear formula: slow, and easy to check by eye."""
    m = mask.shape[0]
    padded = np.zeros((m + 2, m + 2))
    padded[1:-1, 1:-1] = mask
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * (m + 2) / m, (y2 - y1) * (m + 2) / m
    bx1, by1 = cx - w / 2, cy - h / 2
    out = np.zeros((height, width), np.uint8)
    for yy in range(height):
        for xx in range(width):
            # position of this pixel's centre in padded-mask pixels, centres at j + 0.5
            u = (xx + 0.5 - bx1) / w * (m + 2)
            v = (yy + 0.5 - by1) / h * (m + 2)
            # grid of sample points at 0.5 .. m + 1.5; zero outside it
            if not (0.5 <= u <= m + 1.5 and 0.5 <= v <= m + 1.5):
                continue
            j0 = min(int(np.floor(u - 0.5)), m)
            i0 = min(int(np.floor(v - 0.5)), m)
            fu, fv = u - 0.5 - j0, v - 0.5 - i0
            value = (padded[i0, j0] * (1 - fu) * (1 - fv) + padded[i0, j0 + 1] * fu * (1 - fv)
                     + padded[i0 + 1, j0] * (1 - fu) * fv + padded[i0 + 1, j0 + 1] * fu * fv)
            out[yy, xx] = value >= 0.5
    return out


def _test_boxes():
    """Boxes 10-60 px on a side, each meeting the 64 x 80 image: 6 random ones inside or across
    an edge, then some exactly half outside (left, right, top, bottom) and a quarter (corner)."""
    rng = np.random.RandomState(0)
    boxes = []
    for _ in range(6):
        w, h = rng.uniform(10, 60, 2)
        x1, y1 = rng.uniform(-w / 2, 80 - w / 2), rng.uniform(-h / 2, 64 - h / 2)
        boxes.append([x1, y1, x1 + w, y1 + h])
    w, h = 37.3, 22.6
    boxes += [[-w / 2, 20.2, w / 2, 20.2 + h], [80 - w / 2, 10.7, 80 + w / 2, 10.7 + h],
              [30.4, -h / 2, 30.4 + w, h / 2], [12.9, 64 - h / 2, 12.9 + w, 64 + h / 2],
              [-30.0, -20.0, 30.0, 20.0], [55.5, 41.5, 104.5, 86.5]]
    return boxes


@pytest.mark.parametrize("k", range(12))
def test_vectorised_accurate_paste_equals_the_reference(k):
    height, width = 64, 80
    box = _test_boxes()[k]
    x1, y1, x2, y2 = box
    assert 10 <= x2 - x1 <= 60 and 10 <= y2 - y1 <= 60
    assert x1 < width and x2 > 0 and y1 < height and y2 > 0  # meets the image
    mask = np.random.RandomState(k).uniform(0, 1, (28, 28))
    got = paste_mask_accurate(box, mask, height, width)
    want = reference_accurate_paste(box, mask, height, width)
    assert want.sum() > 20  # something landed in the image
    assert np.sum(got != want) == 0


def test_some_test_boxes_lie_half_outside_the_image():
    halves = 0
    for x1, y1, x2, y2 in _test_boxes():
        inside = (min(x2, 80) - max(x1, 0)) * (min(y2, 64) - max(y1, 0))
        halves += abs(inside / ((x2 - x1) * (y2 - y1)) - 0.5) < 1e-9
    assert halves == 4


def test_sub_pixel_box_shift_moves_the_accurate_mask_but_rounds_away_in_fast_mode():
    mask = np.zeros((28, 28))
    mask[:, :14] = 1.0  # left half
    # the 0.5 crossing between the halves sits at x = 24.0, then at 24.6: pixel 24 (centre 24.5) joins
    a = paste_mask_accurate([10.0, 10.0, 38.0, 38.0], mask, 50, 50)
    b = paste_mask_accurate([10.6, 10.0, 38.6, 38.0], mask, 50, 50)
    assert a[20, 23] == 1 and a[20, 24] == 0 and b[20, 24] == 1
    fa = paste_mask_fast([10.0, 10.0, 38.0, 38.0], mask, 50, 50)
    fb = paste_mask_fast([10.3, 10.0, 38.3, 38.0], mask, 50, 50)
    np.testing.assert_array_equal(fa, fb)


def test_fast_paste_rounds_a_box_off_the_pixel_grid_as_the_example():
    """The example's rule for box [10.6, 7.6, 31.3, 20.4]: first pixel int(x1 + 0.5) = 11,
    int(y1 + 0.5) = 8, last (inclusive) int(x2 - 0.5) = 30, int(y2 - 0.5) = 19: a 12 x 20 region.
    The 28 x 28 mask is bilinearly resized to it (pixel centres at k + 0.5) and thresholded at 0.5.
    Its top-left quadrant of ones: output column j samples mask x = (j + 0.5) * 28 / 20 - 0.5,
    above 0.5 while x < 13.5, so j <= 9; row i samples y = (i + 0.5) * 28 / 12 - 0.5 < 13.5, i <= 5."""
    mask = np.zeros((28, 28))
    mask[:14, :14] = 1.0
    out = paste_mask_fast([10.6, 7.6, 31.3, 20.4], mask, 30, 40)
    expected = np.zeros((30, 40), np.uint8)
    expected[8:8 + 6, 11:11 + 10] = 1
    np.testing.assert_array_equal(out, expected)
    full = paste_mask_fast([10.6, 7.6, 31.3, 20.4], np.ones((28, 28)), 30, 40)
    expected[8:20, 11:31] = 1
    np.testing.assert_array_equal(full, expected)


@pytest.mark.parametrize("paste", [paste_mask_accurate, paste_mask_fast])
def test_a_known_square_mask_lands_where_the_box_says(paste):
    mask = np.ones((28, 28))
    out = paste([20, 10, 40, 25], mask, 40, 60)
    ys, xs = np.nonzero(out)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 24, 20, 39)
    assert out.sum() == 15 * 20


def test_many_masks_and_rles_agree():
    rng = np.random.RandomState(3)
    boxes = np.array([[5, 5, 30, 40], [0, 0, 63, 47], [50, 30, 70, 60]], np.float32)
    masks = rng.uniform(0, 1, (3, 28, 28))
    full = np.array([paste_mask_accurate(box, mask, 48, 64) for box, mask in zip(boxes, masks)])
    rles = paste_masks_to_rle(boxes, masks, 48, 64)
    assert full.shape == (3, 48, 64) and isinstance(rles[0]["counts"], str)
    for k in range(3):
        np.testing.assert_array_equal(mask_util.decode(rles[k]), full[k])


def _random_cases(n, seed):
    """(box, 28x28 probabilities, height, width): small images, boxes inside, across an edge or
    outside, tiny and large, some masks all ones (runs touching the crop's corners)."""
    rng = np.random.RandomState(seed)
    for t in range(n):
        h, w = rng.randint(1, 40), rng.randint(1, 40)
        bw, bh = rng.uniform(0.3, 50, 2)
        x1, y1 = rng.uniform(-30, 45), rng.uniform(-30, 45)
        yield [x1, y1, x1 + bw, y1 + bh], (rng.uniform(0, 1, (28, 28)) if t % 4 else np.ones((28, 28))), h, w


@pytest.mark.parametrize("accurate", [True, False])
def test_a_cropped_mask_is_the_full_paste_and_encodes_to_the_same_rle(accurate):
    from maskplus.evaluation.paste import encode_cropped_mask, paste_mask_cropped
    nonempty = 0
    for box, mask, h, w in _random_cases(400, 1):
        full = (paste_mask_accurate if accurate else paste_mask_fast)(box, mask, h, w)
        cropped = paste_mask_cropped(box, mask, h, w, accurate)
        np.testing.assert_array_equal(cropped.full(), full)
        ys, xs = np.nonzero(full)
        if len(ys):  # the crop holds every set pixel and stays inside the image
            nonempty += 1
            assert cropped.y0 <= ys.min() and ys.max() < cropped.y0 + cropped.mask.shape[0]
            assert cropped.x0 <= xs.min() and xs.max() < cropped.x0 + cropped.mask.shape[1]
        assert cropped.y0 + cropped.mask.shape[0] <= h and cropped.x0 + cropped.mask.shape[1] <= w
        # pycocotools' own encoder of the full mask is the reference
        ref = mask_util.encode(np.asfortranarray(full[:, :, None]))[0]
        assert encode_cropped_mask(cropped) == dict(ref, counts=ref["counts"].decode("ascii"))
    assert 100 < nonempty < 400
