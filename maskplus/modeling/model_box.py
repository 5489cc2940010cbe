"""Box arithmetic in the graph: areas, IoU, clipping, encoding, and RoIAlign.

Boxes are float ``x1, y1, x2, y2`` in pixels, where pixel ``i`` covers ``[i, i + 1)``: a box
covering one pixel has width 1 (no "+1" conventions).

:func:`grid_anchors` and :func:`pairwise_iou` have NumPy twins of the same names and argument order
in ``maskplus.data.anchors`` (the data pipeline's), :func:`clip_boxes` in
``maskplus.data.transforms`` (``clip_boxes(boxes, height, width)``).
"""
import numpy as np
from tensorpack.tfutils.scope_utils import under_name_scope

from maskplus.compat import tf
from maskplus.modeling.float32_island import float32_island


def area(boxes):
    x1, y1, x2, y2 = tf.unstack(boxes, 4, axis=1)
    return (x2 - x1) * (y2 - y1)


@under_name_scope()
@float32_island
def pairwise_iou(boxes1, boxes2):
    """IoU between every box of ``boxes1`` (N x 4) and of ``boxes2`` (M x 4): N x M."""
    ax1, ay1, ax2, ay2 = tf.split(boxes1, 4, axis=1)  # N x 1 each
    bx1, by1, bx2, by2 = [tf.transpose(t) for t in tf.split(boxes2, 4, axis=1)]  # 1 x M each
    inter_w = tf.maximum(0.0, tf.minimum(ax2, bx2) - tf.maximum(ax1, bx1))
    inter_h = tf.maximum(0.0, tf.minimum(ay2, by2) - tf.maximum(ay1, by1))
    inter = inter_w * inter_h
    union = tf.expand_dims(area(boxes1), 1) + tf.expand_dims(area(boxes2), 0) - inter
    return tf.where(inter > 0.0, inter / tf.maximum(union, 1e-12), tf.zeros_like(inter))


@under_name_scope()
@float32_island
def clip_boxes(boxes, shape2d, name=None):
    """Clip boxes (..., 4) to an image of ``shape2d`` = [h, w]."""
    hw = tf.cast(shape2d, tf.float32)
    upper = tf.stack([hw[1], hw[0], hw[1], hw[0]])
    return tf.minimum(tf.maximum(boxes, 0.0), upper, name=name)


def _centre_size(boxes):
    pairs = tf.reshape(boxes, [-1, 2, 2])  # (x1, y1), (x2, y2)
    size = pairs[:, 1] - pairs[:, 0]
    centre = (pairs[:, 1] + pairs[:, 0]) * 0.5
    return centre, size


@under_name_scope()
@float32_island
def encode_bbox_target(boxes, anchors):
    """Regression targets (dx, dy, log dw, log dh) of ``boxes`` relative to ``anchors``; same shape."""
    anchor_c, anchor_s = _centre_size(anchors)
    box_c, box_s = _centre_size(boxes)
    delta_c = (box_c - anchor_c) / anchor_s
    delta_s = tf.math.log(box_s / anchor_s)  # -inf for the zero boxes of non-positive anchors: masked later
    return tf.reshape(tf.concat([delta_c, delta_s], axis=1), tf.shape(boxes))


@under_name_scope()
@float32_island
def decode_bbox_target(deltas, anchors, max_size=1333.0):
    """Inverse of :func:`encode_bbox_target`. The size delta is clipped at log(max_size / 16)."""
    anchor_c, anchor_s = _centre_size(anchors)
    pairs = tf.reshape(deltas, [-1, 2, 2])
    clip = float(np.log(max_size / 16.0))
    size = tf.exp(tf.minimum(pairs[:, 1], clip)) * anchor_s
    centre = pairs[:, 0] * anchor_s + anchor_c
    out = tf.concat([centre - size * 0.5, centre + size * 0.5], axis=1)
    return tf.reshape(out, tf.shape(anchors))


@under_name_scope()
@float32_island
def crop_and_resize(image, boxes, box_ind, crop_size, pad_border=True):
    """Bilinear crops of an NCHW ``image`` at ``crop_size`` x ``crop_size`` sample points per box.

    Unlike ``tf.image.crop_and_resize``, the samples sit at the centres of a regular
    ``crop_size`` grid over the float box (spacing w/crop_size, first sample half a spacing in),
    with pixel centres at integer + 0.5. ``pad_border`` replicates the border first so samples
    just outside the map are not pulled towards zero.
    """
    boxes = tf.stop_gradient(boxes)
    if pad_border:
        image = tf.pad(image, [[0, 0], [0, 0], [1, 1], [1, 1]], mode="SYMMETRIC")
        boxes = boxes + 1.0
    x1, y1, x2, y2 = tf.split(boxes, 4, axis=1)
    step_x = (x2 - x1) / crop_size
    step_y = (y2 - y1) / crop_size
    # tf.image.crop_and_resize samples linearly from the normalised start to end point, both
    # included, over an image whose pixel k sits at coordinate k: convert our grid to that.
    hw = tf.cast(tf.shape(image)[2:] - 1, tf.float32)
    first_x = x1 + step_x * 0.5 - 0.5
    first_y = y1 + step_y * 0.5 - 0.5
    last_x = first_x + step_x * (crop_size - 1)
    last_y = first_y + step_y * (crop_size - 1)
    normalised = tf.concat([first_y / hw[0], first_x / hw[1], last_y / hw[0], last_x / hw[1]], axis=1)
    nhwc = tf.transpose(image, [0, 2, 3, 1])
    crops = tf.image.crop_and_resize(nhwc, normalised, tf.cast(box_ind, tf.int32), [crop_size, crop_size])
    return tf.transpose(crops, [0, 3, 1, 2])


@under_name_scope()
def roi_align(featuremap, boxes, resolution):
    """RoIAlign: 2x2 bilinear samples per output bin, averaged. featuremap 1xCxHxW -> NxCxRxR."""
    crops = crop_and_resize(featuremap, boxes, tf.zeros([tf.shape(boxes)[0]], tf.int32), resolution * 2)
    return tf.nn.avg_pool2d(crops, [1, 1, 2, 2], [1, 1, 2, 2], padding="SAME", data_format="NCHW")


@under_name_scope()
def grid_anchors(featuremap, stride, cell_anchors):
    """Anchors of every cell of an NCHW feature map: fH x fW x A x 4.

    ``cell_anchors`` (A x 4, numpy) are centred on the origin; cell (i, j) shifts them by
    (j * stride, i * stride). Built from the map's dynamic shape, so any image size works.
    """
    shape2d = tf.shape(featuremap)[2:]
    xs = tf.cast(tf.range(shape2d[1]), tf.float32) * stride
    ys = tf.cast(tf.range(shape2d[0]), tf.float32) * stride
    sx, sy = tf.meshgrid(xs, ys)
    shifts = tf.stack([sx, sy, sx, sy], axis=-1)  # fH x fW x 4
    return tf.expand_dims(shifts, 2) + tf.constant(cell_anchors, tf.float32)[None, None]
