"""FPN anchors and RPN training targets, with Tensorpack's numeric conventions.

Anchor geometry must match the model zoo exactly, so it follows the current Tensorpack example
(the convention its published COCO models were trained with):

* one cell of size ``z`` (square root of the area) and aspect ratio ``r = h / w`` is the box
  ``[-w/2, -h/2, w/2, h/2]`` with ``w = sqrt(z*z / r)``, ``h = r * w`` -- centred on the origin,
  not rounded;
* the cell at feature-map position ``(i, j)`` of a level with stride ``s`` is shifted by
  ``(j*s, i*s)``.

For stride 16, size 32 and ratio 1 this gives ``[-16, -16, 16, 16]`` at cell (0, 0). The model
builds the same anchors in the graph from :func:`cell_anchors`: :func:`grid_anchors` and
:func:`pairwise_iou` are the NumPy twins of ``maskplus.modeling.model_box``'s TensorFlow functions
of the same names and argument order (this layer cannot import that one).

Target assignment (:func:`anchor_targets`) follows Tensorpack's FPN example: sampling is done
jointly over all levels, then split back per level.
"""
from typing import NamedTuple

import numpy as np

__all__ = ["cell_anchors", "c4_cell_anchors", "c4_anchor_targets", "grid_anchors", "padded_shape", "fpn_field_sizes",
           "fpn_anchors", "pairwise_iou", "pairwise_ioa", "label_anchors", "anchor_targets", "AnchorParams",
           "multilevel_anchor_targets"]


def cell_anchors(size, ratios):
    """A x 4 float32 anchors of one cell, centred on the origin (one per aspect ratio h / w)."""
    ratios = np.asarray(ratios, dtype=np.float64)
    ws = np.sqrt(float(size) * size / ratios)
    hs = ratios * ws
    return (np.stack([-ws, -hs, ws, hs], axis=1) * 0.5).astype(np.float32)


def c4_cell_anchors(sizes, ratios):
    """(S*R) x 4 anchors of one C4 cell: every size with every ratio, size-major (Tensorpack's order)."""
    return np.concatenate([cell_anchors(z, ratios) for z in sizes], axis=0)


def grid_anchors(field_shape, stride, cell_anchors):
    """float32 ``[field_h, field_w, A, 4]`` anchors of every cell of a ``field_shape`` = (field_h,
    field_w) grid: cell (i, j) shifts the A x 4 ``cell_anchors`` by (j*stride, i*stride).

    Twin of ``model_box.grid_anchors(featuremap, stride, cell_anchors)``, which reads the field
    from the feature map's dynamic shape."""
    field_h, field_w = field_shape
    xs = np.arange(field_w, dtype=np.float32) * stride
    ys = np.arange(field_h, dtype=np.float32) * stride
    sx, sy = np.meshgrid(xs, ys)
    shifts = np.stack([sx, sy, sx, sy], axis=-1)  # fh x fw x 4
    return (shifts[:, :, None, :] + cell_anchors[None, None]).astype(np.float32)


def padded_shape(h, w, multiple=32):
    """The image size after padding up to a multiple of ``multiple`` (``FPN.ANCHOR_STRIDES[3]``)."""
    return int(np.ceil(h / float(multiple)) * multiple), int(np.ceil(w / float(multiple)) * multiple)


def fpn_field_sizes(padded_h, padded_w, strides):
    """``[(ceil(H_pad/s), ceil(W_pad/s)) for s in strides]``."""
    return [(int(np.ceil(padded_h / float(s))), int(np.ceil(padded_w / float(s)))) for s in strides]


def fpn_anchors(padded_h, padded_w, strides, sizes, ratios):
    """Per level, float32 ``[fh, fw, A, 4]`` anchors covering a padded image."""
    return [grid_anchors(field, s, cell_anchors(z, ratios))
            for s, z, field in zip(strides, sizes, fpn_field_sizes(padded_h, padded_w, strides))]


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _intersection(a, b):
    """M x N intersection areas (float32, no +1)."""
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    np.maximum(iw, 0, out=iw)
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(ih, 0, out=ih)
    iw *= ih
    return iw


def pairwise_iou(boxes1, boxes2):
    """N x M IoU of ``boxes1`` (N x 4) and ``boxes2`` (M x 4), float32. Twin of ``model_box.pairwise_iou``."""
    inter = _intersection(boxes1, boxes2)
    union = _area(boxes1).astype(np.float32)[:, None] + _area(boxes2).astype(np.float32)[None, :] - inter
    return inter / np.maximum(union, np.float32(1e-8))


def pairwise_ioa(a, b):
    """M x N intersection over the area of ``b``: how much of each ``b`` box lies inside ``a``."""
    inter = _intersection(a, b)
    return inter / np.maximum(_area(b).astype(np.float32)[None, :], np.float32(1e-8))


def _subsample(labels, value, keep, rng):
    """Turn all but ``keep`` random entries equal to ``value`` into -1; returns kept indices."""
    inds = np.flatnonzero(labels == value)
    if len(inds) > keep:
        drop = rng.choice(inds, size=len(inds) - keep, replace=False)
        labels[drop] = -1
        inds = np.flatnonzero(labels == value)
    return inds


def _match(anchors, gt_boxes, chunk=16384):
    """IoU matching, in chunks of anchors so memory stays small (~chunk x G floats).

    Returns ``best_iou`` float32 [N] and ``best_gt`` [N] (each anchor's best gt), and the indices of
    anchors that reach some gt's maximum IoU over all anchors (ties included). A gt whose maximum
    is 0 contributes no anchor: those would be labelled negative right after anyway.
    """
    n, g = len(anchors), len(gt_boxes)
    best_iou = np.empty((n,), dtype=np.float32)
    best_gt = np.empty((n,), dtype=np.int64)
    gt_max = np.zeros((g,), dtype=np.float32)
    cand_a, cand_g, cand_v = [], [], []
    for start in range(0, n, chunk):
        iou = pairwise_iou(anchors[start:start + chunk], gt_boxes)   # c x G
        arg = iou.argmax(axis=1)
        best_gt[start:start + len(iou)] = arg
        best_iou[start:start + len(iou)] = iou[np.arange(len(iou)), arg]
        chunk_max = iou.max(axis=0)
        np.maximum(gt_max, chunk_max, out=gt_max)
        a_idx, g_idx = np.nonzero((iou == chunk_max[None, :]) & (chunk_max[None, :] > 0))
        cand_a.append(a_idx + start)
        cand_g.append(g_idx)
        cand_v.append(chunk_max[g_idx])
    a_idx, g_idx, v = (np.concatenate(x) for x in (cand_a, cand_g, cand_v))
    return best_iou, best_gt, np.unique(a_idx[v == gt_max[g_idx]])


def label_anchors(anchors, gt_boxes, crowd_boxes, rng, *, positive_thresh, negative_thresh,
                  batch_per_im, fg_ratio, crowd_overlap_thresh):
    """RPN labels for anchors that are all candidates (already known to be inside the image).

    Rules, in Tensorpack's order: anchors achieving some gt's maximum IoU (ties included) are
    positive; then IoU >= ``positive_thresh`` is positive; then max IoU < ``negative_thresh`` is
    negative (this may override the first rule for a gt whose best IoU is low). Candidates whose
    IoA with any crowd box exceeds ``crowd_overlap_thresh`` are ignored. Positives are randomly
    cut to ``int(batch_per_im * fg_ratio)``, negatives to ``batch_per_im - #positives``.

    Returns:
        labels int32 [N] in {1, 0, -1}, boxes float32 [N, 4] (matched gt for positives, else 0).
    """
    n = len(anchors)
    labels = -np.ones((n,), dtype=np.int32)
    boxes = np.zeros((n, 4), dtype=np.float32)
    if n == 0:
        return labels, boxes
    gt_boxes = np.asarray(gt_boxes, dtype=np.float32).reshape(-1, 4)
    crowd_boxes = np.asarray(crowd_boxes, dtype=np.float32).reshape(-1, 4)
    if len(gt_boxes):
        best_iou, best_gt, best_for_some_gt = _match(anchors, gt_boxes)
        labels[best_for_some_gt] = 1
        labels[best_iou >= positive_thresh] = 1
        labels[best_iou < negative_thresh] = 0
    else:
        best_gt = np.zeros((n,), dtype=np.int64)
        labels[:] = 0
    if len(crowd_boxes):
        cand = np.flatnonzero(labels >= 0)
        if len(cand):
            ioa = pairwise_ioa(crowd_boxes, anchors[cand])  # C x n_cand
            labels[cand[ioa.max(axis=0) > crowd_overlap_thresh]] = -1
    fg = _subsample(labels, 1, int(batch_per_im * fg_ratio), rng)
    _subsample(labels, 0, batch_per_im - len(fg), rng)
    if len(fg) and len(gt_boxes):
        boxes[fg] = gt_boxes[best_gt[fg]]
    return labels, boxes


def anchor_targets(anchors, image_h, image_w, gt_boxes, crowd_boxes, rng, **kwargs):
    """Labels and boxes for flat anchors (N x 4); anchors not fully inside the real (unpadded)
    ``image_h x image_w`` image are -1. ``kwargs`` are those of :func:`label_anchors`."""
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    inside = np.flatnonzero((anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) &
                            (anchors[:, 2] <= image_w) & (anchors[:, 3] <= image_h))
    labels = -np.ones((len(anchors),), dtype=np.int32)
    boxes = np.zeros((len(anchors), 4), dtype=np.float32)
    lab, box = label_anchors(anchors[inside], gt_boxes, crowd_boxes, rng, **kwargs)
    labels[inside] = lab
    boxes[inside] = box
    return labels, boxes


class AnchorParams(NamedTuple):
    """What RPN target assignment needs (picklable, so loader processes need no config).

    ``strides``: one per FPN level (P2..P6) when ``fpn``, else the single C4 stride. The others
    are the arguments of :func:`label_anchors`."""
    fpn: bool
    strides: tuple
    sizes: tuple
    ratios: tuple
    positive_thresh: float
    negative_thresh: float
    batch_per_im: int
    fg_ratio: float
    crowd_overlap_thresh: float

    @classmethod
    def from_config(cls, cfg):
        """From the ``MODE_FPN``, ``FPN.ANCHOR_STRIDES``, ``RPN.*`` keys of ``cfg`` (an argument: the
        data layer never imports the config)."""
        rpn = cfg.RPN
        return cls(bool(cfg.MODE_FPN),
                   tuple(cfg.FPN.ANCHOR_STRIDES) if cfg.MODE_FPN else (int(rpn.ANCHOR_STRIDE),),
                   tuple(rpn.ANCHOR_SIZES), tuple(rpn.ANCHOR_RATIOS),
                   float(rpn.POSITIVE_ANCHOR_THRESH), float(rpn.NEGATIVE_ANCHOR_THRESH), int(rpn.BATCH_PER_IM),
                   float(rpn.FG_RATIO), float(rpn.CROWD_OVERLAP_THRESH))

    def labelling(self):
        """The keyword arguments of :func:`label_anchors`."""
        return dict(positive_thresh=self.positive_thresh, negative_thresh=self.negative_thresh,
                    batch_per_im=self.batch_per_im, fg_ratio=self.fg_ratio,
                    crowd_overlap_thresh=self.crowd_overlap_thresh)


def multilevel_anchor_targets(image_h, image_w, gt_boxes, crowd_boxes, rng, params):
    """RPN targets for every FPN level of one (unpadded) ``image_h x image_w`` image.

    Anchors cover the image padded to a multiple of ``params.strides[3]``; sampling is joint
    across levels. ``params``: an :class:`AnchorParams` of an FPN model.

    Returns:
        a list, one ``(labels int32 [fh, fw, A], boxes float32 [fh, fw, A, 4])`` per level P2..P6.
    """
    strides = tuple(params.strides)
    ph, pw = padded_shape(image_h, image_w, strides[3])
    levels = fpn_anchors(ph, pw, strides, params.sizes, params.ratios)
    flat = np.concatenate([a.reshape(-1, 4) for a in levels], axis=0)
    labels, boxes = anchor_targets(flat, image_h, image_w, gt_boxes, crowd_boxes, rng, **params.labelling())
    out, start = [], 0
    for a in levels:
        shape = a.shape[:3]
        count = int(np.prod(shape))
        out.append((labels[start:start + count].reshape(shape),
                    boxes[start:start + count].reshape(shape + (4,))))
        start += count
    return out


def c4_anchor_targets(image_h, image_w, gt_boxes, crowd_boxes, rng, params):
    """RPN targets on the single C4 map of one (unpadded) ``image_h x image_w`` image; ``params``:
    an :class:`AnchorParams` of a C4 model (one stride).

    Returns ``(labels int32 [fh, fw, A], boxes float32 [fh, fw, A, 4])``, fh = image_h // stride,
    A = len(sizes) * len(ratios).

    As the example: the candidates are all anchors inside the image, also those of the cells
    beyond the map (row ``image_h // stride`` when the image is not a multiple of the stride: an
    anchor of height < 32 can still fit there). Labels are sampled over all of them and then cut
    to the map, so such an anchor can take a gt's "best anchor" label, and a share of the sampled
    batch, that the map then loses. Cells from ceil(h / stride) on cannot hold an inside anchor.
    """
    (stride,) = params.strides
    field_h, field_w = -(-image_h // stride), -(-image_w // stride)
    anchors = grid_anchors((field_h, field_w), stride, c4_cell_anchors(params.sizes, params.ratios))
    labels, boxes = anchor_targets(anchors, image_h, image_w, gt_boxes, crowd_boxes, rng, **params.labelling())
    shape = anchors.shape[:3]
    map_h, map_w = image_h // stride, image_w // stride
    return (np.ascontiguousarray(labels.reshape(shape)[:map_h, :map_w]),
            np.ascontiguousarray(boxes.reshape(shape + (4,))[:map_h, :map_w]))
