"""Cascade R-CNN box head (Cai & Vasconcelos, 2018) for FPN models, with the Tensorpack example's rules.

Three box stages, each with its own head (``cascade_rcnn_stage{k}/head/...``, the
``FPN.FRCNN_HEAD_FUNC`` head) and outputs (``cascade_rcnn_stage{k}/outputs/{class,box}``) whose box
regression is class-agnostic (one box per RoI):

* stage 1 runs on the RoIs sampled from the proposals (at ``FRCNN.FG_THRESH`` = ``CASCADE.IOUS[0]``;
  the gt boxes are among them);
* stage k+1 runs on the boxes stage k decoded from its inputs (clipped to the image, gradient
  stopped). In training they are matched to the ground truth again, at ``CASCADE.IOUS[k]``: a box
  whose best IoU reaches the threshold is foreground with that gt's label. Nothing is re-sampled and
  no gt box is added again (the refined gt boxes of stage 1 are already there). Boxes left with zero
  area after clipping are dropped in training;
* every stage's RoI features pass their gradient scaled by 1/3 back to the shared features;
* stage k's box targets are encoded with ``CASCADE.BBOX_REG_WEIGHTS[k]``; the losses are the
  Fast R-CNN classification and box losses of each of the three stages;
* at inference the class scores are the mean of the three stages' softmax scores and the boxes are
  the last stage's, the same box for every class.

Config-free: :class:`CascadeParams` holds the ``CASCADE`` section, read by
:meth:`CascadeParams.from_config` from a config given as an argument.
"""
from typing import NamedTuple

from maskplus.compat import tf, tfv1
from maskplus.modeling.model_box import area, clip_boxes, pairwise_iou
from maskplus.modeling.model_frcnn import BoxProposals, FastRCNNHead, fastrcnn_outputs


class CascadeParams(NamedTuple):
    """The cascade's stages: one IoU threshold and one set of box regression weights each."""
    ious: tuple              #: CASCADE.IOUS
    bbox_reg_weights: tuple  #: CASCADE.BBOX_REG_WEIGHTS, one [wx, wy, ww, wh] per stage

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        return cls(ious=tuple(cfg.CASCADE.IOUS), bbox_reg_weights=tuple(tuple(w) for w in cfg.CASCADE.BBOX_REG_WEIGHTS))


def gradient_scaler(factor):
    """x -> x, whose gradient is multiplied by ``factor``."""
    @tf.custom_gradient
    def scale(x):
        return tf.identity(x), lambda dy: dy * factor
    return scale


def match_boxes_to_gt(boxes, gt_boxes, gt_labels, iou_threshold):
    """Training labels of refined boxes: foreground (best gt's label) where IoU >= ``iou_threshold``."""
    with tf.name_scope(f"match_box_with_gt_{iou_threshold}"):
        iou = pairwise_iou(boxes, gt_boxes)
        has_gt = tf.shape(iou)[1] > 0
        max_iou = tf.cond(has_gt, lambda: tf.reduce_max(iou, axis=1), lambda: tf.zeros([tf.shape(iou)[0]]))
        best_gt = tf.cond(has_gt, lambda: tf.argmax(iou, axis=1),
                          lambda: tf.zeros([tf.shape(iou)[0]], tf.int64))
        fg = max_iou >= iou_threshold
        labels = tf.where(fg, tf.gather(gt_labels, best_gt), tf.zeros_like(best_gt))
        return BoxProposals(boxes, tf.stop_gradient(labels), tf.stop_gradient(tf.boolean_mask(best_gt, fg)))


class CascadeRCNNHead:
    """The three stages; the same interface as :class:`FastRCNNHead` (losses, boxes, scores)."""

    def __init__(self, proposals, roi_func, gt_boxes, gt_labels, image_shape2d, num_categories, training,
                 cascade, head_func, max_size):
        """
        Args:
            proposals: :class:`BoxProposals`, sampled (with labels) in training.
            roi_func: boxes N x 4 -> RoI features N x C x 7 x 7.
            gt_boxes, gt_labels: the ground truth (training; may be None at inference).
            cascade: the stages' :class:`CascadeParams`.
            head_func: the box head of every stage, (name, RoI features) -> hidden features.
            max_size: the bound of a decoded box's size (``PREPROC.MAX_SIZE``).
        """
        self.num_stages = len(cascade.ious)
        self.num_categories = num_categories
        self.gt_boxes, self.gt_labels = gt_boxes, gt_labels
        self.image_shape2d = image_shape2d
        self.training = training
        scale = gradient_scaler(1.0 / self.num_stages) if training else tf.identity
        self.heads, self.stage_boxes = [], []
        stage_proposals = proposals
        for k in range(self.num_stages):
            with tfv1.variable_scope(f"cascade_rcnn_stage{k + 1}"):
                if k > 0:
                    stage_proposals = (match_boxes_to_gt(self.stage_boxes[-1], gt_boxes, gt_labels, cascade.ious[k])
                                       if training else BoxProposals(self.stage_boxes[-1]))
                hidden = head_func("head", scale(roi_func(stage_proposals.boxes)))
                label_logits, box_logits = fastrcnn_outputs("outputs", hidden, num_categories,
                                                            class_agnostic_regression=True)
                head = FastRCNNHead(stage_proposals, box_logits, label_logits, gt_boxes,
                                    cascade.bbox_reg_weights[k], max_size)
                self.heads.append(head)
                self.stage_boxes.append(self._refined_boxes(head))

    def _refined_boxes(self, head):
        boxes = clip_boxes(head.decoded_output_boxes_class_agnostic(), self.image_shape2d)
        if self.training:
            boxes = tf.boolean_mask(boxes, area(boxes) > 0)
        return tf.stop_gradient(boxes, name="output_boxes")

    def losses(self):
        losses = []
        for k, head in enumerate(self.heads):
            with tf.name_scope(f"cascade_loss_stage{k + 1}"):
                losses.extend(head.losses())
        return losses

    def decoded_output_boxes(self):
        """N x (K+1) x 4: the last stage's box, repeated for every class."""
        return tf.tile(tf.expand_dims(self.stage_boxes[-1], 1), [1, self.num_categories + 1, 1])

    def output_scores(self, name=None):
        """N x (K+1): the mean of the stages' softmax scores."""
        scores = [head.output_scores(f"cascade_scores_stage{k + 1}") for k, head in enumerate(self.heads)]
        return tf.multiply(tf.add_n(scores), 1.0 / self.num_stages, name=name)
