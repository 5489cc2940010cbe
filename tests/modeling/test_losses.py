"""RPN and Fast R-CNN losses on tiny hand-made inputs, against values computed by hand.

The formulas are Tensorpack's (examples/FasterRCNN): RPN objectness = sum of sigmoid CE over
the sampled anchors (label != -1) / RPN.BATCH_PER_IM; RPN box = sum of smooth-L1 (huber with
delta 1/9, divided by delta) over positive anchors / RPN.BATCH_PER_IM; Fast R-CNN label = mean
softmax CE over all sampled RoIs; Fast R-CNN box = sum of |target - prediction of the RoI's own
class| over foreground RoIs / number of sampled RoIs.
"""
import math

import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint, train_steps
from maskplus.compat import tf, tfv1

LN2, LN3 = math.log(2), math.log(3)


def _run(build, overrides=None):
    from tensorpack.tfutils.tower import TowerContext
    with config_snapshot():
        configure(overrides or {}, training=True)
        with tf.Graph().as_default(), TowerContext("", is_training=True):
            out = build()
            with tfv1.Session() as sess:
                return sess.run(out)


# a 2 x 2 map with one anchor per cell: positive, negative / ignored, positive
RPN_LABELS = np.array([[[1], [0]], [[-1], [1]]], np.int32)
RPN_LOGITS = np.array([[[0.0], [LN3]], [[5.0], [-LN3]]], np.float32)
RPN_TARGETS = np.zeros((2, 2, 1, 4), np.float32)
RPN_DELTAS = np.zeros((2, 2, 1, 4), np.float32)
RPN_TARGETS[0, 0, 0] = [0.05, 0.0, 0.0, 0.5]
RPN_DELTAS[1, 1, 0] = [0.0, -1.0, 0.0, 0.0]
RPN_DELTAS[1, 0, 0] = [9.0, 9.0, 9.0, 9.0]  # on the ignored anchor: must not count
RPN_DELTAS[0, 1, 0] = [7.0, 7.0, 7.0, 7.0]  # on the negative anchor: must not count
# by hand: CE(1, 0) = ln 2; CE(0, ln 3) = ln(1 + 3) = ln 4; CE(1, -ln 3) = ln(1 + 3) = ln 4
RPN_LABEL_SUM = LN2 + 2 * math.log(4)
# smooth-L1 / delta with delta = 1/9: 4.5 x^2 if |x| <= 1/9 else |x| - 1/18
RPN_BOX_SUM = 4.5 * 0.05 ** 2 + (0.5 - 1 / 18) + (1.0 - 1 / 18)


def _rpn_losses(labels, logits, targets, deltas, batch):
    from maskplus.modeling.model_rpn import rpn_losses
    return _run(lambda: rpn_losses(tf.constant(labels), tf.constant(targets), tf.constant(logits), tf.constant(deltas),
                                   batch))


@pytest.mark.parametrize("batch", [4, 16])
def test_rpn_losses_are_sums_over_sampled_anchors_divided_by_the_batch_size(batch):
    label_loss, box_loss = _rpn_losses(RPN_LABELS, RPN_LOGITS, RPN_TARGETS, RPN_DELTAS, batch)
    assert label_loss == pytest.approx(RPN_LABEL_SUM / batch, rel=1e-5)
    assert box_loss == pytest.approx(RPN_BOX_SUM / batch, rel=1e-5)


def test_rpn_losses_of_a_level_without_valid_or_positive_anchors_are_zero():
    ignored = np.full_like(RPN_LABELS, -1)
    assert _rpn_losses(ignored, RPN_LOGITS, RPN_TARGETS, RPN_DELTAS, 4) == (0.0, 0.0)
    negatives = np.where(RPN_LABELS == 1, 0, RPN_LABELS).astype(np.int32)
    label_loss, box_loss = _rpn_losses(negatives, RPN_LOGITS, RPN_TARGETS, RPN_DELTAS, 4)
    # CE(0, 0) = ln 2, CE(0, ln 3) = ln 4, CE(0, -ln 3) = ln(4/3)
    assert label_loss == pytest.approx((LN2 + math.log(4) + math.log(4 / 3)) / 4, rel=1e-5)
    assert box_loss == 0.0


def test_multilevel_rpn_losses_sum_the_levels():
    from maskplus.modeling.model_fpn import multilevel_rpn_losses
    second = np.array([[[0], [-1]]], np.int32), np.array([[[LN3], [0.0]]], np.float32)
    targets2, deltas2 = np.zeros((1, 2, 1, 4), np.float32), np.zeros((1, 2, 1, 4), np.float32)

    def build():
        return multilevel_rpn_losses(
            [tf.constant(RPN_LABELS), tf.constant(second[0])], [tf.constant(RPN_TARGETS), tf.constant(targets2)],
            [tf.constant(RPN_LOGITS), tf.constant(second[1])], [tf.constant(RPN_DELTAS), tf.constant(deltas2)], 4)
    label_loss, box_loss = _run(build)
    assert label_loss == pytest.approx((RPN_LABEL_SUM + math.log(4)) / 4, rel=1e-5)
    assert box_loss == pytest.approx(RPN_BOX_SUM / 4, rel=1e-5)


# Fast R-CNN: 4 sampled RoIs, 2 categories (3 classes with background)
FR_LABELS = np.array([1, 0, 2, 0], np.int64)
FR_LOGITS = np.array([[0, 0, 0], [math.log(2), 0, 0], [0, 0, math.log(2)], [0, math.log(2), math.log(2)]], np.float32)
# by hand: p = 1/3 -> ln 3; p = 2/4 -> ln 2; p = 2/4 -> ln 2; p = 1/5 -> ln 5
FR_LABEL_LOSS = (LN3 + LN2 + LN2 + math.log(5)) / 4
FG_TARGETS = np.array([[1, 2, 3, 4], [0, 0, 0, 0]], np.float32)
FG_BOX_LOGITS = np.full((2, 3, 4), 100.0, np.float32)  # other classes' deltas: far off, must not count
FG_BOX_LOGITS[0, 1] = [1, 2, 3, 3]      # RoI 0 (class 1): |diff| sums to 1
FG_BOX_LOGITS[1, 2] = [0.5, -0.5, 0, 0]  # RoI 2 (class 2): |diff| sums to 1
FR_BOX_LOSS = (1.0 + 1.0) / 4  # divided by all 4 sampled RoIs, not by the 2 foreground ones


def test_fastrcnn_losses_by_hand():
    from maskplus.modeling.model_frcnn import fastrcnn_losses
    label_loss, box_loss = _run(lambda: fastrcnn_losses(
        tf.constant(FR_LABELS), tf.constant(FR_LOGITS), tf.constant(FG_TARGETS), tf.constant(FG_BOX_LOGITS)))
    assert label_loss == pytest.approx(FR_LABEL_LOSS, rel=1e-5)
    assert box_loss == pytest.approx(FR_BOX_LOSS, rel=1e-5)


def test_fastrcnn_box_loss_is_zero_without_foreground():
    from maskplus.modeling.model_frcnn import fastrcnn_losses
    labels = np.zeros(4, np.int64)
    label_loss, box_loss = _run(lambda: fastrcnn_losses(
        tf.constant(labels), tf.constant(FR_LOGITS), tf.zeros([0, 4]), tf.zeros([0, 3, 4])))
    # CE with label 0: ln 3, ln 2, ln 4, ln 5
    assert label_loss == pytest.approx((LN3 + LN2 + math.log(4) + math.log(5)) / 4, rel=1e-5)
    assert box_loss == 0.0


def test_the_box_head_regresses_weighted_deltas_of_the_matched_gt():
    """FastRCNNHead.losses: targets are the gt's deltas from its RoI times BBOX_REG_WEIGHTS."""
    from maskplus.modeling.model_frcnn import BoxProposals, FastRCNNHead
    rois = np.array([[0, 0, 10, 20], [50, 50, 60, 60]], np.float32)
    gt = np.array([[100, 100, 120, 120], [1, 2, 13, 27]], np.float32)  # RoI 0 matches gt 1
    # by hand, gt 1 vs RoI 0: centre (7, 14.5) vs (5, 10), size (12, 25) vs (10, 20): every delta
    # non-zero and each different, (dx, dy, dw, dh) = (0.2, 0.225, ln 1.2, ln 1.25), times the
    # weights (10, 10, 5, 5) = (2, 2.25, 0.912, 1.116)
    targets = [2.0, 2.25, 5 * math.log(1.2), 5 * math.log(1.25)]
    prediction = [2.0, 2.0, 1.0, 1.0]
    box_logits = np.zeros((2, 3, 4), np.float32)
    box_logits[0, 2] = prediction  # class 2's deltas; the other classes' (zeros) must not count

    def build():
        proposals = BoxProposals(tf.constant(rois), tf.constant([2, 0], tf.int64), tf.constant([1], tf.int64))
        head = FastRCNNHead(proposals, tf.constant(box_logits), tf.zeros([2, 3]), tf.constant(gt),
                            [10.0, 10.0, 5.0, 5.0], max_size=1333)
        return head.losses()
    _, box_loss = _run(build)
    # |diff| = 0 + 0.25 + 0.088 + 0.116, over the 2 sampled RoIs
    assert box_loss == pytest.approx(sum(abs(t - p) for t, p in zip(targets, prediction)) / 2, rel=1e-5)


# -------------------- the Tensorpack example's rule (faithfulness): an image without foreground
@pytest.mark.slow
@pytest.mark.faithfulness
def test_an_image_without_foreground_trains_with_finite_losses_and_zero_mask_loss():
    empty = synthetic_datapoint(boxes=np.zeros((0, 4)), labels=())
    with config_snapshot():
        configure({"MASKPLUS.QUASI_MULTITASK": ["0.5x"]})
        graph, placeholders, model = build_graph(True)
        costs = train_steps(graph, placeholders, model, empty)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            mask_losses = [op.outputs[0] for op in graph.get_operations() if op.name.endswith("_or_zero")]
            values = sess.run(mask_losses, {placeholders[k]: v for k, v in empty.items()})
    assert np.all(np.isfinite(costs)) and values == [0.0, 0.0]  # the mask loss and the 0.5x loss
