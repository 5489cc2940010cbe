"""Pasting an instance's M x M mask probabilities into the full image.

Two modes, as in the Tensorpack example (``MRCNN.ACCURATE_PASTE``):

* fast: round the box to whole pixels, resize the mask to it (bilinear) and threshold at 0.5;
* accurate: treat the mask, padded with one zero pixel per side, as a continuous bilinear
  function over the box enlarged by (M+2)/M about its centre, sample it at every image pixel
  centre, threshold at 0.5. Sub-pixel aligned: the same box shifted by 0.3 px moves the mask.

The accurate mode is written as two small interpolation matrices (rows and columns of the box
region) around the mask, ``Wy @ mask @ Wx.T``: exact bilinear sampling without a per-pixel loop.
Boxes are ``x1, y1, x2, y2`` in image pixels, pixel ``i`` covering ``[i, i + 1)``.
"""
from collections import namedtuple

import cv2
import numpy as np
from pycocotools import mask as mask_util


class CroppedMask(namedtuple("CroppedMask", ["y0", "x0", "mask", "height", "width"])):
    """A pasted uint8 mask kept only over the region where it can be non-zero: ``mask`` covers rows
    ``y0..`` and columns ``x0..`` of a ``height x width`` image, which is zero everywhere else. A
    48-megapixel photo with 100 detections needs the boxes' pixels, not 100 full images (4.8 GB)."""
    __slots__ = ()

    def full(self):
        """The full-image uint8 mask."""
        out = np.zeros((self.height, self.width), np.uint8)
        out[self.y0:self.y0 + self.mask.shape[0], self.x0:self.x0 + self.mask.shape[1]] = self.mask
        return out


def paste_mask_fast_cropped(box, mask, height, width):
    """Tensorpack's rounding paste as a :class:`CroppedMask` (the box rounded, clipped to the image)."""
    x0, y0 = int(box[0] + 0.5), int(box[1] + 0.5)
    x1, y1 = int(box[2] - 0.5), int(box[3] - 0.5)  # inclusive
    x1, y1 = max(x0, x1), max(y0, y1)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return CroppedMask(0, 0, np.zeros((0, 0), np.uint8), height, width)
    resized = (cv2.resize(np.asarray(mask, np.float32), (x1 + 1 - x0, y1 + 1 - y0)) > 0.5).astype(np.uint8)
    return CroppedMask(cy0, cx0, resized[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], height, width)



def _interpolation_matrix(coords, size):
    """n x size matrix sampling a length-``size`` signal (sample k at k) linearly at ``coords``;
    rows of coordinates outside [0, size - 1] are zero (the signal is zero there)."""
    n = len(coords)
    weights = np.zeros((n, size), np.float64)
    inside = (coords >= 0) & (coords <= size - 1)
    c = coords[inside]
    lo = np.minimum(np.floor(c).astype(np.int64), size - 2)
    frac = c - lo
    rows = np.flatnonzero(inside)
    weights[rows, lo] = 1.0 - frac
    weights[rows, lo + 1] += frac
    return weights


def _accurate_region(box, mask, height, width):
    """(y0, x0, probabilities) of the accurate paste over the only region it can be non-zero in."""
    m = mask.shape[0]
    padded = np.pad(np.asarray(mask, np.float64), 1)
    size = m + 2
    x1, y1, x2, y2 = [float(v) for v in box]
    # enlarge the box so that the padded mask's pixels keep the original mask's pixel size
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half_w, half_h = (x2 - x1) * 0.5 * size / m, (y2 - y1) * 0.5 * size / m
    ex1, ex2, ey1, ey2 = cx - half_w, cx + half_w, cy - half_h, cy + half_h
    col0, col1 = max(int(np.floor(ex1)), 0), min(int(np.ceil(ex2)), width)
    row0, row1 = max(int(np.floor(ey1)), 0), min(int(np.ceil(ey2)), height)
    if col1 <= col0 or row1 <= row0 or ex2 <= ex1 or ey2 <= ey1:
        return 0, 0, np.zeros((0, 0))
    # image pixel centre -> padded-mask coordinate (pixel j's centre at j + 0.5) -> sample index
    xs = (np.arange(col0, col1) + 0.5 - ex1) / (ex2 - ex1) * size - 0.5
    ys = (np.arange(row0, row1) + 0.5 - ey1) / (ey2 - ey1) * size - 0.5
    probs = _interpolation_matrix(ys, size) @ padded @ _interpolation_matrix(xs, size).T
    return row0, col0, probs


def paste_mask_accurate_cropped(box, mask, height, width):
    """The sub-pixel aligned bilinear paste as a :class:`CroppedMask`."""
    y0, x0, probs = _accurate_region(box, mask, height, width)
    return CroppedMask(y0, x0, (probs >= 0.5).astype(np.uint8), height, width)



def paste_mask_cropped(box, mask, height, width, accurate=True):
    """One instance's pasted mask as a :class:`CroppedMask`."""
    return (paste_mask_accurate_cropped if accurate else paste_mask_fast_cropped)(box, mask, height, width)





def encode_cropped_mask(cropped):
    """COCO RLE of a :class:`CroppedMask`, equal to pycocotools' encoding of its full mask, from the
    image columns the crop spans only (COCO runs go down the columns, image column after column)."""
    h, w = cropped.height, cropped.width
    ch, cw = cropped.mask.shape
    if ch == 0 or cw == 0:
        runs = np.array([h * w], np.int64)
    else:
        columns = np.zeros((h, cw), np.uint8)
        columns[cropped.y0:cropped.y0 + ch] = cropped.mask != 0
        flat = columns.ravel(order="F")
        starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs = np.diff(np.concatenate(([0], starts, [flat.size]))).astype(np.int64)
        if flat[0]:
            runs = np.concatenate(([0], runs))  # runs alternate zeros, ones, ... starting with zeros
        runs[0] += cropped.x0 * h  # the all-zero columns before and after the crop
        after = (w - cropped.x0 - cw) * h
        if len(runs) % 2:
            runs[-1] += after
        elif after:
            runs = np.concatenate((runs, [after]))
    rle = mask_util.frPyObjects({"size": [h, w], "counts": runs.tolist()}, h, w)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def paste_masks_to_rle(boxes, masks, height, width, accurate=True):
    """COCO RLEs of the pasted masks, never a full-image mask in memory."""
    return [encode_cropped_mask(paste_mask_cropped(box, mask, height, width, accurate))
            for box, mask in zip(boxes, masks)]
