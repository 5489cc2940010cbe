"""The mask branch: baseline heads, the mask loss, the single builder that applies the built MaskPlus
techniques (:mod:`maskplus.techniques.registry`, handed in as an argument) at its hooks, and the
padding of its batch at inference and in training.

Without techniques, :func:`build_mask_branch` builds exactly Tensorpack's Mask R-CNN mask branch
(same ops, same variables).

Config-free: :class:`MaskHeadParams` holds the ``MRCNN`` section and the mask keys of ``FPN``
and ``TEST``, read by :meth:`MaskHeadParams.from_config` from a config given as an argument.
"""
import collections
import functools
from typing import NamedTuple

from tensorpack.models import Conv2D, Conv2DTranspose, layer_register
from tensorpack.tfutils import argscope
from tensorpack.tfutils.scope_utils import under_name_scope
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.architecture import MASK_HEAD_NAMES
from maskplus.compat import tf
from maskplus.modeling.float32_island import float32_island
from maskplus.modeling.layers import GroupNorm, msra_fan_out
from maskplus.modeling.mask_ops import MaskTargets, class_wise_predictor, mask_targets, own_class_loss
from maskplus.modeling.model_fpn import multilevel_roi_align


class MaskHeadParams(NamedTuple):
    """The mask head's parameters."""
    head_func: str        #: FPN.MRCNN_HEAD_FUNC, a name of :data:`MASK_HEADS` (FPN models)
    head_dim: int         #: MRCNN.HEAD_DIM, the width of the head's convs and deconvolution
    train_max_fg: int     #: MRCNN.TRAIN_MAX_FG_PER_IM, foreground RoIs trained per image (0: all)
    batch_multiple: int   #: TEST.MASK_BATCH_MULTIPLE, the inference batch is padded to its multiple

    @classmethod
    def from_config(cls, cfg):
        """The parameters a finalized ``cfg`` gives."""
        return cls(head_func=cfg.FPN.MRCNN_HEAD_FUNC, head_dim=cfg.MRCNN.HEAD_DIM,
                   train_max_fg=cfg.MRCNN.TRAIN_MAX_FG_PER_IM, batch_multiple=cfg.TEST.MASK_BATCH_MULTIPLE)

    def fpn_head(self):
        """The FPN mask head ``head_func``, ``head_dim`` wide: a function of the head's layer arguments."""
        return functools.partial(MASK_HEADS[self.head_func], head_dim=self.head_dim)

    def c4_head(self):
        """The C4 mask head (:func:`maskrcnn_c4_head`), ``head_dim`` wide."""
        return functools.partial(maskrcnn_c4_head, head_dim=self.head_dim)


@layer_register(log_shape=True)
def maskrcnn_upXconv_head(feature, num_categories, num_convs, head_dim, norm=None, before_upsample=None):
    """RoI features N x C x 14 x 14 -> mask logits N x K x 28 x 28.

    ``num_convs`` 3x3 convs (``fcn{k}``, optionally GroupNorm ``gn{k}``), a 2x2 stride-2
    deconvolution (``deconv``), all ``head_dim`` wide, and a 1x1 class-wise predictor (``conv``).
    ``before_upsample``, when given, maps the conv features to features of the same shape just
    before the deconvolution (the deconvolutional pyramid module's place, paper 3.2).
    """
    x = feature
    with argscope([Conv2D, Conv2DTranspose], data_format="channels_first", kernel_initializer=msra_fan_out()):
        for k in range(num_convs):
            x = Conv2D(f"fcn{k}", x, head_dim, 3, activation=tf.nn.relu)
            if norm == "GN":
                x = GroupNorm(f"gn{k}", x)
        if before_upsample is not None:
            x = before_upsample(x)
        x = Conv2DTranspose("deconv", x, head_dim, 2, strides=2, activation=tf.nn.relu)
        return class_wise_predictor("conv", x, num_categories)


def maskrcnn_up4conv_head(*args, **kwargs):
    return maskrcnn_upXconv_head(*args, num_convs=4, **kwargs)


def maskrcnn_up4conv_gn_head(*args, **kwargs):
    return maskrcnn_upXconv_head(*args, num_convs=4, norm="GN", **kwargs)


def maskrcnn_c4_head(*args, **kwargs):
    """The C4 mask head: no conv, the deconvolution straight on res5's N x 2048 x 7 x 7 (14x14 masks)."""
    return maskrcnn_upXconv_head(*args, num_convs=0, **kwargs)


#: ``FPN.MRCNN_HEAD_FUNC`` -> the mask head function of that name
MASK_HEADS = {name: globals()[name] for name in MASK_HEAD_NAMES}


@under_name_scope()
@float32_island
def maskrcnn_loss(mask_logits, fg_labels, fg_target_masks):
    """Per-pixel sigmoid cross-entropy on each RoI's own class channel (Mask R-CNN's L_mask)."""
    loss, logits = own_class_loss(mask_logits, fg_labels, fg_target_masks)
    # named after the island's boundary, which took the Mean's place: summaries and stats go by this name
    loss = tf.identity(loss, name="maskrcnn_loss")
    pred = tf.sigmoid(logits) > 0.5
    truth = fg_target_masks > 0.5
    accuracy = tf.reduce_mean(tf.cast(tf.equal(pred, truth), tf.float32), name="accuracy")
    pos_accuracy = tf.reduce_mean(tf.cast(tf.logical_and(pred, truth), tf.float32), name="pos_accuracy")
    fg_pixel_ratio = tf.reduce_mean(tf.cast(truth, tf.float32), name="fg_pixel_ratio")
    add_moving_summary(loss, accuracy, pos_accuracy, fg_pixel_ratio)
    return loss


def fpn_mask_roi_features(features, strides):
    """boxes -> their 14 x 14 RoIAlign features on P2-P5 of ``strides`` (the FPN mask head's input)."""
    return lambda boxes: multilevel_roi_align(features[:4], boxes, 14, strides, name_scope="multilevel_roi_align_mask")


#: What the ``roi_features`` and ``extra_losses`` hooks of a technique see: the mask head's RoI
#: features (before any technique), the backbone's maps, the real image's [h, w], K, and in training
#: the :class:`MaskTargets` and boxes of the RoIs (``None`` at inference).
MaskBranchInputs = collections.namedtuple("MaskBranchInputs",
                                          "roi_features features image_shape2d num_categories targets boxes")


def _apply(techniques, hook, x, *args):
    for technique in techniques:
        fill = getattr(technique, hook, None)
        if fill is not None:
            x = fill(x, *args)
    return x


def build_mask_branch(roi_features, features, image_shape2d, num_categories, head_func, targets=None, boxes=None,
                      techniques=()):
    """The mask head with the built MaskPlus ``techniques`` (:mod:`maskplus.techniques.registry`)
    filling its hooks, in this order: ``roi_features`` (the head's input), ``before_upsample`` (inside
    the head), ``logits``, then in training ``mask_loss`` and ``extra_losses``. Within a hook, the
    techniques' order. Without techniques, exactly Tensorpack's mask branch.

    Args:
        roi_features: the mask head's input features of the R boxes, R x C x s x s.
        features: the backbone's NCHW maps ([P2, ..., P6]; [C4] on a C4 model).
        image_shape2d: [h, w] of the real (unpadded) image, for the full-image RoI of 3.1.
        num_categories: K, one mask per category.
        head_func: the baseline mask head (:data:`MASK_HEADS` or :func:`maskrcnn_c4_head`).
        targets: training: the :class:`MaskTargets` of the boxes; ``None`` at inference.
        boxes: training: the R boxes (to crop the gt masks).
        techniques: built techniques, in the order to apply them.
    Returns:
        mask logits R x K x 2s x 2s, and the list of mask losses (empty at inference).
    """
    inputs = MaskBranchInputs(roi_features, features, image_shape2d, num_categories, targets, boxes)
    head_input = _apply(techniques, "roi_features", roi_features, inputs)
    before_upsample = None
    if any(getattr(t, "before_upsample", None) for t in techniques):
        before_upsample = lambda x: _apply(techniques, "before_upsample", x)  # noqa: E731
    mask_logits = head_func("maskrcnn", head_input, num_categories, before_upsample=before_upsample)
    mask_logits = _apply(techniques, "logits", mask_logits)
    if targets is None:
        return mask_logits, []

    size = mask_logits.shape.as_list()[-1]  # 28 (FPN) or 14 (C4)
    target = tf.identity(mask_targets(targets.gt_masks, boxes, targets.fg_inds_wrt_gt, size),
                         name="sampled_fg_mask_targets")
    mask_loss = _apply(techniques, "mask_loss", maskrcnn_loss(mask_logits, targets.fg_labels, target))
    losses = [mask_loss]
    for technique in techniques:
        if getattr(technique, "extra_losses", None) is not None:
            losses.extend(technique.extra_losses(inputs))
    return mask_logits, losses


def mask_branch_inference(features, boxes, image_shape2d, num_categories, head_func, roi_func, batch_multiple,
                          techniques=()):
    """Inference: the mask logits R x K x 2s x 2s of the detections ``boxes`` (R x 4).

    The branch runs on the boxes padded with dummy boxes to a multiple of ``batch_multiple``
    (``TEST.MASK_BATCH_MULTIPLE``), at least one multiple. oneDNN caches a convolution primitive
    (with its scratch memory) per input shape, so a batch size that changed with every image made
    memory grow with every distinct detection count (BENCHMARKS.md) and re-created kernels
    each time. It also keeps the batch non-empty: oneDNN's stride-2 convolution returns a wrongly
    shaped result on an empty batch. The padding's logits are dropped before returning.

    ``roi_func`` maps boxes to the mask head's input features.
    """
    num_boxes = tf.shape(boxes)[0]
    multiple = max(1, batch_multiple)
    padded_count = tf.maximum(1, (num_boxes + multiple - 1) // multiple) * multiple
    dummy = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [padded_count - num_boxes, 1])
    padded = tf.concat([boxes, dummy], axis=0)
    logits, _ = build_mask_branch(roi_func(padded), features, image_shape2d, num_categories, head_func,
                                  techniques=techniques)
    return logits[:num_boxes]


def first_fg_rois(targets, boxes, roi_features, limit):
    """The first ``limit`` foreground RoIs (their targets, boxes and precomputed features, if any).

    The sampler shuffles the foreground RoIs, so the first ones are a random subset."""
    keep = lambda t: t[:limit]  # noqa: E731
    targets = MaskTargets(keep(targets.fg_labels), targets.gt_masks, keep(targets.fg_inds_wrt_gt))
    return targets, keep(boxes), None if roi_features is None else keep(roi_features)


def mask_branch_training(features, fg_boxes, image_shape2d, num_categories, head_func, targets, roi_func,
                         fg_roi_features=None, max_fg=0, techniques=()):
    """Training: the mask losses of the foreground RoIs ``fg_boxes`` with their ``targets``.

    Args:
        roi_func: boxes -> the mask head's input features, used unless ``fg_roi_features`` gives
            them (C4 reuses the box head's res5 output, as Tensorpack does).
        max_fg: if > 0, only the first ``max_fg`` foreground RoIs (``MRCNN.TRAIN_MAX_FG_PER_IM``).
        techniques: the built MaskPlus techniques (:func:`build_mask_branch`).

    An image without foreground (``DATA.FILTER_EMPTY_ANNOTATIONS=False``) has no mask target. The
    branch then runs on one dummy RoI (oneDNN fails on an empty batch, see
    :func:`mask_branch_inference`) and its losses are 0, where the example's mean over no RoI is
    NaN. With foreground the padding is empty.
    """
    if max_fg > 0:
        targets, fg_boxes, fg_roi_features = first_fg_rois(targets, fg_boxes, fg_roi_features, max_fg)
    num_fg = tf.size(targets.fg_labels)
    pad = tf.maximum(0, 1 - num_fg)
    gt_pad = tf.maximum(0, pad - tf.shape(targets.gt_masks)[0])
    padded = MaskTargets(
        tf.concat([targets.fg_labels, tf.ones([pad], targets.fg_labels.dtype)], axis=0),
        tf.concat([targets.gt_masks, tf.zeros(tf.concat([[gt_pad], tf.shape(targets.gt_masks)[1:]], 0),
                                              targets.gt_masks.dtype)], axis=0),
        tf.concat([targets.fg_inds_wrt_gt, tf.zeros([pad], targets.fg_inds_wrt_gt.dtype)], axis=0))
    boxes = tf.concat([fg_boxes, tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [pad, 1])], axis=0)
    if fg_roi_features is None:
        roi_features = roi_func(boxes)
    else:  # the box head's features of the real RoIs, and a zero row for the dummy one
        roi_features = tf.concat([fg_roi_features, tf.zeros(tf.concat([[pad], tf.shape(fg_roi_features)[1:]], 0),
                                                            fg_roi_features.dtype)], axis=0)
    _, losses = build_mask_branch(roi_features, features, image_shape2d, num_categories, head_func, padded, boxes,
                                  techniques)
    has_fg = num_fg > 0
    return [tf.where(has_fg, loss, 0.0, name=loss.op.name.split("/")[-1] + "_or_zero") for loss in losses]
