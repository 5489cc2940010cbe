"""Mask operations shared by the baseline mask head and the MaskPlus techniques.

Config-free (everything arrives as an argument) and below both: the techniques
(``maskplus/techniques``) and the mask-branch builder (``model_mrcnn``) import from here, never the
other way round.
"""
from tensorpack.models import Conv2D

from maskplus.compat import tf
from maskplus.modeling.float32_island import float32_island
from maskplus.modeling.model_box import crop_and_resize


class MaskTargets:
    """What the mask branch needs in training: the foreground RoIs' labels and matched gt masks."""

    def __init__(self, fg_labels, gt_masks, fg_inds_wrt_gt):
        self.fg_labels = fg_labels
        self.gt_masks = gt_masks
        self.fg_inds_wrt_gt = fg_inds_wrt_gt


def unpackbits_masks(packed):
    """uint8 N x H x ceil(W/8) (``np.packbits`` along the last axis) -> bool N x H x 8*ceil(W/8)."""
    bits = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.uint8)
    unpacked = tf.bitwise.bitwise_and(tf.expand_dims(packed, -1), bits) > 0
    return tf.reshape(unpacked, tf.concat([tf.shape(packed)[:-1], [8 * tf.shape(packed)[-1]]], axis=0))


def select_class(mask_logits, labels):
    """N x K x h x w logits, labels in 1..K -> N x h x w logits of each RoI's class."""
    return tf.squeeze(tf.gather(mask_logits, tf.reshape(tf.cast(labels, tf.int64) - 1, [-1, 1]), batch_dims=1), 1)


def mask_targets(gt_masks, fg_boxes, fg_inds_wrt_gt, size):
    """Ground-truth masks (M x H x W) cropped to each foreground RoI at ``size`` x ``size``, in [0, 1]."""
    crops = crop_and_resize(tf.expand_dims(tf.cast(gt_masks, tf.float32), 1), fg_boxes,
                            fg_inds_wrt_gt, size, pad_border=False)
    return tf.squeeze(crops, 1)


@float32_island
def own_class_loss(mask_logits, labels, target_masks):
    """Mask R-CNN's L_mask: the mean per-pixel sigmoid cross-entropy of each RoI's own class channel.

    ``mask_logits`` N x K x s x s, ``labels`` N in 1..K, ``target_masks`` N x s x s in [0, 1].
    Returns the loss and the own-class logits N x s x s it was computed from (for metrics).
    """
    own_logits = select_class(mask_logits, labels)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target_masks, logits=own_logits)
    return tf.reduce_mean(ce), own_logits


def class_wise_predictor(name, x, num_categories):
    """The 1x1 convolution to one mask logit map per category (NCHW), linear, weights ~ N(0, 0.001^2)."""
    return Conv2D(name, x, num_categories, 1, data_format="channels_first", activation=None,
                  kernel_initializer=tf.random_normal_initializer(stddev=0.001))
