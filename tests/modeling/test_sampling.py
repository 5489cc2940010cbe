"""FPN level assignment, Fast R-CNN RoI sampling and FPN proposal generation on hand-made boxes.

Expected values come from the published rules, computed by hand: the FPN paper's level
``floor(4 + log2(sqrt(area) / 224))`` clamped to P2-P5; Tensorpack's sampling (gt boxes join
the proposals, IoU >= FG_THRESH is foreground, at most BATCH_PER_IM * FG_RATIO foreground, the
rest background up to BATCH_PER_IM); proposals by per-level top-k, NMS, then a global top-k.
"""
import numpy as np
import pytest

from tests.helpers import config_snapshot, configure, position_dependent_map, roi_align_reference
from maskplus.compat import tf, tfv1


def _run(build, overrides=None, training=True):
    """Build ``build()`` (returns tensors) in a fresh graph under the tiny config and evaluate it."""
    from tensorpack.tfutils.tower import TowerContext
    with config_snapshot():
        configure(overrides or {}, training=training)
        with tf.Graph().as_default(), TowerContext("", is_training=training):
            tfv1.set_random_seed(0)
            out = build()
            with tfv1.Session() as sess:
                return sess.run(out)


# ------------------------------------------------------------------ level assignment
# (box side s of an s x s box or w x h, expected level): by hand from 4 + log2(sqrt(wh)/224)
LEVEL_CASES = [((224, 224), 4), ((223, 224), 3), ((112, 112), 3), ((111, 112), 2), ((20, 20), 2),
               ((448, 448), 5), ((447, 448), 4), ((1200, 1200), 5), ((100, 502), 4), ((100, 501), 3)]


def test_each_box_goes_to_the_fpn_level_of_its_scale():
    from maskplus.modeling.model_fpn import fpn_map_rois_to_levels
    boxes = np.array([[5.0, 7.0, 5.0 + w, 7.0 + h] for (w, h), _ in LEVEL_CASES], np.float32)

    def build():
        ids, _ = fpn_map_rois_to_levels(tf.constant(boxes))
        return ids
    got = _run(build)
    level_of = {int(i): lvl for lvl, ids in zip(range(2, 6), got) for i in ids}
    assert sorted(level_of) == list(range(len(LEVEL_CASES)))  # every box on exactly one level
    assert [level_of[i] for i in range(len(LEVEL_CASES))] == [lvl for _, lvl in LEVEL_CASES]


def test_multilevel_roi_align_pools_each_box_on_its_level_and_keeps_the_input_order():
    """P_k filled with the value k: each RoI's crop is its level, in the order the boxes came."""
    from maskplus.modeling.model_fpn import multilevel_roi_align
    cases = [((448, 448), 5), ((20, 20), 2), ((224, 224), 4), ((112, 112), 3), ((30, 40), 2), ((300, 300), 4)]
    boxes = np.array([[8.0, 8.0, 8.0 + w, 8.0 + h] for (w, h), _ in cases], np.float32)
    size = 512
    feats = [np.full((1, 2, size // s, size // s), float(k), np.float32) for k, s in zip(range(2, 6), (4, 8, 16, 32))]
    crops = _run(lambda: multilevel_roi_align([tf.constant(f) for f in feats], tf.constant(boxes), 7,
                                                 (4, 8, 16, 32)))
    assert crops.shape == (len(cases), 2, 7, 7)
    np.testing.assert_allclose(crops.mean(axis=(1, 2, 3)), [lvl for _, lvl in cases], atol=1e-5)


def test_multilevel_roi_align_crops_each_level_at_its_own_stride():
    """Maps that differ by level and by position (512 x 768 image, so h and w differ): each RoI's
    7 x 7 crop equals a slow NumPy RoIAlign of its level's map at box / stride (4, 8, 16, 32).
    A stride taken from another level moves the crop, which a constant map could not show."""
    from maskplus.modeling.model_fpn import multilevel_roi_align
    # (x1, y1, w, h) off the pixel grid, one or two per level by 4 + log2(sqrt(wh) / 224)
    cases = [((13.3, 7.7, 20, 30), 2), ((301.5, 40.25, 60, 90), 2), ((50.6, 90.2, 112, 130), 3),
             ((200.1, 150.9, 224, 260), 4), ((20.5, 30.25, 460, 470), 5), ((500.4, 10.6, 150, 100), 3)]
    boxes = np.array([[x, y, x + w, y + h] for (x, y, w, h), _ in cases], np.float32)
    strides = (4, 8, 16, 32)
    feats = [position_dependent_map(512 // s, 768 // s, offset=100.0 * k) for k, s in zip(range(2, 6), strides)]
    crops = _run(lambda: multilevel_roi_align([tf.constant(f) for f in feats], tf.constant(boxes), 7,
                                                 (4, 8, 16, 32)))
    assert crops.shape == (len(cases), 2, 7, 7)
    for k, (box, (_, level)) in enumerate(zip(boxes, cases)):
        fmap = feats[level - 2][0]
        for c in range(2):
            expected = roi_align_reference(fmap[c], box / strides[level - 2], 7)
            np.testing.assert_allclose(crops[k, c], expected, rtol=1e-4, atol=1e-3, err_msg=f"box {k}, channel {c}")


# ------------------------------------------------------------------ RoI sampling
GT = np.array([[0, 0, 10, 10], [40, 40, 60, 60]], np.float32)
GT_LABELS = np.array([2, 1], np.int64)


def _sample(proposals, overrides):
    from config import config as cfg
    from maskplus.modeling.model_frcnn import FastRCNNParams, sample_fast_rcnn_targets

    def build():
        f = FastRCNNParams.from_config(cfg)
        p = sample_fast_rcnn_targets(tf.constant(proposals, tf.float32), tf.constant(GT), tf.constant(GT_LABELS),
                                     f.fg_thresh, f.batch_per_im, f.fg_ratio)
        return p.boxes, p.labels, p.fg_inds_wrt_gt
    return _run(build, dict({"FRCNN.FG_THRESH": 0.5}, **overrides))


def test_gt_boxes_join_the_proposals_as_foreground():
    far = np.array([[80, 80, 90, 90], [70, 0, 90, 20]], np.float32)  # IoU 0 with both gts
    boxes, labels, wrt_gt = _sample(far, {"FRCNN.BATCH_PER_IM": 16, "FRCNN.FG_RATIO": 0.5})
    assert len(boxes) == 4  # 2 proposals + 2 gts, fewer than the batch
    fg = labels > 0
    assert fg.sum() == 2
    got = sorted((tuple(b), int(lab), int(g)) for b, lab, g in zip(boxes[fg], labels[fg], wrt_gt))
    assert got == [((0, 0, 10, 10), 2, 0), ((40, 40, 60, 60), 1, 1)]
    assert sorted(map(tuple, boxes[~fg])) == sorted(map(tuple, far))


# FRCNN.FG_THRESH -> the labels of the proposals below (gt 0 has label 2, gt 1 label 1)
@pytest.mark.parametrize("thresh, expected", [(0.5, [2, 0, 1, 1]), (0.7, [0, 0, 0, 1])])
def test_the_fg_threshold_is_iou_at_least_fg_thresh_and_labels_follow_the_best_gt(thresh, expected):
    """The example's FG_THRESH 0.5 (IoU >= it is foreground) and another value, 0.7, which turns
    the proposals at IoU 0.5 and 0.6 into background: the threshold is the config's."""
    proposals = np.array([
        [0, 0, 10, 5],      # IoU 0.5 with gt 0: foreground at 0.5 (>=)
        [0, 0, 10, 4.9],    # IoU 0.49: background
        [40, 40, 60, 52],   # IoU 0.6 with gt 1
        [40, 45, 60, 60],   # IoU 0.75 with gt 1
    ], np.float32)
    boxes, labels, wrt_gt = _sample(proposals, {"FRCNN.BATCH_PER_IM": 16, "FRCNN.FG_RATIO": 0.5,
                                                "FRCNN.FG_THRESH": thresh})
    by_box = {tuple(b): int(lab) for b, lab in zip(boxes, labels)}
    assert [by_box[tuple(np.float32(v) for v in p)] for p in proposals] == expected
    fg_boxes = boxes[labels > 0]
    # each foreground RoI points at the gt it overlaps most
    for b, g in zip(fg_boxes, wrt_gt):
        assert g == (0 if b[0] < 20 else 1)


@pytest.mark.parametrize("batch, ratio, fg", [(16, 0.25, 4), (20, 0.4, 8)])
def test_foreground_is_capped_at_batch_times_ratio_and_background_fills_the_batch(batch, ratio, fg):
    # 32 foreground candidates (30 near gt 1 and the 2 gts) and 40 background ones: both caps bind;
    # the second case is not the example's FG_RATIO (0.25), so the cap must come from the config
    rng = np.random.RandomState(0)
    near = GT[1] + rng.uniform(-1, 1, (30, 4)).astype(np.float32)          # IoU > 0.8 with gt 1
    far = np.array([[70 + i % 5, 0, 80 + i % 5, 10] for i in range(40)], np.float32)  # IoU 0
    boxes, labels, wrt_gt = _sample(np.concatenate([near, far]), {"FRCNN.BATCH_PER_IM": batch, "FRCNN.FG_RATIO": ratio})
    assert len(boxes) == batch
    assert (labels > 0).sum() == fg and len(wrt_gt) == fg    # int(batch * ratio)
    assert (labels == 0).sum() == batch - fg


def test_background_is_capped_by_what_exists_and_foreground_by_what_exists():
    near = GT[0] + np.array([[0, 0, 0, -1], [0, 0, -1, 0], [0, 1, 0, 0]], np.float32)  # 3 fg (IoU 0.9)
    far = np.array([[70, 70, 80, 80], [70, 0, 80, 10]], np.float32)
    boxes, labels, _ = _sample(np.concatenate([near, far]), {"FRCNN.BATCH_PER_IM": 64, "FRCNN.FG_RATIO": 0.5})
    assert (labels > 0).sum() == 5 and (labels == 0).sum() == 2  # 3 near + 2 gts; 2 bg


# ------------------------------------------------------------------ proposals
# level 2 (per-level top-3 before NMS): A, A2 (IoU 0.95 with A: suppressed), B; C, D cut by top-k
LVL2 = {"A": ([0, 0, 20, 20], 5.0), "A2": ([0, 0, 20, 19], 4.0), "B": ([30, 30, 50, 50], 3.0),
        "C": ([60, 0, 80, 20], 2.0), "D": ([0, 60, 20, 80], 1.0)}
# level 3: G overlaps A (IoU 0.905) but on another level; H is clipped to the 100x100 image
LVL3 = {"G": ([1, 0, 21, 20], 6.0), "E": ([0, 30, 20, 50], 4.5), "H": ([70, 70, 130, 130], 0.5)}


def _proposals(overrides, training=True):
    from config import config as cfg
    from maskplus.modeling.model_fpn import generate_fpn_proposals
    from maskplus.modeling.model_rpn import RPNParams

    def as_tensors(level):
        return (tf.constant([b for b, _ in level.values()], tf.float32),
                tf.constant([s for _, s in level.values()], tf.float32))

    def build():
        (b2, s2), (b3, s3) = as_tensors(LVL2), as_tensors(LVL3)
        return generate_fpn_proposals([b2, b3], [s2, s3], tf.constant([100, 100]), training,
                                      RPNParams.from_config(cfg))
    boxes, scores = _run(build, overrides, training)
    return sorted(zip(scores.tolist(), boxes.tolist()), reverse=True)


def test_level_mode_takes_top_k_per_level_then_nms_then_a_global_top_k():
    got = _proposals({"FPN.PROPOSAL_MODE": "Level", "RPN.TRAIN_PER_LEVEL_NMS_TOPK": 3})
    # level 2 keeps A, B; level 3 keeps G, E, H; the global top 3 by score: G, A, E
    assert got == [(6.0, LVL3["G"][0]), (5.0, LVL2["A"][0]), (4.5, LVL3["E"][0])]


def test_level_mode_at_inference_uses_the_test_top_k_and_clips_to_the_image():
    got = _proposals({"FPN.PROPOSAL_MODE": "Level", "RPN.TEST_PER_LEVEL_NMS_TOPK": 10,
                      "RPN.TRAIN_PER_LEVEL_NMS_TOPK": 1}, training=False)
    # no top-k cut: every box but A2 (suppressed by A on its own level) survives; H clipped
    assert got == [(6.0, LVL3["G"][0]), (5.0, LVL2["A"][0]), (4.5, LVL3["E"][0]), (3.0, LVL2["B"][0]),
                   (2.0, LVL2["C"][0]), (1.0, LVL2["D"][0]), (0.5, [70, 70, 100, 100])]


def test_joint_mode_runs_one_nms_over_all_levels():
    got = _proposals({"FPN.PROPOSAL_MODE": "Joint", "RPN.TRAIN_PRE_NMS_TOPK": 5, "RPN.TRAIN_POST_NMS_TOPK": 3})
    # pre-NMS top 5: G 6, A 5, E 4.5, A2 4, B 3; NMS drops A and A2 (both overlap G > 0.7); top 3 after
    assert got == [(6.0, LVL3["G"][0]), (4.5, LVL3["E"][0]), (3.0, LVL2["B"][0])]


@pytest.mark.parametrize("thresh, kept", [(0.7, ["a", "at_06", "far"]), (0.55, ["a", "far"]), (0.85, ["a", "at_06", "at_08", "far"])])
def test_rpn_proposal_nms_suppresses_above_rpn_proposal_nms_thresh_only(thresh, kept):
    """RPN.PROPOSAL_NMS_THRESH (the example's 0.7): a box at IoU 0.6 with a better one stays, a box
    at IoU 0.8 goes; other values of the key move the cut (0.55 drops both, 0.85 keeps both).
    Boxes on a 60 x 100 image."""
    from config import config as cfg
    from maskplus.modeling.model_rpn import RPNParams, generate_rpn_proposals
    boxes_by_name = {"a": [0, 0, 40, 40], "at_06": [0, 16, 40, 40], "at_08": [0, 8, 40, 40], "far": [60, 10, 90, 50]}
    scores_by_name = {"a": 5.0, "at_06": 4.0, "at_08": 3.0, "far": 2.0}
    # IoU by hand: at_06 lies inside a, 40 * 24 / 1600 = 0.6; at_08: 40 * 32 / 1600 = 0.8

    def build():
        rpn = RPNParams.from_config(cfg)
        return generate_rpn_proposals(tf.constant(list(boxes_by_name.values()), tf.float32),
                                      tf.constant(list(scores_by_name.values())), tf.constant([60, 100]), 10,
                                      min_size=rpn.min_size, nms_thresh=rpn.nms_thresh)
    boxes, scores = _run(build, {"RPN.PROPOSAL_NMS_THRESH": thresh}, training=False)
    np.testing.assert_array_equal(boxes, [boxes_by_name[k] for k in kept])
    np.testing.assert_array_equal(scores, [scores_by_name[k] for k in kept])


# -------------------- the Tensorpack example's rule (faithfulness): proposals and RPN.MIN_SIZE
# On a 100 x 100 image: b1 lies beyond the right edge and is clipped to zero width; b2 overlaps b0
# at IoU 38*38 / (2*1600 - 38*38) = 0.82 > 0.7 and is suppressed.
_BOXES = [[10, 10, 50, 50], [120, 20, 160, 60], [12, 12, 52, 52], [60, 60, 90, 95]]
_LOGITS = [5.0, 4.0, 3.0, 2.0]


def _proposals_with_min_size(min_size):
    from config import config as cfg
    from maskplus.modeling.model_rpn import RPNParams, generate_rpn_proposals
    with config_snapshot():
        configure({"RPN.MIN_SIZE": float(min_size)})
        rpn = RPNParams.from_config(cfg)
        with tf.Graph().as_default(), tfv1.Session() as sess:
            boxes, scores = generate_rpn_proposals(tf.constant(_BOXES, tf.float32), tf.constant(_LOGITS),
                                                   tf.constant([100, 100]), 10, min_size=rpn.min_size,
                                                   nms_thresh=rpn.nms_thresh)
            return sess.run([boxes, scores])


@pytest.mark.faithfulness
def test_with_min_size_zero_a_box_clipped_to_zero_width_stays_a_proposal():
    boxes, scores = _proposals_with_min_size(0)
    np.testing.assert_array_equal(boxes, [[10, 10, 50, 50], [100, 20, 100, 60], [60, 60, 90, 95]])
    np.testing.assert_array_equal(scores, [5.0, 4.0, 2.0])


@pytest.mark.faithfulness
def test_with_a_positive_min_size_boxes_not_wider_and_taller_are_dropped():
    boxes, scores = _proposals_with_min_size(1)
    np.testing.assert_array_equal(boxes, [[10, 10, 50, 50], [60, 60, 90, 95]])
    np.testing.assert_array_equal(scores, [5.0, 2.0])
