"""The parts of a ResNet-C4 Mask R-CNN (``MODE_FPN=False``): single-level RPN and the res5 RoI head.

As in the Tensorpack example: the RPN (``RPN.HEAD_DIM`` wide) runs on C4 with every
``RPN.ANCHOR_SIZES`` x ``RPN.ANCHOR_RATIOS`` anchor at each stride-16 position; RoIs are cropped
from C4 by one RoIAlign at 14 x 14, res5 (``group3``, stride 2) turns them into 7 x 7 x 2048,
global average pooling feeds ``fastrcnn/class`` and ``fastrcnn/box``, and the mask head
(:func:`maskrcnn_c4_head`) reads the same res5 features.

Config-free: the functions take the parameter records of the parts they build.
"""
from tensorpack.models import GlobalAvgPooling

from maskplus.compat import tf
from maskplus.data.anchors import c4_cell_anchors
from maskplus.modeling.backbone import resnet_conv5
from maskplus.modeling.model_box import decode_bbox_target, encode_bbox_target, grid_anchors, roi_align
from maskplus.modeling.model_frcnn import FastRCNNHead, fastrcnn_outputs
from maskplus.modeling.model_rpn import generate_rpn_proposals, rpn_head, rpn_losses


def c4_rpn(featuremap, image_shape2d, anchor_labels, anchor_boxes, training, rpn, max_size):
    """Proposals (k x 4, gradient stopped) and, in training, ``[label_loss, box_loss]``.

    ``anchor_labels``/``anchor_boxes`` (training) cover at least the map; they are sliced to it.
    ``rpn``: the :class:`~maskplus.modeling.model_rpn.RPNParams`; ``max_size``: the bound of a
    decoded box's size (``PREPROC.MAX_SIZE``).
    """
    with tf.name_scope("anchors"):
        anchors = grid_anchors(featuremap, rpn.anchor_stride, c4_cell_anchors(rpn.anchor_sizes, rpn.anchor_ratios))
    label_logits, box_logits = rpn_head("rpn", featuremap, rpn.head_dim, rpn.num_anchors)
    pred_boxes = decode_bbox_target(box_logits, anchors, max_size)
    boxes, _ = generate_rpn_proposals(
        tf.reshape(pred_boxes, [-1, 4]), tf.reshape(label_logits, [-1]), image_shape2d, *rpn.nms_topk(training),
        min_size=rpn.min_size, nms_thresh=rpn.nms_thresh)
    if not training:
        return boxes, []
    shape2d = tf.shape(featuremap)[2:]
    labels = anchor_labels[:shape2d[0], :shape2d[1]]
    targets = encode_bbox_target(anchor_boxes[:shape2d[0], :shape2d[1]], anchors)
    return boxes, list(rpn_losses(labels, targets, label_logits, box_logits, rpn.batch_per_im))


def c4_roi_features(featuremap, boxes, stride, backbone):
    """RoIAlign 14 x 14 on C4 (of ``stride``, ``RPN.ANCHOR_STRIDE``), then res5 of the
    :class:`~maskplus.modeling.backbone.BackboneParams` ``backbone``: N x 2048 x 7 x 7 (the box and
    the mask head's input)."""
    crops = roi_align(featuremap, boxes * (1.0 / stride), 14)
    return resnet_conv5(crops, backbone)


def c4_box_head(roi_func, proposals, gt_boxes, num_categories, frcnn):
    """The C4 Fast R-CNN head on res5's pooled features (``roi_func``: boxes -> their res5
    features, :func:`c4_roi_features`); returns it and the res5 features of the proposals (the mask
    head's input in training). ``frcnn``: the :class:`~maskplus.modeling.model_frcnn.FastRCNNParams`."""
    res5 = roi_func(proposals.boxes)
    pooled = GlobalAvgPooling("gap", res5, data_format="channels_first")
    label_logits, box_logits = fastrcnn_outputs("fastrcnn", pooled, num_categories)
    return FastRCNNHead(proposals, box_logits, label_logits, gt_boxes, frcnn.bbox_reg_weights, frcnn.max_size), res5
