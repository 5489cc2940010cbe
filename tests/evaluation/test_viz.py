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
