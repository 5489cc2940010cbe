"""The parts of a ResNet-C4 Mask R-CNN (``MODE_FPN=False``): single-level RPN and the res5 RoI head.

As in the Tensorpack example: the RPN (``RPN.HEAD_DIM`` wide) runs on C4 with every
``RPN.ANCHOR_SIZES`` x ``RPN.ANCHOR_RATIOS`` anchor at each stride-16 position; RoIs are cropped
from C4 by one RoIAlign at 14 x 14, res5 (``group3``, stride 2) turns them into 7 x 7 x 2048,
global average pooling feeds ``fastrcnn/class`` and ``fastrcnn/box``, and the mask head
(:func:`maskrcnn_c4_head`) reads the same res5 features.
"""
from tensorpack.models import GlobalAvgPooling

from config import config as cfg
from maskplus.compat import tf
from maskplus.data.anchors import c4_cell_anchors
from maskplus.modeling.backbone import resnet_conv5
from maskplus.modeling.model_box import decode_bbox_target, encode_bbox_target, grid_anchors, roi_align
from maskplus.modeling.model_frcnn import FastRCNNHead, fastrcnn_outputs
from maskplus.modeling.model_rpn import generate_rpn_proposals, rpn_head, rpn_losses


def c4_rpn(featuremap, image_shape2d, anchor_labels, anchor_boxes, training):
    """Proposals (k x 4, gradient stopped) and, in training, ``[label_loss, box_loss]``.

    ``anchor_labels``/``anchor_boxes`` (training) cover at least the map; they are sliced to it.
    """
    num_anchors = cfg.RPN.NUM_ANCHOR
    with tf.name_scope("anchors"):
        anchors = grid_anchors(featuremap, cfg.RPN.ANCHOR_STRIDE,
                               c4_cell_anchors(cfg.RPN.ANCHOR_SIZES, cfg.RPN.ANCHOR_RATIOS))
    label_logits, box_logits = rpn_head("rpn", featuremap, cfg.RPN.HEAD_DIM, num_anchors)
    pred_boxes = decode_bbox_target(box_logits, anchors, cfg.PREPROC.MAX_SIZE)
    boxes, _ = generate_rpn_proposals(
        tf.reshape(pred_boxes, [-1, 4]), tf.reshape(label_logits, [-1]), image_shape2d,
        cfg.RPN.TRAIN_PRE_NMS_TOPK if training else cfg.RPN.TEST_PRE_NMS_TOPK,
        cfg.RPN.TRAIN_POST_NMS_TOPK if training else cfg.RPN.TEST_POST_NMS_TOPK)
    if not training:
        return boxes, []
    shape2d = tf.shape(featuremap)[2:]
    labels = anchor_labels[:shape2d[0], :shape2d[1]]
    targets = encode_bbox_target(anchor_boxes[:shape2d[0], :shape2d[1]], anchors)
    return boxes, list(rpn_losses(labels, targets, label_logits, box_logits))


def c4_roi_features(featuremap, boxes):
    """RoIAlign 14 x 14 on C4, then res5: N x 2048 x 7 x 7 (the box and the mask head's input)."""
    crops = roi_align(featuremap, boxes * (1.0 / cfg.RPN.ANCHOR_STRIDE), 14)
    return resnet_conv5(crops, cfg.BACKBONE.RESNET_NUM_BLOCKS[-1])


def c4_box_head(featuremap, proposals, gt_boxes):
    """The C4 Fast R-CNN head on res5's pooled features; returns it and the res5 features of the
    proposals (the mask head's input in training)."""
    res5 = c4_roi_features(featuremap, proposals.boxes)
    pooled = GlobalAvgPooling("gap", res5, data_format="channels_first")
    label_logits, box_logits = fastrcnn_outputs("fastrcnn", pooled, cfg.DATA.NUM_CATEGORY)
    return FastRCNNHead(proposals, box_logits, label_logits, gt_boxes, cfg.FRCNN.BBOX_REG_WEIGHTS), res5
