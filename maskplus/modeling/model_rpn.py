"""Region proposal network: the shared head, its losses, and proposal generation.

Config-free: :class:`RPNParams` holds the ``RPN`` section, read by :meth:`RPNParams.from_config`
from a config given as an argument; the functions take the numbers they need.
"""
from typing import NamedTuple

from tensorpack.models import Conv2D, layer_register
from tensorpack.tfutils import argscope
from tensorpack.tfutils.scope_utils import auto_reuse_variable_scope, under_name_scope
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.compat import tf, tfv1
from maskplus.modeling.float32_island import float32_island
from maskplus.modeling.model_box import clip_boxes


class RPNParams(NamedTuple):
    """The region proposal network's parameters (the ``RPN`` section, and ``FPN.PROPOSAL_MODE``)."""
    anchor_sizes: tuple              #: RPN.ANCHOR_SIZES, one per FPN level (C4: all at every cell)
    anchor_ratios: tuple             #: RPN.ANCHOR_RATIOS, h / w
    anchor_stride: int               #: RPN.ANCHOR_STRIDE, C4's feature stride
    num_anchors: int                 #: RPN.NUM_ANCHOR, anchors per cell
    head_dim: int                    #: RPN.HEAD_DIM, the C4 RPN's hidden width (FPN: FPN.NUM_CHANNEL)
    batch_per_im: int                #: RPN.BATCH_PER_IM, the losses' normaliser
    min_size: float                  #: RPN.MIN_SIZE, proposals not wider and taller are dropped (0: none)
    nms_thresh: float                #: RPN.PROPOSAL_NMS_THRESH
    train_pre_nms_topk: int          #: RPN.TRAIN_PRE_NMS_TOPK
    train_post_nms_topk: int         #: RPN.TRAIN_POST_NMS_TOPK
    test_pre_nms_topk: int           #: RPN.TEST_PRE_NMS_TOPK
    test_post_nms_topk: int          #: RPN.TEST_POST_NMS_TOPK
    train_per_level_nms_topk: int    #: RPN.TRAIN_PER_LEVEL_NMS_TOPK
    test_per_level_nms_topk: int     #: RPN.TEST_PER_LEVEL_NMS_TOPK
    proposal_mode: str               #: FPN.PROPOSAL_MODE: "Level" (NMS per level) or "Joint"

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        r = cfg.RPN
        return cls(anchor_sizes=tuple(r.ANCHOR_SIZES), anchor_ratios=tuple(r.ANCHOR_RATIOS),
                   anchor_stride=r.ANCHOR_STRIDE, num_anchors=r.NUM_ANCHOR, head_dim=r.HEAD_DIM,
                   batch_per_im=r.BATCH_PER_IM, min_size=r.MIN_SIZE, nms_thresh=r.PROPOSAL_NMS_THRESH,
                   train_pre_nms_topk=r.TRAIN_PRE_NMS_TOPK, train_post_nms_topk=r.TRAIN_POST_NMS_TOPK,
                   test_pre_nms_topk=r.TEST_PRE_NMS_TOPK, test_post_nms_topk=r.TEST_POST_NMS_TOPK,
                   train_per_level_nms_topk=r.TRAIN_PER_LEVEL_NMS_TOPK,
                   test_per_level_nms_topk=r.TEST_PER_LEVEL_NMS_TOPK, proposal_mode=cfg.FPN.PROPOSAL_MODE)

    def nms_topk(self, training):
        """(pre-NMS top-k, post-NMS top-k) of one joint NMS, in training or at inference."""
        if training:
            return self.train_pre_nms_topk, self.train_post_nms_topk
        return self.test_pre_nms_topk, self.test_post_nms_topk

    def per_level_nms_topk(self, training):
        """The top-k of each FPN level's NMS, and of their union, with ``proposal_mode`` "Level"."""
        return self.train_per_level_nms_topk if training else self.test_per_level_nms_topk


@layer_register(log_shape=True)
@auto_reuse_variable_scope
def rpn_head(featuremap, channel, num_anchors):
    """One NCHW level -> objectness logits fH x fW x A and box deltas fH x fW x A x 4.

    Shared by all FPN levels (variables reused): ``rpn/conv0``, ``rpn/class``, ``rpn/box``.
    """
    with argscope(Conv2D, data_format="channels_first",
                  kernel_initializer=tf.random_normal_initializer(stddev=0.01)):
        hidden = Conv2D("conv0", featuremap, channel, 3, activation=tf.nn.relu)
        label_logits = Conv2D("class", hidden, num_anchors, 1)
        box_logits = Conv2D("box", hidden, 4 * num_anchors, 1)
    label_logits = tf.squeeze(tf.transpose(label_logits, [0, 2, 3, 1]), 0)
    shape = tf.shape(box_logits)
    box_logits = tf.reshape(tf.transpose(box_logits, [0, 2, 3, 1]),
                            tf.stack([shape[2], shape[3], num_anchors, 4]))
    return label_logits, box_logits


@under_name_scope()
@float32_island
def rpn_losses(anchor_labels, anchor_box_targets, label_logits, box_logits, batch_per_im):
    """Objectness (sigmoid CE over sampled anchors) and smooth-L1 box loss over positives.

    Both are normalised by ``batch_per_im`` (``RPN.BATCH_PER_IM``); a level with no valid (or no positive) anchor
    contributes exactly zero instead of NaN.
    """
    valid = tf.stop_gradient(tf.not_equal(anchor_labels, -1))
    positive = tf.stop_gradient(tf.equal(anchor_labels, 1))
    num_valid = tf.identity(tf.math.count_nonzero(valid, dtype=tf.int32), name="num_valid_anchor")
    num_pos = tf.identity(tf.math.count_nonzero(positive, dtype=tf.int32), name="num_pos_anchor")

    labels = tf.cast(tf.boolean_mask(anchor_labels, valid), tf.float32)
    logits = tf.boolean_mask(label_logits, valid)
    label_loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
    label_loss = tf.where(tf.equal(num_valid, 0), 0.0, label_loss / batch_per_im, name="label_loss")

    delta = 1.0 / 9
    box_loss = tfv1.losses.huber_loss(
        tf.boolean_mask(anchor_box_targets, positive), tf.boolean_mask(box_logits, positive),
        delta=delta, reduction=tfv1.losses.Reduction.SUM) / delta
    box_loss = tf.where(tf.equal(num_pos, 0), 0.0, box_loss / batch_per_im, name="box_loss")
    add_moving_summary(label_loss, box_loss, num_valid, num_pos)
    return label_loss, box_loss


@under_name_scope()
@float32_island
def generate_rpn_proposals(boxes, scores, image_shape2d, pre_nms_topk, post_nms_topk=None, *, min_size,
                           nms_thresh):
    """Top-k by score, clip, drop boxes not wider and taller than ``min_size`` (when it is > 0),
    NMS at IoU ``nms_thresh``, keep ``post_nms_topk``.

    Args:
        boxes: n x 4 decoded boxes; scores: n objectness logits.
    Returns:
        boxes k x 4 and their logits k, gradients stopped.
    """
    post_nms_topk = post_nms_topk or pre_nms_topk
    k = tf.minimum(pre_nms_topk, tf.size(scores))
    top_scores, top_idx = tf.nn.top_k(scores, k=k, sorted=False)
    top_boxes = clip_boxes(tf.gather(boxes, top_idx), image_shape2d)
    if min_size > 0:
        # as the example: with MIN_SIZE 0 no filter at all, so boxes clipped to zero width at an
        # image edge stay, go through NMS and may become background RoIs
        wh = top_boxes[:, 2:] - top_boxes[:, :2]
        keep = tf.reduce_all(wh > min_size, axis=1)
        top_boxes = tf.boolean_mask(top_boxes, keep)
        top_scores = tf.boolean_mask(top_scores, keep)
    yxyx = tf.gather(top_boxes, [1, 0, 3, 2], axis=1)  # NMS wants y1x1y2x2
    selected = tf.image.non_max_suppression(yxyx, top_scores, max_output_size=post_nms_topk,
                                            iou_threshold=nms_thresh)
    return (tf.stop_gradient(tf.gather(top_boxes, selected), name="boxes"),
            tf.stop_gradient(tf.gather(top_scores, selected), name="scores"))
