"""Dataset validation: every problem of a COCO-format dataset, found in one pass, named.

Problems are either *errors* (training cannot sensibly start: duplicate image ids, no usable
image) or *skips* (the annotation or image is left out, counted, and reported with its ids).
:func:`annotation_problem` is the single definition of a usable annotation, shared with the
training-record loader, so what validation reports is exactly what training drops.
"""
import collections
import os

import numpy as np

from maskplus.data.image_io import SWAPS_AXES, applies_orientation, opencv_max_pixels, read_header

MAX_EXAMPLES = 5  # ids listed per kind of problem in the summary


def _polygon_area(flat):
    x, y = flat[0::2], flat[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def annotation_problem(ann, width, height, category_ids, mode_mask, absolute=True):
    """Why an annotation cannot be a training target, or None if it can (crowd ones included)."""
    if ann.get("ignore", 0) == 1:
        return "marked ignore"
    if ann.get("category_id") not in category_ids:
        return "category_id not among the json's categories"
    try:
        box = np.asarray(ann.get("bbox", []), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return "bbox is not 4 numbers"
    if box.size != 4:
        return "bbox is not 4 numbers"
    if not np.all(np.isfinite(box)):
        return "bbox has NaN/inf coordinates"
    x, y, w, h = box
    if not absolute:
        x, w, y, h = x * width, w * width, y * height, h * height
    if w <= 0 or h <= 0:
        return "bbox with zero or negative area"
    if min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0):
        return "bbox outside the image"
    # the example drops annotations whose 'area' field is at most 1 pixel (absent: the box's area;
    # with fractional coordinates the field's unit is unknown, so it is not used)
    if absolute:
        area = ann.get("area", w * h)
        try:
            area = float(area)
        except (TypeError, ValueError):
            return "area is not a number"
        if not area > 1:
            return "area of at most 1 pixel"
    if not mode_mask or int(ann.get("iscrowd", 0)) == 1:
        return None
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        size = seg.get("size")
        if size is not None and list(size) != [height, width]:
            return f"RLE of size {list(size)} for an image of {height}x{width}"
        return "non-crowd segmentation is RLE, not polygons"
    if not isinstance(seg, list) or not seg:
        return "missing segmentation"
    usable = []
    for poly in seg:
        try:
            flat = np.asarray(poly, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            continue
        if flat.size % 2 or flat.size < 6 or not np.all(np.isfinite(flat)):
            continue
        usable.append(flat)
    if not usable:
        return "polygon with fewer than 3 points"
    if all(_polygon_area(p) <= 0 for p in usable):
        return "polygon with zero area"
    return None


def annotation_id_problems(annotations):
    """(duplicates, non_positive): the ids of annotations that share their id with an earlier
    one, and those whose id is not a positive integer. COCO scoring needs unique ids > 0: both
    backends look a ground-truth annotation up by its id (a duplicate finds another image's
    annotation) and mark "unmatched" with id 0 (an annotation of id 0 is never matched)."""
    seen, duplicates, non_positive = set(), [], []
    for ann in annotations:
        ann_id = ann.get("id")
        if not (isinstance(ann_id, (int, np.integer)) and not isinstance(ann_id, bool) and ann_id > 0):
            non_positive.append(ann_id)
        elif ann_id in seen:
            duplicates.append(ann_id)
        seen.add(ann_id)
    return duplicates, non_positive


class ValidationReport:
    """Problems by kind: ``skipped_images``/``skipped_annotations`` map a reason to the ids
    concerned (``image_files``: a skipped image's file name by id); ``errors`` are messages that
    must stop training."""

    def __init__(self, name):
        self.name = name
        self.errors = []
        self.skipped_images = collections.defaultdict(list)
        self.skipped_annotations = collections.defaultdict(list)
        self.image_files = {}
        self.crowd = 0
        self.num_images = 0
        #: annotation ids shared with an earlier annotation / not a positive integer (any split:
        #: training does not use them, COCO scoring needs them unique and > 0)
        self.duplicate_annotation_ids = []
        self.non_positive_annotation_ids = []
        #: image ids whose EXIF orientation turns width and height: read rotated / as stored
        self.exif_rotated = []
        self.exif_as_stored = []

    @property
    def bad_image_ids(self):
        return {i for ids in self.skipped_images.values() for i in ids}

    def summary(self):
        lines = [f"Dataset '{self.name}': {self.num_images} images checked."]
        for title, table in (("images", self.skipped_images), ("annotations", self.skipped_annotations)):
            total = sum(len(v) for v in table.values())
            if total:
                lines.append(f"  skipped {total} {title}:")
                for reason, ids in sorted(table.items()):
                    names = [f"{i} ({self.image_files[i]})" if title == "images" and i in self.image_files
                             else str(i) for i in ids[:MAX_EXAMPLES]]
                    shown = ", ".join(names) + (", ..." if len(ids) > MAX_EXAMPLES else "")
                    kind = "image id" if title == "images" else "annotation id"
                    lines.append(f"    {len(ids)} x {reason} ({kind}s {shown})")
        if self.crowd:
            lines.append(f"  {self.crowd} crowd annotations kept as ignored regions (never mask targets).")
        bad_ids = self.duplicate_annotation_ids + self.non_positive_annotation_ids
        if bad_ids:
            parts = [f"{len(ids)} {what} ({_examples(ids)})" for what, ids in
                     (("duplicate", self.duplicate_annotation_ids),
                      ("zero, negative or non-integer", self.non_positive_annotation_ids)) if ids]
            lines.append(f"  annotation ids: {' and '.join(parts)}; COCO evaluation renumbers the annotations "
                         f"1..N (unique ids > 0 are needed to score them right); training does not use the ids.")
        if self.exif_rotated or self.exif_as_stored:
            lines.append(f"  EXIF orientation: {len(self.exif_rotated)} images read rotated (the json's width/height "
                         f"are the rotated size), {len(self.exif_as_stored)} read as stored (the json's width/height "
                         f"are the stored size{'; image ids ' + _examples(self.exif_as_stored) if self.exif_as_stored else ''}).")
        lines += [f"  ERROR: {e}" for e in self.errors]
        return "\n".join(lines)


def _examples(ids):
    return ", ".join(str(i) for i in ids[:MAX_EXAMPLES]) + (", ..." if len(ids) > MAX_EXAMPLES else "")


def _image_problem(path, width, height):
    """(why an image file cannot be used or None, its :class:`ImageHeader`). Reads
    the header only, so that checking COCO's 118k images takes seconds; damage past the header is
    caught (and skipped) when loading. The size check follows :mod:`maskplus.data.image_io`'s
    orientation rule, as the loaders do."""
    if not os.path.isfile(path):
        return "image file missing", None
    try:
        header = read_header(path)
    except Exception:
        return "unreadable or corrupt image", None
    if header.width * header.height > opencv_max_pixels():
        return (f"image too large to decode (over OpenCV's {opencv_max_pixels()} pixels; "
                f"raise CV_IO_MAX_IMAGE_PIXELS)"), header
    if (width, height) not in (header.displayed_size, header.stored_size):
        return "image size differs from the json's width/height (with or without EXIF rotation)", header
    return None, header


def validate_dataset(dataset, mode_mask=True, absolute=True, check_images=True):
    """A :class:`ValidationReport` of a :class:`maskplus.data.coco.COCOFormatDataset`."""
    report = ValidationReport(dataset.name)
    raw_images = dataset.coco.dataset.get("images", [])
    report.num_images = len(raw_images)
    counts = collections.Counter(img.get("id") for img in raw_images)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        report.errors.append(f"{dataset.json_path}: duplicate image ids {duplicates[:MAX_EXAMPLES]}"
                             f"{' ...' if len(duplicates) > MAX_EXAMPLES else ''} (each image needs a unique id).")
    images = {img["id"]: img for img in raw_images}
    category_ids = set(dataset.category_ids)
    usable_images = set()
    for img_id, img in images.items():
        width, height = img.get("width"), img.get("height")
        if check_images:
            path = os.path.join(dataset.image_dir, img.get("file_name", ""))
            problem, header = _image_problem(path, width, height)
            if problem:
                report.skipped_images[f"{problem} under {dataset.image_dir}"].append(img_id)
                report.image_files[img_id] = img.get("file_name", "")
                continue
            if header.orientation in SWAPS_AXES and header.width != header.height:
                rotated = applies_orientation(header, (width, height))
                (report.exif_rotated if rotated else report.exif_as_stored).append(img_id)
        for ann in dataset.coco.imgToAnns.get(img_id, []):
            problem = annotation_problem(ann, width, height, category_ids, mode_mask, absolute)
            if problem:
                report.skipped_annotations[problem].append(ann.get("id"))
            elif int(ann.get("iscrowd", 0)) == 1:
                report.crowd += 1
            else:
                usable_images.add(img_id)
    report.duplicate_annotation_ids, report.non_positive_annotation_ids = annotation_id_problems(
        dataset.coco.dataset.get("annotations", []))
    orphans = [a.get("id") for a in dataset.coco.dataset.get("annotations", []) if a.get("image_id") not in images]
    if orphans:
        report.skipped_annotations["image_id not among the json's images"].extend(orphans)
    if not usable_images:
        report.errors.append(f"Dataset '{dataset.name}' ({dataset.json_path}) has no usable image: "
                             f"every image is missing, unreadable or without a usable annotation.")
    return report

