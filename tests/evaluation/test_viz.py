"""Drawing predictions: tinted masks, thresholding, files written."""
import numpy as np
import pytest

from maskplus.viz import draw_predictions, save_image


def test_masks_are_tinted_and_low_scores_are_not_drawn(tmp_path):
    img = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 60, 80), np.uint8)
    masks[0, 10:30, 10:30] = 1
    masks[1, 40:50, 50:70] = 1
    out = draw_predictions(img, [[10, 10, 30, 30], [50, 40, 70, 50]], [0.9, 0.3], [1, 2], masks,
                           ["BG", "circle", "square"], score_thresh=0.5)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out[20, 20].astype(int) - 100).max() > 20  # inside the kept mask: tinted
    np.testing.assert_array_equal(out[45, 60], [100, 100, 100])  # the 0.3 detection is not drawn
    np.testing.assert_array_equal(img[20, 20], [100, 100, 100])  # the input is untouched
    path = save_image(str(tmp_path / "sub" / "vis.png"), out)
    assert (tmp_path / "sub" / "vis.png").stat().st_size > 0 and path.endswith("vis.png")


def test_unwritable_paths_raise_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="Could not write the image"):
        save_image(str(tmp_path / "x.unknownext"), np.zeros((4, 4, 3), np.uint8))


def test_an_image_without_detections_is_returned_unchanged():
    img = np.full((20, 30, 3), 7, np.uint8)
    out = draw_predictions(img, [], [], [], None, ["BG", "a"])
    np.testing.assert_array_equal(out, img)


def _reference_drawing(img, masks, colours, alpha=0.5):
    """Full-image masks drawn the plain way: tint, then findContours on the whole image."""
    import cv2
    out = img.copy()
    for m, colour in zip(masks, colours):
        m = m.astype(bool)
        out[m] = (out[m] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, colour, 1, cv2.LINE_AA)
    return out


def test_cropped_masks_draw_exactly_what_full_masks_draw():
    from maskplus.evaluation.paste import paste_mask_cropped
    from maskplus.viz import _palette, draw_instances
    rng = np.random.RandomState(5)
    h, w = 70, 90
    img = (rng.rand(h, w, 3) * 255).astype(np.uint8)
    # boxes inside, across every edge and corner, and a tiny one
    boxes = [[10.3, 5.2, 40.7, 33.1], [-8.0, 20.0, 25.0, 50.0], [70.0, -5.0, 95.0, 30.0], [60.2, 50.1, 91.0, 71.0],
             [-3.0, -3.0, 15.0, 12.0], [44.0, 40.0, 46.5, 42.5]]
    cropped = [paste_mask_cropped(b, rng.uniform(0, 1, (28, 28)) ** 0.5, h, w) for b in boxes]
    full = [c.full() for c in cropped]
    assert all(f.sum() > 0 for f in full[:5])
    captions = [""] * len(boxes)
    got = draw_instances(img, boxes, captions, cropped)
    np.testing.assert_array_equal(got, draw_instances(img, boxes, captions, full))
    want = draw_instances(_reference_drawing(img, full, _palette(len(boxes))), boxes, captions, None)
    np.testing.assert_array_equal(got, want)
