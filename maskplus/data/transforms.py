"""Small, pure geometric helpers shared by training data loading and inference.

Coordinates follow the COCO / Tensorpack convention: a box is ``x1, y1, x2, y2`` in absolute
pixels, where pixel ``i`` covers ``[i, i + 1)``; an image of width ``W`` spans ``[0, W]``.
Nothing here reads the global config, so inference code can import it freely.
"""
import cv2
import numpy as np

__all__ = ["resized_shape", "resize_image", "scale_boxes", "flip_boxes", "clip_boxes", "unresize_boxes",
           "scale_points", "flip_points", "scale_polygons", "flip_polygons"]


def resized_shape(h, w, short_edge, max_size):
    """Output ``(new_h, new_w)`` of resizing an ``h x w`` image for the network.

    The shorter side becomes ``short_edge``; if the longer side would then exceed ``max_size``,
    the scale is reduced so that the longer side equals ``max_size``. Each side is rounded
    half-up (``int(x + 0.5)``). This is Tensorpack's ``ResizeShortestEdge`` rule.
    """
    h, w = float(h), float(w)
    scale = float(short_edge) / min(h, w)
    new_h, new_w = h * scale, w * scale
    longer = max(new_h, new_w)
    if max_size and longer > max_size:
        shrink = float(max_size) / longer
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image(img, short_edge, max_size, interpolation=cv2.INTER_LINEAR):
    """Resize ``img`` (H x W [x C]) by :func:`resized_shape`.

    Returns:
        ``(resized, scale_y, scale_x)`` where ``scale_y = new_h / h`` and ``scale_x = new_w / w``;
        multiply original coordinates by them to get resized coordinates.
    """
    h, w = img.shape[:2]
    new_h, new_w = resized_shape(h, w, short_edge, max_size)
    if (new_h, new_w) == (h, w):
        out = img.copy()
    else:
        out = cv2.resize(img, (new_w, new_h), interpolation=interpolation)
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel of size 1
            out = out[:, :, None]
    return out, new_h / float(h), new_w / float(w)


def scale_boxes(boxes, scale_y, scale_x):
    """N x 4 boxes (x1y1x2y2) multiplied by the given scales; returns a new float32 array."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] *= scale_x
    boxes[:, 1::2] *= scale_y
    return boxes


def flip_boxes(boxes, width):
    """Horizontally flip N x 4 boxes inside an image of ``width``: ``x -> width - x``, ends swapped."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def clip_boxes(boxes, height, width):
    """Clip N x 4 boxes to ``[0, width] x [0, height]``; returns a new float32 array."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


def unresize_boxes(boxes, scale_y, scale_x, height, width, per_axis=False):
    """Boxes predicted on a resized image, mapped back to the original ``height x width`` one.

    The example's rule: divide by one scale, ``sqrt(scale_y * scale_x)``, then clip x1, y1 at 0
    and x2, y2 at the far edges. ``per_axis`` divides x and y by their own scales and clips every
    coordinate to the image instead (exact where the resize changed the aspect ratio by rounding).
    """
    if per_axis:
        return clip_boxes(scale_boxes(boxes, 1.0 / scale_y, 1.0 / scale_x), height, width)
    boxes = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.sqrt(scale_y * scale_x)).astype(np.float32)
    boxes[:, :2] = np.maximum(boxes[:, :2], 0)
    boxes[:, 2] = np.minimum(boxes[:, 2], width)
    boxes[:, 3] = np.minimum(boxes[:, 3], height)
    return boxes


def scale_points(points, scale_y, scale_x):
    """P x 2 ``(x, y)`` points scaled; returns a new float32 array."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2).copy()
    points[:, 0] *= scale_x
    points[:, 1] *= scale_y
    return points


def flip_points(points, width):
    """P x 2 ``(x, y)`` points flipped horizontally: ``x -> width - x`` (pixel-edge convention,
    consistent with ``img[:, ::-1]``)."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2).copy()
    points[:, 0] = width - points[:, 0]
    return points


def scale_polygons(polygons, scale_y, scale_x):
    """A list of P x 2 polygons, each scaled."""
    return [scale_points(p, scale_y, scale_x) for p in polygons]


def flip_polygons(polygons, width):
    """A list of P x 2 polygons, each flipped horizontally."""
    return [flip_points(p, width) for p in polygons]

