"""Fast R-CNN: RoI sampling for training, box heads, losses and per-class NMS at inference.

Config-free: :class:`FastRCNNParams` holds the ``FRCNN`` section and the box-related keys of
``FPN``, ``TEST`` and ``PREPROC``, read by :meth:`FastRCNNParams.from_config` from a config given
as an argument; the functions take the numbers they need.
"""
import functools
from typing import NamedTuple

from tensorpack.models import Conv2D, FullyConnected, layer_register
from tensorpack.tfutils import argscope
from tensorpack.tfutils.scope_utils import under_name_scope
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.architecture import BOX_HEAD_NAMES
from maskplus.compat import tf, tfv1
from maskplus.modeling.float32_island import float32_boundary, float32_island
from maskplus.modeling.layers import GroupNorm, msra_fan_out
from maskplus.modeling.model_box import decode_bbox_target, encode_bbox_target, pairwise_iou


class FastRCNNParams(NamedTuple):
    """The Fast R-CNN box head's parameters: sampling, head, box coding and inference thresholds."""
    fg_thresh: float          #: FRCNN.FG_THRESH, IoU from which a RoI is foreground
    batch_per_im: int         #: FRCNN.BATCH_PER_IM, RoIs sampled per image
    fg_ratio: float           #: FRCNN.FG_RATIO, the foreground share of them (at most)
    bbox_reg_weights: tuple   #: FRCNN.BBOX_REG_WEIGHTS, the box targets' scale
    max_size: int             #: PREPROC.MAX_SIZE, the bound of a decoded box's size
    head_func: str            #: FPN.FRCNN_HEAD_FUNC, a name of :data:`BOX_HEADS` (FPN models)
    fc_head_dim: int          #: FPN.FRCNN_FC_HEAD_DIM
    conv_head_dim: int        #: FPN.FRCNN_CONV_HEAD_DIM
    result_score_thresh: float  #: TEST.RESULT_SCORE_THRESH, the lowest score of a detection
    results_per_im: int       #: TEST.RESULTS_PER_IM, detections kept per image
    nms_thresh: float         #: TEST.FRCNN_NMS_THRESH, the per-class NMS's IoU

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        f = cfg.FRCNN
        return cls(fg_thresh=f.FG_THRESH, batch_per_im=f.BATCH_PER_IM, fg_ratio=f.FG_RATIO,
                   bbox_reg_weights=tuple(f.BBOX_REG_WEIGHTS), max_size=cfg.PREPROC.MAX_SIZE,
                   head_func=cfg.FPN.FRCNN_HEAD_FUNC, fc_head_dim=cfg.FPN.FRCNN_FC_HEAD_DIM,
                   conv_head_dim=cfg.FPN.FRCNN_CONV_HEAD_DIM, result_score_thresh=cfg.TEST.RESULT_SCORE_THRESH,
                   results_per_im=cfg.TEST.RESULTS_PER_IM, nms_thresh=cfg.TEST.FRCNN_NMS_THRESH)

    def box_head(self):
        """The FPN box head ``head_func``, a function (name, RoI features) -> hidden features."""
        return functools.partial(BOX_HEADS[self.head_func], fc_dim=self.fc_head_dim, conv_dim=self.conv_head_dim)


class BoxProposals:
    """RoIs, and in training their sampled labels (0 = background) and matched gt index."""

    def __init__(self, boxes, labels=None, fg_inds_wrt_gt=None):
        self.boxes = boxes
        self.labels = labels
        self.fg_inds_wrt_gt = fg_inds_wrt_gt
        if labels is not None:
            self.fg_inds = tf.reshape(tf.where(labels > 0), [-1], name="fg_inds")
            self.fg_boxes = tf.gather(boxes, self.fg_inds, name="fg_boxes")
            self.fg_labels = tf.gather(labels, self.fg_inds, name="fg_labels")


@under_name_scope()
@float32_island
def sample_fast_rcnn_targets(boxes, gt_boxes, gt_labels, fg_thresh, batch_per_im, fg_ratio):
    """Sample ``batch_per_im`` RoIs, at most ``fg_ratio`` of them foreground (IoU >= ``fg_thresh``),
    from proposals + gts.

    The gt boxes join the proposals, so every image has at least one foreground RoI.
    """
    iou = pairwise_iou(boxes, gt_boxes)
    _proposal_recall(iou)
    boxes = tf.concat([boxes, gt_boxes], axis=0)
    iou = tf.concat([iou, tf.eye(tf.shape(gt_boxes)[0])], axis=0)
    has_gt = tf.shape(iou)[1] > 0
    max_iou = tf.cond(has_gt, lambda: tf.reduce_max(iou, axis=1), lambda: tf.zeros([tf.shape(iou)[0]]))
    fg_mask = max_iou >= fg_thresh

    fg_inds = tf.reshape(tf.where(fg_mask), [-1])
    num_fg = tf.minimum(int(batch_per_im * fg_ratio), tf.size(fg_inds), name="num_fg")
    fg_inds = tf.random.shuffle(fg_inds)[:num_fg]
    bg_inds = tf.reshape(tf.where(tf.logical_not(fg_mask)), [-1])
    num_bg = tf.minimum(batch_per_im - num_fg, tf.size(bg_inds), name="num_bg")
    bg_inds = tf.random.shuffle(bg_inds)[:num_bg]
    add_moving_summary(num_fg, num_bg)

    best_gt = tf.cond(has_gt, lambda: tf.argmax(iou, axis=1),
                      lambda: tf.zeros([tf.shape(iou)[0]], tf.int64))
    fg_inds_wrt_gt = tf.gather(best_gt, fg_inds)
    sampled = tf.gather(boxes, tf.concat([fg_inds, bg_inds], axis=0))
    labels = tf.concat([tf.gather(gt_labels, fg_inds_wrt_gt), tf.zeros_like(bg_inds, tf.int64)], axis=0)
    return BoxProposals(tf.stop_gradient(sampled, name="sampled_proposal_boxes"),
                        tf.stop_gradient(labels, name="sampled_labels"),
                        tf.stop_gradient(fg_inds_wrt_gt))


@under_name_scope()
def _proposal_recall(iou):
    """Training summaries: how well the proposals cover the gt boxes."""
    best = tf.reduce_max(iou, axis=0)
    recalls = [tf.truediv(tf.math.count_nonzero(best >= th), tf.size(best, out_type=tf.int64),
                          name=f"recall_iou{th}") for th in (0.3, 0.5)]
    add_moving_summary(tf.reduce_mean(best, name="best_iou_per_gt"), *recalls)


@layer_register(log_shape=True)
def fastrcnn_outputs(feature, num_categories, class_agnostic_regression=False):
    """Class logits N x (K+1) and box deltas N x (K+1) x 4, or N x 1 x 4 if class-agnostic."""
    num_classes = num_categories + 1
    logits = FullyConnected("class", feature, num_classes,
                            kernel_initializer=tf.random_normal_initializer(stddev=0.01))
    num_box_classes = 1 if class_agnostic_regression else num_classes
    deltas = FullyConnected("box", feature, num_box_classes * 4,
                            kernel_initializer=tf.random_normal_initializer(stddev=0.001))
    return logits, tf.reshape(deltas, [-1, num_box_classes, 4], name="output_box")


@layer_register(log_shape=True)
def fastrcnn_2fc_head(feature, fc_dim, conv_dim=None):
    """Two ``fc_dim`` wide FCs (``conv_dim``: unused, the box heads' common signature)."""
    init = tfv1.variance_scaling_initializer()
    hidden = FullyConnected("fc6", feature, fc_dim, kernel_initializer=init, activation=tf.nn.relu)
    return FullyConnected("fc7", hidden, fc_dim, kernel_initializer=init, activation=tf.nn.relu)


@layer_register(log_shape=True)
def fastrcnn_Xconv1fc_head(feature, num_convs, fc_dim, conv_dim, norm=None):
    """``num_convs`` 3x3 convs ``conv_dim`` wide (each optionally followed by GroupNorm), then one
    ``fc_dim`` wide FC."""
    x = feature
    with argscope(Conv2D, data_format="channels_first", kernel_initializer=msra_fan_out()):
        for k in range(num_convs):
            x = Conv2D(f"conv{k}", x, conv_dim, 3, activation=tf.nn.relu)
            if norm == "GN":
                x = GroupNorm(f"gn{k}", x)
    return FullyConnected("fc", x, fc_dim,
                          kernel_initializer=tfv1.variance_scaling_initializer(), activation=tf.nn.relu)


def fastrcnn_4conv1fc_head(*args, **kwargs):
    return fastrcnn_Xconv1fc_head(*args, num_convs=4, **kwargs)


def fastrcnn_4conv1fc_gn_head(*args, **kwargs):
    return fastrcnn_Xconv1fc_head(*args, num_convs=4, norm="GN", **kwargs)


#: ``FPN.FRCNN_HEAD_FUNC`` -> the box head function of that name
BOX_HEADS = {name: globals()[name] for name in BOX_HEAD_NAMES}


@under_name_scope()
@float32_island
def fastrcnn_losses(labels, label_logits, fg_box_targets, fg_box_logits):
    """Softmax classification over all sampled RoIs; L1 box loss over foreground, per RoI."""
    label_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=label_logits), name="label_loss")
    fg_inds = tf.where(labels > 0)[:, 0]
    fg_labels = tf.gather(labels, fg_inds)
    num_fg = tf.size(fg_inds, out_type=tf.int64)
    if fg_box_logits.shape[1] == 1:  # class-agnostic regression (Cascade R-CNN)
        fg_box_logits = tf.reshape(fg_box_logits, [-1, 4])
    else:
        fg_box_logits = tf.gather_nd(fg_box_logits, tf.stack([tf.range(num_fg), fg_labels], axis=1))
    box_loss = tf.truediv(tf.reduce_sum(tf.abs(fg_box_targets - fg_box_logits)),
                          tf.cast(tf.shape(labels)[0], tf.float32), name="box_loss")

    with tf.name_scope("label_metrics"):
        prediction = tf.argmax(label_logits, axis=1)
        correct = tf.cast(tf.equal(prediction, labels), tf.float32)
        accuracy = tf.reduce_mean(correct, name="accuracy")
        no_fg = tf.equal(num_fg, 0)
        fg_accuracy = tf.where(no_fg, 0.0, tf.reduce_mean(tf.gather(correct, fg_inds)), name="fg_accuracy")
        fg_as_bg = tf.reduce_sum(tf.cast(tf.equal(tf.gather(prediction, fg_inds), 0), tf.float32))
        false_negative = tf.where(no_fg, 0.0, fg_as_bg / tf.cast(num_fg, tf.float32), name="false_negative")
    add_moving_summary(label_loss, box_loss, accuracy, fg_accuracy, false_negative,
                       tf.cast(num_fg, tf.float32, name="num_fg_label"))
    return [label_loss, box_loss]


class FastRCNNHead:
    """Decodes a box head's outputs; computes its losses in training."""

    def __init__(self, proposals, box_logits, label_logits, gt_boxes, bbox_regression_weights, max_size):
        """``max_size``: the bound of a decoded box's size (``PREPROC.MAX_SIZE``)."""
        self.proposals = proposals
        # decoding, scores and losses all read the logits: one float32 boundary for them all
        self.box_logits = float32_boundary(box_logits)
        self.label_logits = float32_boundary(label_logits)
        self.gt_boxes = gt_boxes
        self.weights = tf.constant(bbox_regression_weights, tf.float32)
        self.max_size = max_size

    def losses(self):
        p = self.proposals
        targets = encode_bbox_target(tf.gather(self.gt_boxes, p.fg_inds_wrt_gt), p.fg_boxes) * self.weights
        fg_box_logits = tf.gather(self.box_logits, p.fg_inds, name="fg_box_logits")
        return fastrcnn_losses(p.labels, self.label_logits, targets, fg_box_logits)

    def decoded_output_boxes(self):
        """N x (K+1) x 4 boxes, one per class."""
        num_classes = tf.shape(self.box_logits)[1]
        anchors = tf.tile(tf.expand_dims(self.proposals.boxes, 1), tf.stack([1, num_classes, 1]))
        return decode_bbox_target(self.box_logits / self.weights, anchors, self.max_size)

    def decoded_output_boxes_class_agnostic(self):
        """N x 4 boxes of a class-agnostic head (box logits N x 1 x 4)."""
        assert self.box_logits.shape[1] == 1, self.box_logits.shape
        deltas = tf.reshape(self.box_logits, [-1, 4]) / self.weights
        return decode_bbox_target(deltas, self.proposals.boxes, self.max_size)

    def output_scores(self, name=None):
        return tf.nn.softmax(self.label_logits, name=name)


@under_name_scope()
@float32_island
def fastrcnn_predictions(boxes, scores, score_thresh, results_per_im, nms_thresh):
    """Per-class score threshold (above ``score_thresh``) and NMS (at IoU ``nms_thresh``), keeping
    the best ``results_per_im``.

    Args:
        boxes: N x (K+1) x 4; scores: N x (K+1).
    Returns:
        boxes R x 4, scores R, labels R (1..K), named ``boxes``/``scores``/``labels``.
    """
    boxes = tf.transpose(boxes, [1, 0, 2])[1:]  # K x N x 4, background dropped
    scores = tf.transpose(scores[:, 1:], [1, 0])  # K x N
    keep = tf.where(scores > score_thresh)  # F x 2: (class-1, roi)
    kept_boxes = tf.gather_nd(boxes, keep)
    kept_scores = tf.gather_nd(scores, keep)
    cls = keep[:, 0]
    # one NMS for all classes: shift each class's boxes to its own far-away region
    offsets = tf.cast(cls, tf.float32)[:, None] * (tf.reduce_max(boxes) + 1.0)
    selected = tf.image.non_max_suppression(kept_boxes + offsets, kept_scores, results_per_im, nms_thresh)
    final_boxes = tf.gather(kept_boxes, selected, name="boxes")
    final_scores = tf.gather(kept_scores, selected, name="scores")
    final_labels = tf.add(tf.gather(cls, selected), 1, name="labels")
    return final_boxes, final_scores, final_labels
