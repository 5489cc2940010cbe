"""Feature pyramid (P2-P6), level assignment of RoIs, multi-level RoIAlign, RPN over levels.

Config-free: :class:`FPNParams` holds the pyramid's part of the ``FPN`` section, read by
:meth:`FPNParams.from_config` from a config given as an argument.
"""
from typing import NamedTuple

import numpy as np
from tensorpack.models import Conv2D, MaxPooling, layer_register
from tensorpack.tfutils import argscope
from tensorpack.tfutils.scope_utils import under_name_scope
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.compat import tf, tfv1
from maskplus.modeling.float32_island import float32_island
from maskplus.modeling.layers import GroupNorm
from maskplus.modeling.model_box import area, roi_align
from maskplus.modeling.model_rpn import generate_rpn_proposals, rpn_losses


class FPNParams(NamedTuple):
    """The feature pyramid's parameters (part of the ``FPN`` section)."""
    num_channel: int      #: FPN.NUM_CHANNEL, the width of every level (and of the RPN's hidden layer)
    norm: str             #: FPN.NORM: "GN" or "None"
    anchor_strides: tuple  #: FPN.ANCHOR_STRIDES, the strides of P2-P6

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        return cls(num_channel=cfg.FPN.NUM_CHANNEL, norm=cfg.FPN.NORM, anchor_strides=tuple(cfg.FPN.ANCHOR_STRIDES))


def _upsample2x(name, x):
    """Nearest-neighbour 2x up-sampling of an NCHW map."""
    with tf.name_scope(name):
        size = tf.shape(x)[2:] * 2
        nhwc = tf.image.resize(tf.transpose(x, [0, 2, 3, 1]), size, method="nearest")
        return tf.transpose(nhwc, [0, 3, 1, 2])


@layer_register(log_shape=True)
def fpn_model(features, channels, norm):
    """(C2, C3, C4, C5) -> [P2, P3, P4, P5, P6], each ``channels`` wide; GroupNorm after every
    conv if ``norm`` is "GN"."""
    assert len(features) == 4, features
    use_gn = norm == "GN"
    with argscope(Conv2D, data_format="channels_first", activation=tf.identity, use_bias=True,
                  kernel_initializer=tfv1.variance_scaling_initializer(scale=1.0)):
        laterals = [Conv2D(f"lateral_1x1_c{i + 2}", c, channels, 1) for i, c in enumerate(features)]
        if use_gn:
            laterals = [GroupNorm(f"gn_c{i + 2}", c) for i, c in enumerate(laterals)]
        # top-down: P5 first, each finer level adds the up-sampled coarser sum
        merged = [laterals[-1]]
        for level in (4, 3, 2):
            merged.append(laterals[level - 2] + _upsample2x(f"upsample_lat{level + 1}", merged[-1]))
        merged = merged[::-1]  # P2..P5 order
        outputs = [Conv2D(f"posthoc_3x3_p{i + 2}", m, channels, 3) for i, m in enumerate(merged)]
        if use_gn:
            outputs = [GroupNorm(f"gn_p{i + 2}", p) for i, p in enumerate(outputs)]
        p6 = MaxPooling("maxpool_p6", outputs[-1], pool_size=1, strides=2,
                        data_format="channels_first", padding="VALID")
    return outputs + [p6]


@under_name_scope()
@float32_island
def fpn_map_rois_to_levels(boxes):
    """Assign each box to P2-P5 by its scale (FPN paper eq. 1, canonical 224 at P4).

    Returns per-level index vectors and the boxes gathered at each level (possibly empty).
    """
    sqrt_area = tf.sqrt(area(boxes))
    level = tf.cast(tf.floor(4 + tf.math.log(sqrt_area * (1.0 / 224) + 1e-6) * (1.0 / np.log(2))), tf.int32)
    level_ids = [tf.where(level <= 2), tf.where(tf.equal(level, 3)),
                 tf.where(tf.equal(level, 4)), tf.where(level >= 5)]
    level_ids = [tf.reshape(ids, [-1], name=f"roi_level{i + 2}_id") for i, ids in enumerate(level_ids)]
    add_moving_summary(*[tf.size(ids, name=f"num_roi_level{i + 2}") for i, ids in enumerate(level_ids)])
    return level_ids, [tf.gather(boxes, ids) for ids in level_ids]


@under_name_scope()
def multilevel_roi_align(features, boxes, resolution, strides):
    """RoIAlign each box on its FPN level (P2-P5, of ``strides``); N x C x res x res in the input order."""
    assert len(features) == 4, features
    level_ids, level_boxes = fpn_map_rois_to_levels(boxes)
    crops = []
    for i, (lvl_boxes, fmap) in enumerate(zip(level_boxes, features)):
        with tf.name_scope(f"roi_level{i + 2}"):
            crops.append(roi_align(fmap, lvl_boxes * (1.0 / strides[i]), resolution))
    crops = tf.concat(crops, axis=0)
    return tf.gather(crops, tf.math.invert_permutation(tf.concat(level_ids, axis=0)))


def multilevel_rpn_losses(anchor_labels, anchor_box_targets, label_logits, box_logits, batch_per_im):
    """Sum of the per-level RPN losses (lists indexed by level), each normalised by ``batch_per_im``."""
    with tf.name_scope("rpn_losses"):
        per_level = [rpn_losses(*args, batch_per_im, name_scope=f"level{i + 2}") for i, args in
                     enumerate(zip(anchor_labels, anchor_box_targets, label_logits, box_logits))]
        label_loss = tf.add_n([l for l, _ in per_level], name="label_loss")
        box_loss = tf.add_n([b for _, b in per_level], name="box_loss")
        add_moving_summary(label_loss, box_loss)
    return [label_loss, box_loss]


@under_name_scope()
@float32_island
def generate_fpn_proposals(multilevel_boxes, multilevel_logits, image_shape2d, training, rpn):
    """Proposals from all levels: NMS per level then a global top-k ("Level"), or one joint NMS,
    as :class:`~maskplus.modeling.model_rpn.RPNParams` ``rpn`` says."""
    nms = dict(min_size=rpn.min_size, nms_thresh=rpn.nms_thresh)
    if rpn.proposal_mode == "Level":
        topk = rpn.per_level_nms_topk(training)
        boxes, scores = [], []
        for i, (b, s) in enumerate(zip(multilevel_boxes, multilevel_logits)):
            with tf.name_scope(f"Lvl{i + 2}"):
                lb, ls = generate_rpn_proposals(tf.reshape(b, [-1, 4]), tf.reshape(s, [-1]), image_shape2d, topk,
                                                **nms)
                boxes.append(lb)
                scores.append(ls)
        boxes = tf.concat(boxes, axis=0)
        scores = tf.concat(scores, axis=0)
        k = tf.minimum(tf.size(scores), topk)
        scores, idx = tf.nn.top_k(scores, k=k, sorted=False)
        boxes = tf.gather(boxes, idx)
    else:
        boxes = tf.concat([tf.reshape(b, [-1, 4]) for b in multilevel_boxes], axis=0)
        scores = tf.concat([tf.reshape(s, [-1]) for s in multilevel_logits], axis=0)
        boxes, scores = generate_rpn_proposals(boxes, scores, image_shape2d, *rpn.nms_topk(training), **nms)
    return tf.stop_gradient(boxes, name="boxes"), tf.stop_gradient(scores, name="scores")
