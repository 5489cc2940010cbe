"""Reading images: one EXIF orientation rule for validation, training, evaluation and predict.py.

A JPEG may store its pixels sideways with an EXIF ``Orientation`` tag saying how to turn them for
display. ``cv2.imread`` (which the Tensorpack example uses), COCO tools and Detectron2 apply the tag,
so annotations normally refer to the *displayed* (EXIF-rotated) pixels. Some converters annotate
the stored pixels instead. The json's ``width``/``height`` tell the two apart, so the rule is:

* the json's size equals the rotated size (or no json, as in ``predict.py``): the tag is applied;
* the json's size equals only the stored size (orientations 5-8 swap width and height): the
  stored pixels are used, unrotated, because that is what the coordinates refer to;
* neither: the tag is applied, and validation reports the size mismatch.

Orientations 2-4 (flips, half turn) keep the size, so the size cannot tell: the tag is applied.
"""
import os
import threading
import warnings
from collections import namedtuple

import cv2
import numpy as np

__all__ = ["ImageHeader", "read_header", "applies_orientation", "read_image", "apply_orientation",
           "opencv_max_pixels"]

ORIENTATION_TAG = 0x0112
SWAPS_AXES = frozenset({5, 6, 7, 8})



class ImageHeader(namedtuple("ImageHeader", ["width", "height", "orientation"])):
    """The stored (unrotated) size of an image file and its EXIF orientation (1 = none)."""
    __slots__ = ()

    @property
    def stored_size(self):
        return self.width, self.height

    @property
    def displayed_size(self):
        """(width, height) once the orientation is applied."""
        return (self.height, self.width) if self.orientation in SWAPS_AXES else (self.width, self.height)


_PIL_GUARD_LOCK = threading.Lock()


def read_header(path):
    """:class:`ImageHeader` from the file's header alone (no pixels decoded). PIL's
    decompression-bomb guard is off here: nothing is decoded, and a 200-megapixel image is large,
    not corrupt. Raises ``OSError`` (or ``ValueError``) when PIL cannot identify the file."""
    from PIL import Image
    with _PIL_GUARD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(path) as im:
                width, height = im.size
                try:
                    orientation = im.getexif().get(ORIENTATION_TAG, 1)
                except Exception:  # a damaged EXIF block: the pixels may still be fine
                    orientation = 1
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return ImageHeader(int(width), int(height), orientation)


def applies_orientation(header, json_size=None):
    """Whether the EXIF orientation is applied under the module's rule; ``json_size`` is the
    json's ``(width, height)`` (None: no json, the tag is applied)."""
    if header.orientation == 1:
        return False
    if json_size is None:
        return True
    json_size = tuple(int(v) for v in json_size)
    return not (json_size == header.stored_size and json_size != header.displayed_size)


def apply_orientation(img, orientation):
    """The stored pixels turned for display as EXIF ``orientation`` (1-8) says."""
    if orientation == 2:
        return img[:, ::-1]
    if orientation == 3:
        return img[::-1, ::-1]
    if orientation == 4:
        return img[::-1]
    if orientation == 5:  # transpose: mirror about the main diagonal
        return img.swapaxes(0, 1)
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:  # transverse: mirror about the other diagonal
        return img[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def read_image(path, json_size=None):
    """BGR uint8 H x W x 3 image under the orientation rule, or None if the file cannot be decoded
    (as ``cv2.imread``). ``json_size``: the json's ``(width, height)`` of this image, if any."""
    try:
        header = read_header(path)
    except Exception:  # a format PIL does not know may still be one OpenCV decodes
        header = ImageHeader(0, 0, 1)
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or not applies_orientation(header, json_size):
        return img
    return np.ascontiguousarray(apply_orientation(img, header.orientation))


def opencv_max_pixels():
    """The most pixels ``cv2.imread`` decodes (``CV_IO_MAX_IMAGE_PIXELS``, default 2^30)."""
    try:
        return int(os.environ.get("CV_IO_MAX_IMAGE_PIXELS", 1 << 30))
    except ValueError:
        return 1 << 30
