"""Box arithmetic in the graph against NumPy references."""
import numpy as np
import pytest

from tests.helpers import roi_align_reference
from maskplus.compat import tf, tfv1
from maskplus.modeling import model_box


def run(fn, *arrays):
    with tf.Graph().as_default(), tfv1.Session() as sess:
        tensors = [tf.constant(a) for a in arrays]
        return sess.run(fn(*tensors))


def test_encode_then_decode_returns_the_boxes():
    rng = np.random.RandomState(0)
    anchors = np.concatenate([rng.uniform(0, 100, (50, 2)), rng.uniform(120, 300, (50, 2))], 1).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0, 100, (50, 2)), rng.uniform(110, 400, (50, 2))], 1).astype(np.float32)
    decoded = run(lambda b, a: model_box.decode_bbox_target(model_box.encode_bbox_target(b, a), a), boxes, anchors)
    np.testing.assert_allclose(decoded, boxes, rtol=1e-4, atol=1e-3)


def test_encoding_of_a_shifted_box_is_the_shift_over_the_anchor_size():
    enc = run(model_box.encode_bbox_target, np.array([[12., 0., 22., 20.]], np.float32),
              np.array([[10., 0., 20., 10.]], np.float32))
    np.testing.assert_allclose(enc, [[0.2, 0.5, 0.0, np.log(2.0)]], atol=1e-6)


def test_decode_clips_huge_size_deltas():
    out = run(lambda d, a: model_box.decode_bbox_target(d, a, 1344.0),
              np.array([[0., 0., 50., 50.]], np.float32), np.array([[0., 0., 16., 16.]], np.float32))
    assert out[0, 2] - out[0, 0] == pytest.approx(1344.0, rel=1e-4)


def test_pairwise_iou_matches_hand_computed_values():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], np.float32)
    b = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [100, 100, 101, 101]], np.float32)
    iou = run(model_box.pairwise_iou, a, b)
    np.testing.assert_allclose(iou, [[1, 0, 0], [25 / 175., 25 / 175., 0]], atol=1e-6)


def test_clip_boxes_clips_x_to_the_width_and_y_to_the_height_of_a_wide_image():
    # a 40 x 100 (h x w) image: x in [0, 100], y in [0, 40]; h and w swapped would clip x at 40
    boxes = np.array([[-5, -3, 120, 70], [60, 30, 90, 45], [45, 10, 70, 20]], np.float32)
    got = run(lambda b: model_box.clip_boxes(b, tf.constant([40, 100])), boxes)
    np.testing.assert_array_equal(got, [[0, 0, 100, 40], [60, 30, 90, 40], [45, 10, 70, 20]])


def test_roi_align_matches_a_numpy_reference_on_a_hand_made_map():
    fmap = np.arange(10 * 12, dtype=np.float32).reshape(10, 12) ** 1.3 % 17  # non-linear, no symmetry
    boxes = np.array([[1.0, 2.0, 7.0, 6.5], [0.3, 0.7, 11.6, 9.9], [4.2, 3.3, 5.1, 4.0]], np.float32)
    got = run(lambda f, b: model_box.roi_align(f, b, 4), fmap[None, None], boxes)
    for k, box in enumerate(boxes):
        np.testing.assert_allclose(got[k, 0], roi_align_reference(fmap, box, 4), rtol=1e-4, atol=1e-4)


def test_grid_anchors_shift_cell_anchors_by_the_stride():
    cells = np.array([[-8, -8, 8, 8], [-16, -4, 16, 4]], np.float32)
    anchors = run(lambda f: model_box.grid_anchors(f, 16, cells), np.zeros((1, 1, 3, 5), np.float32))
    assert anchors.shape == (3, 5, 2, 4)
    np.testing.assert_allclose(anchors[2, 4, 1], [-16 + 64, -4 + 32, 16 + 64, 4 + 32])


def test_per_class_nms_keeps_overlapping_boxes_of_different_classes():
    from maskplus.modeling.model_frcnn import fastrcnn_predictions
    # 3 RoIs x (BG + 2 classes): RoI 0 and 1 overlap heavily; RoI 2 is elsewhere.
    boxes = np.zeros((3, 3, 4), np.float32)
    boxes[:, :] = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32)[:, None]
    scores = np.array([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.5, 0.02, 0.48]], np.float32)
    b, s, l = run(lambda bx, sc: fastrcnn_predictions(bx, sc, 0.05, 100, 0.5), boxes, scores)
    got = sorted(zip(l.tolist(), [round(float(v), 3) for v in s]))
    # class 1: RoI 1 suppressed by RoI 0; class 2: RoI 1 (0.2) and RoI 2 (0.48) survive, 0.1 of RoI 0
    # is suppressed by RoI 1's 0.2 of the same class.
    assert got == [(1, 0.8), (2, 0.2), (2, 0.48)]


def test_graph_anchors_equal_the_data_pipeline_anchors():
    from maskplus.data.anchors import cell_anchors, grid_anchors
    ratios = (0.5, 1.0, 2.0)
    got = run(lambda f: model_box.grid_anchors(f, 8, cell_anchors(64, ratios)), np.zeros((1, 1, 6, 7), np.float32))
    np.testing.assert_allclose(got, grid_anchors((6, 7), 8, cell_anchors(64, ratios)), rtol=1e-6)
