"""Quasi-multitask learning -- MaskPlus section 3.4 (ablation: section 4.6, Table 4).

The paper: "We instead create another branch from the RoIAlign layer features. After several
convolutional layers and deconvolutional layers, the output mask will compute loss with 0.5x
size of the original configuration (14 * 14) and 2x size (56 * 56). Note that the output mask is
still the original branch, not the newly created one (whose purpose is only to help calculate
the quasi-multitask learning loss)."

Our interpretations, where the paper is vague:
* The branch starts from the mask RoIAlign features (14 x 14, before contextual fusion) and has
  a trunk of two 3x3 convolutions (``head_dim`` filters, the mask head's ``MRCNN.HEAD_DIM``,
  ReLU) shared by the scales.
* ``0.5x``: a 1x1 class-wise predictor on the trunk, 14 x 14 logits.
  ``2x``: two 2x2 stride-2 deconvolutions (``head_dim`` filters, ReLU) to 56 x 56, then a 1x1
  class-wise predictor.
  On a C4 model (14 x 14 masks) the branch starts from the mask head's 7 x 7 res5 input, so the
  two scales are 7 x 7 and 28 x 28, again half and twice the mask.
* Each scale's loss is Mask R-CNN's per-pixel sigmoid cross-entropy on the RoI's own class,
  against the gt mask cropped to the RoI at that size, times ``weight``
  (``MASKPLUS.QUASI_MULTITASK_WEIGHT``, default 1), added to the total loss.
* Training only: the inference graph neither builds the branch nor holds its variables.

Variables: ``quasi_multitask/{fcn0,fcn1,half/conv,double/deconv0,double/deconv1,double/conv}``.
"""
from tensorpack.models import Conv2D, Conv2DTranspose
from tensorpack.tfutils import argscope
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.compat import tf, tfv1
from maskplus.modeling.layers import msra_fan_out
from maskplus.modeling.mask_ops import class_wise_predictor, mask_targets, own_class_loss
from maskplus.techniques.registry import register

SCOPE = "quasi_multitask"


def _predict(trunk, scale, num_categories, head_dim):
    x = trunk
    if scale == "2x":
        with tfv1.variable_scope("double"):
            x = Conv2DTranspose("deconv0", x, head_dim, 2, strides=2, activation=tf.nn.relu)
            x = Conv2DTranspose("deconv1", x, head_dim, 2, strides=2, activation=tf.nn.relu)
            return class_wise_predictor("conv", x, num_categories)
    with tfv1.variable_scope("half"):
        return class_wise_predictor("conv", x, num_categories)


def quasi_multitask_logits(roi_features, num_categories, scales, head_dim):
    """{scale: N x K x size x size logits} for each requested scale ("0.5x", "2x")."""
    bad = [s for s in scales if s not in ("0.5x", "2x")]
    if bad:
        raise ValueError(f"Quasi-multitask scales are '0.5x' and '2x', got {bad}.")
    with tfv1.variable_scope(SCOPE), \
            argscope([Conv2D, Conv2DTranspose], data_format="channels_first", kernel_initializer=msra_fan_out()):
        trunk = roi_features
        for k in range(2):
            trunk = Conv2D(f"fcn{k}", trunk, head_dim, 3, activation=tf.nn.relu)
        return {scale: _predict(trunk, scale, num_categories, head_dim) for scale in scales}


def quasi_multitask_losses(roi_features, targets, fg_boxes, num_categories, scales, head_dim, weight):
    """One weighted sigmoid cross-entropy loss per scale, against gt masks at that scale.

    Args:
        roi_features: the mask head's RoI features of the foreground RoIs, N x C x s x s.
        targets: :class:`~maskplus.modeling.mask_ops.MaskTargets` of those RoIs.
        fg_boxes: their boxes, N x 4 (to crop the gt masks).
        num_categories: K, one mask per category.
        scales: a subset of ("0.5x", "2x").
        head_dim: width of the branch's convolutions and deconvolutions.
        weight: each scale's loss is multiplied by it.
    """
    losses = []
    for scale, logits in quasi_multitask_logits(roi_features, num_categories, scales, head_dim).items():
        size = logits.shape.as_list()[-1]  # 14 or 56 on FPN; half of that on C4 (7 x 7 input)
        with tf.name_scope(f"quasi_multitask_loss_{size}"):
            truth = mask_targets(targets.gt_masks, fg_boxes, targets.fg_inds_wrt_gt, size)
            truth = tf.identity(truth, name=f"mask_targets_{size}")
            ce, _ = own_class_loss(logits, targets.fg_labels, truth)
            loss = tf.multiply(ce, weight, name=f"quasi_multitask_loss_{size}")
        add_moving_summary(loss)
        losses.append(loss)
    return losses


@register
class QuasiMultitask:
    """Hook ``extra_losses``: the half- and double-size mask losses of a training-only branch."""
    name = "quasi_multitask"
    order = 3.4  # paper section
    enable = {"MASKPLUS.QUASI_MULTITASK": ["0.5x"]}  # switches it on
    keys = {"MASKPLUS.QUASI_MULTITASK": [], "MASKPLUS.QUASI_MULTITASK_WEIGHT": 1.0}
    variables = [(rf"^{SCOPE}/", "quasi-multitask learning (paper 3.4), a training-only branch",
                  "MASKPLUS.QUASI_MULTITASK=[...]", "MRCNN.HEAD_DIM", True)]

    def __init__(self, scales, head_dim, weight):
        self.scales, self.head_dim, self.weight = list(scales), head_dim, weight

    @classmethod
    def from_config(cls, cfg):
        mp = cfg.MASKPLUS
        return cls(mp.QUASI_MULTITASK, cfg.MRCNN.HEAD_DIM, mp.QUASI_MULTITASK_WEIGHT) if mp.QUASI_MULTITASK else None

    def extra_losses(self, inputs):
        # from the RoIAlign features, before any roi_features hook (contextual fusion)
        return quasi_multitask_losses(inputs.roi_features, inputs.targets, inputs.boxes, inputs.num_categories,
                                      self.scales, self.head_dim, self.weight)
