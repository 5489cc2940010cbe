"""Test-time augmentation's arithmetic, pure NumPy and config-free: the views of an image, boxes
mapped between a view and the image, the merge of every view's detections, the mean of the views'
masks. ``maskplus/engine/tta.py`` runs the network on the views.

A view is the image resized (short edge ``short_edge``, long edge capped) and, with ``flip``,
mirrored left to right after the resize. Boxes are ``x1, y1, x2, y2`` with pixel ``i`` covering
``[i, i + 1)``: mirroring a view ``W`` pixels wide maps ``x`` to ``W - x``, so a box ``x1..x2``
becomes ``W - x2..W - x1`` (no ``- 1``), and the ``M x M`` mask of a box, sampled at the centres of
an ``M x M`` grid over it, is its mirror image's mask with the columns reversed.
"""
from collections import namedtuple

import numpy as np

from maskplus.data.transforms import flip_boxes, scale_boxes, unresize_boxes

#: One view: the short edge the image is resized to, and whether it is then mirrored.
View = namedtuple("View", ["short_edge", "flip"])


def augmented_views(short_edges, flip):
    """The views of test-time augmentation: each short edge, followed by its mirror with ``flip``."""
    return [View(size, mirrored) for size in short_edges for mirrored in ((False, True) if flip else (False,))]


class ViewGeometry(namedtuple("ViewGeometry", ["height", "width", "view_height", "view_width", "flip"])):
    """Where a view's pixels come from: an image of ``height x width`` resized to ``view_height x
    view_width`` and, with ``flip``, mirrored."""
    __slots__ = ()

    @property
    def scales(self):
        """(scale_y, scale_x): view pixels per image pixel."""
        return self.view_height / float(self.height), self.view_width / float(self.width)


def boxes_to_image(boxes, geometry, per_axis=False):
    """Boxes predicted on a view -> the image's pixels: mirrored back (about the view's width), then
    divided by the scale and clipped by the single-view rule (``unresize_boxes``; ``per_axis``:
    ``TEST.BOX_SCALE_PER_AXIS``)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if geometry.flip:
        boxes = flip_boxes(boxes, geometry.view_width)
    sy, sx = geometry.scales
    return unresize_boxes(boxes, sy, sx, geometry.height, geometry.width, per_axis=per_axis)


def boxes_to_view(boxes, geometry, per_axis=False):
    """The inverse of :func:`boxes_to_image` (clipping aside): image boxes -> the view's pixels."""
    sy, sx = geometry.scales
    if per_axis:
        boxes = scale_boxes(boxes, sy, sx)
    else:
        s = np.sqrt(sy * sx)
        boxes = (np.asarray(boxes, np.float64).reshape(-1, 4) * s).astype(np.float32)
    return flip_boxes(boxes, geometry.view_width) if geometry.flip else boxes


def pairwise_iou(boxes1, boxes2):
    """N x M IoU; a box without area overlaps nothing (as TensorFlow's NMS has it)."""
    a, b = np.asarray(boxes1, np.float64), np.asarray(boxes2, np.float64)
    inter_w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    valid = (area_a[:, None] > 0) & (area_b[None, :] > 0)
    return np.where(valid, inter / np.where(valid, union, 1.0), 0.0)


def per_class_nms(boxes, scores, labels, iou_threshold, score_threshold, max_detections):
    """Indices of the detections kept, best first: those scoring above ``score_threshold``, by greedy
    NMS within each class (a box overlapping a better one of its class by IoU > ``iou_threshold``
    goes), the best ``max_detections`` of all classes. Equal scores keep their input order."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    candidates = np.flatnonzero(scores > score_threshold)
    kept = []
    for label in np.unique(labels[candidates]):
        ids = candidates[labels[candidates] == label]
        ids = ids[np.argsort(-scores[ids], kind="stable")]
        iou = pairwise_iou(boxes[ids], boxes[ids])
        alive = np.ones(len(ids), bool)
        for k in range(len(ids)):
            if alive[k]:
                kept.append(ids[k])
                alive[k + 1:] &= iou[k, k + 1:] <= iou_threshold
    kept = np.asarray(kept, np.int64)
    order = np.lexsort((kept, -scores[kept]))  # best first, ties in input order
    return kept[order][:max_detections]


def merge_views(view_detections, iou_threshold, score_threshold, max_detections):
    """The detections of all views, in image pixels, merged by :func:`per_class_nms`.

    Args:
        view_detections: per view, (boxes N x 4 in the image's pixels, scores N, labels N).
    Returns:
        boxes R x 4 (float32), scores R, labels R of the kept detections, best first.
    """
    boxes = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b, _, _ in view_detections])
    scores = np.concatenate([np.asarray(s, np.float32).reshape(-1) for _, s, _ in view_detections])
    labels = np.concatenate([np.asarray(lab, np.int64).reshape(-1) for _, _, lab in view_detections])
    keep = per_class_nms(boxes, scores, labels, iou_threshold, score_threshold, max_detections)
    return boxes[keep], scores[keep], labels[keep]


def average_masks(view_masks, flips):
    """The mean of each box's mask probabilities over the views (each R x M x M, the box as the
    view saw it): a mirrored view's masks are mirrored back first. Averaged as probabilities, so
    the paste's 0.5 threshold applies to the mean."""
    aligned = [np.asarray(m, np.float32)[:, :, ::-1] if flip else np.asarray(m, np.float32)
               for m, flip in zip(view_masks, flips)]
    return np.mean(aligned, axis=0, dtype=np.float64).astype(np.float32)
