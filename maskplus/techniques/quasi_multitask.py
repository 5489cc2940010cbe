"""Quasi-multitask learning -- MaskPlus section 3.4 (ablation: section 4.6, Table 4).

The paper: "We instead create another branch from the RoIAlign layer features. After several
convolutional layers and deconvolutional layers, the output mask will compute loss with 0.5x
size of the original configuration (14 * 14) and 2x size (56 * 56). Note that the output mask is
still the original branch, not the newly created one (whose purpose is only to help calculate
the quasi-multitask learning loss)."

Our interpretations, where the paper is vague:
* The branch starts from the mask RoIAlign features (14 x 14, before contextual fusion) and has
  a trunk of two 3x3 convolutions (``MRCNN.HEAD_DIM`` filters, ReLU) shared by the scales.
* ``0.5x``: a 1x1 class-wise predictor on the trunk, 14 x 14 logits.
  ``2x``: two 2x2 stride-2 deconvolutions (ReLU) to 56 x 56, then a 1x1 class-wise predictor.
  On a C4 model (14 x 14 masks) the branch starts from the mask head's 7 x 7 res5 input, so the
  two scales are 7 x 7 and 28 x 28, again half and twice the mask.
* Each scale's loss is Mask R-CNN's per-pixel sigmoid cross-entropy on the RoI's own class,
  against the gt mask cropped to the RoI at that size, times
  ``MASKPLUS.QUASI_MULTITASK_WEIGHT`` (default 1), added to the total loss.
* Training only: the inference graph neither builds the branch nor holds its variables.

Variables: ``quasi_multitask/{fcn0,fcn1,half/conv,double/deconv0,double/deconv1,double/conv}``.
"""
from tensorpack.models import Conv2D, Conv2DTranspose
from tensorpack.tfutils import argscope
from tensorpack.tfutils.summary import add_moving_summary

from config import config as cfg
from maskplus.compat import tf, tfv1
from maskplus.modeling.model_mrcnn import mask_targets, select_class

SCOPE = "quasi_multitask"
SCALES = {"0.5x": 14, "2x": 56}


def _predict(trunk, scale, num_category):
    x = trunk
    if scale == "2x":
        with tfv1.variable_scope("double"):
            x = Conv2DTranspose("deconv0", x, cfg.MRCNN.HEAD_DIM, 2, strides=2, activation=tf.nn.relu)
            x = Conv2DTranspose("deconv1", x, cfg.MRCNN.HEAD_DIM, 2, strides=2, activation=tf.nn.relu)
            return Conv2D("conv", x, num_category, 1, kernel_initializer=tf.random_normal_initializer(stddev=0.001))
    with tfv1.variable_scope("half"):
        return Conv2D("conv", x, num_category, 1, kernel_initializer=tf.random_normal_initializer(stddev=0.001))


def quasi_multitask_logits(roi_features, num_category, scales):
    """{scale: N x K x size x size logits} for each requested scale."""
    with tfv1.variable_scope(SCOPE), \
            argscope([Conv2D, Conv2DTranspose], data_format="channels_first",
                     kernel_initializer=tfv1.variance_scaling_initializer(
                         scale=2.0, mode="fan_out", distribution="untruncated_normal")):
        trunk = roi_features
        for k in range(2):
            trunk = Conv2D(f"fcn{k}", trunk, cfg.MRCNN.HEAD_DIM, 3, activation=tf.nn.relu)
        return {scale: _predict(trunk, scale, num_category) for scale in scales}


def quasi_multitask_losses(roi_features, targets, fg_boxes, num_category, scales):
    """One weighted sigmoid cross-entropy loss per scale, against gt masks at that scale."""
    losses = []
    for scale, logits in quasi_multitask_logits(roi_features, num_category, scales).items():
        size = logits.shape.as_list()[-1]  # SCALES[scale] on FPN; half of that on C4 (7 x 7 input)
        with tf.name_scope(f"quasi_multitask_loss_{size}"):
            truth = mask_targets(targets.gt_masks, fg_boxes, targets.fg_inds_wrt_gt, size)
            truth = tf.identity(truth, name=f"mask_targets_{size}")
            ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=truth, logits=select_class(logits, targets.fg_labels))
            loss = tf.multiply(tf.reduce_mean(ce), cfg.MASKPLUS.QUASI_MULTITASK_WEIGHT,
                               name=f"quasi_multitask_loss_{size}")
        add_moving_summary(loss)
        losses.append(loss)
    return losses
