"""Inference post-processing on a large image: masks are pasted cropped to their boxes, so memory
follows the boxes, not detections x image size (100 full masks of a 48 MP photo: 4.8 GB)."""
import numpy as np

from maskplus.evaluation.paste import paste_mask_accurate


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
