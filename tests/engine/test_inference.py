"""Inference post-processing on a large image: masks are pasted cropped to their boxes, so memory
follows the boxes, not detections x image size (100 full masks of a 48 MP photo: 4.8 GB)."""
import math

import numpy as np
import pytest

from tests.evaluation.full_masks import paste_mask_accurate
from tests.helpers import config_snapshot, configure


def test_postprocessing_a_large_image_never_holds_a_full_mask_per_detection(cfg_override):
    import tracemalloc
    from maskplus.engine.inference import NetworkOutput, postprocess
    cfg_override({"MODE_MASK": True, "MRCNN.ACCURATE_PASTE": True})
    h, w, n = 1000, 1500, 100  # the full masks alone would be 150 MB
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 1400, (n, 2)) * [1, h / w]
    boxes = np.concatenate([xy, xy + rng.uniform(20, 90, (n, 2))], axis=1).astype(np.float32)
    out = NetworkOutput(boxes, rng.uniform(0.5, 1, n), np.ones(n, np.int64), rng.uniform(0, 1, (n, 28, 28)), (h, w))
    tracemalloc.start()
    try:
        dets = postprocess(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4e6, f"{peak / 1e6:.0f} MB"
    for k in range(5):  # the same masks as before, cropped
        np.testing.assert_array_equal(dets[k].mask.full(), paste_mask_accurate(boxes[k], out.masks[k], h, w))


# -------------------- the Tensorpack example's rule (faithfulness): one scale back to the image
def _map_back(per_axis):
    from maskplus.engine.inference import run_network
    seen = {}

    def fake_predictor(image):
        seen["shape"] = image.shape
        boxes = np.array([[10, 20, 100, 90], [140, 0, 153, 100]], np.float32)
        return boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2], np.int32)

    with config_snapshot():
        configure({"MODE_MASK": False, "PREPROC.TEST_SHORT_EDGE_SIZE": 100, "PREPROC.MAX_SIZE": 1000.0,
                   "TEST.BOX_SCALE_PER_AXIS": per_axis}, training=False)
        out = run_network(fake_predictor, np.zeros((150, 230, 3), np.uint8))
    return seen["shape"], out.boxes


@pytest.mark.faithfulness
def test_inference_boxes_go_back_with_one_scale_as_in_the_example():
    shape, boxes = _map_back(per_axis=False)
    assert shape == (100, 153, 3)  # 230 * 100 / 150 = 153.3 -> 153
    s = math.sqrt(100 / 150 * 153 / 230)  # the example: sqrt(scale_y * scale_x) = 0.665942
    expected = np.array([[10 / s, 20 / s, 100 / s, 90 / s],
                         [140 / s, 0, 153 / s, 150]])  # 100 / s = 150.16 is clipped to the height
    np.testing.assert_allclose(boxes, expected, rtol=1e-6)


@pytest.mark.faithfulness
def test_per_axis_box_scaling_is_available_behind_its_key():
    _, boxes = _map_back(per_axis=True)
    sy, sx = 100 / 150, 153 / 230
    expected = np.array([[10 / sx, 20 / sy, 100 / sx, 90 / sy], [140 / sx, 0, 230, 150]])
    np.testing.assert_allclose(boxes, expected, rtol=1e-6)
