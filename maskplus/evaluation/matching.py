"""COCOeval's per-image evaluation, done once per results file and IoU type, kept as arrays.

For every image and category: detections by descending score (ties in file order, the first 100),
ground truth with the ignored (crowd regions) last, IoUs (boxes, masks, or masks and boundaries,
see :mod:`maskplus.evaluation.coco_eval`), then at each IoU threshold the greedy matching of
``COCOeval.evaluateImg``: each detection takes the free ground truth of highest IoU (of equal
ones the last), regular ground truth before ignored, crowd regions matchable any number of times,
a detection matched to ignored ground truth ignored. The result, a :class:`MatchTable`, lists
every evaluated detection in COCOeval's accumulation order with its outcome at each threshold;
:mod:`maskplus.evaluation.bootstrap` re-accumulates it for any weighting of the images.

Only the area range "all" (AP, AP50, AP75). Config-free, no model: the ground truth and results
are COCO json files or their contents.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_util

#: COCOeval's defaults
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100
AREA_ALL = (0.0, 1e5 ** 2)
IOU_TYPES = ("bbox", "segm", "boundary")
METRICS = ("AP", "AP50", "AP75")


class ResultsError(ValueError):
    """A results or ground-truth file that cannot be compared; the message names the file."""


# ------------------------------------------------------------------ loading and checking
@dataclass
class GroundTruth:
    """A COCO annotation file as COCOeval reads it: images by sorted id, categories by sorted id,
    annotations (of those images and categories) in file order with their image and category
    indices, whether COCOeval ignores them (crowd regions), and per image and category how many
    it does not ignore."""
    path: str
    image_ids: np.ndarray
    category_ids: list
    category_names: list
    sizes: dict                  # image id -> (height, width)
    annotations: list
    image: np.ndarray            # [G] image index of each annotation
    category: np.ndarray         # [G] category index
    ignored: np.ndarray          # [G] bool
    crowd: np.ndarray            # [G] bool
    not_ignored: np.ndarray      # [images, categories] int

    @property
    def num_images(self):
        return len(self.image_ids)


def load_ground_truth(source, name=None):
    """A :class:`GroundTruth` from a COCO annotation json path or its loaded dict."""
    path = source if isinstance(source, str) else (name or "<ground truth>")
    data = _read_json(source, "ground truth") if isinstance(source, str) else source
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not data["images"]:
        raise ResultsError(f"{path}: not a COCO annotation file with images (no 'images' list, or it is empty).")
    try:
        return _index_ground_truth(path, data)
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(f"{path}: a malformed image, category or annotation ({type(e).__name__}: {e}).") from None


def _index_ground_truth(path, data):
    from maskplus.evaluation.coco_eval import with_unique_annotation_ids
    data = with_unique_annotation_ids(data)
    image_ids = np.array(sorted({int(img["id"]) for img in data["images"]}), dtype=np.int64)
    index_of_image = {int(i): k for k, i in enumerate(image_ids)}
    categories = sorted((int(c["id"]), str(c.get("name", c["id"]))) for c in data.get("categories", []))
    index_of_category = {c: k for k, (c, _) in enumerate(categories)}
    sizes = {int(img["id"]): (int(img["height"]), int(img["width"])) for img in data["images"]}
    anns = [a for a in data.get("annotations", [])  # others COCOeval never looks at either
            if int(a["image_id"]) in index_of_image and int(a["category_id"]) in index_of_category]
    image = np.array([index_of_image[int(a["image_id"])] for a in anns], np.int64)
    category = np.array([index_of_category[int(a["category_id"])] for a in anns], np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    # COCOeval ignores crowd regions and ground truth outside the area range ("all": [0, 1e10])
    area = np.array([float(a["area"]) for a in anns], np.float64)
    ignored = crowd | (area < AREA_ALL[0]) | (area > AREA_ALL[1])
    not_ignored = np.zeros((len(image_ids), len(categories)), np.int64)
    np.add.at(not_ignored, (image[~ignored], category[~ignored]), 1)
    return GroundTruth(path, image_ids, [c for c, _ in categories], [n for _, n in categories], sizes, anns,
                       image, category, ignored, crowd, not_ignored)


def _read_json(path, what):
    if not os.path.isfile(path):
        raise ResultsError(f"{path}: no such {what} file.")
    if os.path.getsize(path) == 0:
        raise ResultsError(f"{path}: the {what} file is empty.")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ResultsError(f"{path}: not valid JSON ({e}).") from None


def load_results(source, gt, name=None):
    """The detections of a COCO results file (path or list), checked against ``gt``: a non-empty
    list of {image_id, category_id, score, bbox and/or segmentation}, of the ground truth's images
    and categories (results of another dataset are named, not scored)."""
    path = source if isinstance(source, str) else (name or "<results>")
    results = _read_json(source, "results") if isinstance(source, str) else source
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ResultsError(f"{path}: not a COCO results file (a JSON list of detections).")
    if not results:
        raise ResultsError(f"{path}: holds no detections (an empty list).")
    missing = [r for r in results if not {"image_id", "category_id", "score"} <= r.keys()
               or not ("bbox" in r or "segmentation" in r)]
    if missing:
        raise ResultsError(f"{path}: {len(missing)} detections lack image_id, category_id, score, or both bbox and "
                           f"segmentation, e.g. {json.dumps(missing[0])[:200]}.")
    try:
        ids = {int(r["image_id"]) for r in results}
        categories = {int(r["category_id"]) for r in results}
        [float(r["score"]) for r in results]
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{path}: an image_id, category_id or score that is not a number ({e}).") from None
    known_images = set(gt.image_ids.tolist())
    strangers = sorted(ids - known_images)
    if strangers:
        raise ResultsError(f"{path}: detections of {len(strangers)} image ids that the ground truth {gt.path} "
                           f"lacks (e.g. {strangers[:5]}): results of another dataset?")
    unknown = sorted(categories - set(gt.category_ids))
    if unknown:
        raise ResultsError(f"{path}: detections of category ids that the ground truth {gt.path} lacks "
                           f"({unknown[:10]}): results of another dataset?")
    return results


def available_iou_types(results):
    """The IoU types a results list can be scored with: bbox when it has boxes, segm and boundary
    when it has masks."""
    types = []
    if any("bbox" in r for r in results):
        types.append("bbox")
    if any("segmentation" in r for r in results):
        types += ["segm", "boundary"]
    return types


# ------------------------------------------------------------------ regions and IoUs
def _to_rle(segm, height, width):
    """A compressed RLE of a COCO segmentation (polygons, uncompressed or compressed RLE), as
    pycocotools' annToRLE makes it."""
    if isinstance(segm, list):
        return mask_util.merge(mask_util.frPyObjects(segm, height, width))
    if isinstance(segm["counts"], list):
        return mask_util.frPyObjects(segm, height, width)
    return segm


def _boundary_rles(rles, sizes, dilation_ratio):
    """The boundary region (see coco_eval.boundary_region) of each RLE as an RLE: faster-coco-eval's
    C++ implementation when installed, else ours with OpenCV (one erosion per region)."""
    try:
        from faster_coco_eval.core import mask as faster_mask
    except ImportError:
        faster_mask = None
    if faster_mask is not None:
        anns = [{"image_id": k, "segmentation": _str_counts(r)} for k, r in enumerate(rles)]
        faster_mask.calculateRleForAllAnnotations(anns, {k: s for k, s in enumerate(sizes)}, True, True,
                                                  dilation_ratio, min(os.cpu_count() or 1, 4))
        return [a["boundary"] for a in anns]
    from maskplus.evaluation.coco_eval import boundary_region
    return [mask_util.encode(np.asfortranarray(boundary_region(mask_util.decode(r), dilation_ratio)))
            for r in rles]


def _str_counts(rle):
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


class _Regions:
    """What an IoU type compares, for the ground truths and detections given (lists of dicts):
    boxes, mask RLEs, or mask and boundary RLEs (the boundary IoU replaces the mask IoU where it is
    lower, crowd regions excepted). Indexed by position in those lists."""

    def __init__(self, iou_type, gt, gt_anns, detections):
        from maskplus.evaluation.coco_eval import BOUNDARY_DILATION_RATIO
        self.iou_type = iou_type
        if iou_type == "bbox":
            self.gt = [a["bbox"] for a in gt_anns]
            self.dt = [d["bbox"] for d in detections]
            return
        gt_sizes = [gt.sizes[int(a["image_id"])] for a in gt_anns]
        dt_sizes = [gt.sizes[int(d["image_id"])] for d in detections]
        self.gt = [_to_rle(a["segmentation"], *s) for a, s in zip(gt_anns, gt_sizes)]
        self.dt = [_to_rle(d["segmentation"], *s) for d, s in zip(detections, dt_sizes)]
        if iou_type == "boundary":
            self.gt_boundary = _boundary_rles(self.gt, gt_sizes, BOUNDARY_DILATION_RATIO)
            self.dt_boundary = _boundary_rles(self.dt, dt_sizes, BOUNDARY_DILATION_RATIO)

    def ious(self, dets, gts, crowd):
        """[D, G] IoUs of detections ``dets`` and ground truths ``gts`` (positions), COCOeval's rule
        for crowd regions (``crowd`` [G] bool): the intersection over the detection's area."""
        crowd = [int(c) for c in crowd]
        ious = np.asarray(mask_util.iou([self.dt[d] for d in dets], [self.gt[g] for g in gts], crowd),
                          np.float64).reshape(len(dets), len(gts))
        if self.iou_type == "boundary":
            regular = ~np.asarray(crowd, bool)
            if regular.any():
                gb = [self.gt_boundary[g] for g, r in zip(gts, regular) if r]
                b = np.asarray(mask_util.iou([self.dt_boundary[d] for d in dets], gb, [0] * len(gb)),
                               np.float64).reshape(len(dets), len(gb))
                ious[:, regular] = np.minimum(ious[:, regular], b)
        return ious


# ------------------------------------------------------------------ per-image matching
def match_detections(ious, gt_ignored, gt_crowd, thresholds=IOU_THRESHOLDS):
    """COCOeval's greedy matching of one image and category at every IoU threshold.

    Args:
        ious: [D, G], detections by descending score, ground truth with the ignored ones last.
        gt_ignored, gt_crowd: [G] bool.
    Returns:
        (matched, ignored): [T, D] bool each; a detection matched to ignored ground truth is ignored.
    """
    ious = np.asarray(ious, np.float64)
    num_t, (num_d, num_g) = len(thresholds), ious.shape
    matched = np.zeros((num_t, num_d), bool)
    ignored = np.zeros((num_t, num_d), bool)
    if num_d == 0 or num_g == 0:
        return matched, ignored
    gt_ignored, gt_crowd = np.asarray(gt_ignored, bool), np.asarray(gt_crowd, bool)
    num_regular = int(np.count_nonzero(~gt_ignored))
    assert not gt_ignored[:num_regular].any(), "ignored ground truth must come last"
    limit = np.minimum(np.asarray(thresholds, np.float64), 1 - 1e-10)[:, None]
    taken = np.zeros((num_t, num_g), bool)
    rows = np.arange(num_t)
    # a detection under the lowest threshold with every ground truth matches nothing anywhere
    for d in np.flatnonzero(ious.max(axis=1) >= limit.min()):
        free = ~(taken & ~gt_crowd)
        candidate = np.where(free & (ious[d][None, :] >= limit), ious[d][None, :], -1.0)
        best = np.full(num_t, -1)
        for lo, hi in ((0, num_regular), (num_regular, num_g)):  # regular ground truth first
            if hi == lo:
                continue
            part = candidate[:, lo:hi]
            # the highest IoU; of equal ones the last (COCOeval replaces on >=)
            j = hi - 1 - np.argmax(part[:, ::-1], axis=1)
            found = (best < 0) & (part[rows, j - lo] >= 0)
            best[found] = j[found]
        hit = best >= 0
        matched[hit, d] = True
        ignored[hit, d] = gt_ignored[best[hit]]
        taken[rows[hit], best[hit]] = True
    return matched, ignored


@dataclass
class MatchTable:
    """One results file matched to the ground truth with one IoU type: every evaluated detection
    in accumulation order (category, descending score, image, rank in its image), whether it is a
    true positive or ignored at each IoU threshold, and the ground truth each image brings."""
    iou_type: str
    num_images: int
    category_ids: list
    image: np.ndarray          # [E] image index
    category: np.ndarray       # [E] category index
    score: np.ndarray          # [E]
    true_positive: np.ndarray  # [T, E] bool
    ignored: np.ndarray        # [T, E] bool (matched to a crowd region; neither true nor false positive)
    not_ignored: np.ndarray    # [images, categories] ground truth count
    cache: dict = field(default_factory=dict, repr=False, compare=False)  # what the bootstrap derives

    @property
    def num_categories(self):
        return len(self.category_ids)


def match_results(gt, results, iou_type):
    """The :class:`MatchTable` of a results list (see :func:`load_results`) with ``iou_type``.

    Only an image and category holding both ground truth and detections needs IoUs and matching;
    every other detection is a false positive, handled as arrays."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    needed = "bbox" if iou_type == "bbox" else "segmentation"
    dets = [r for r in results if needed in r]
    if not dets:
        raise ResultsError(f"no detection has a {needed} to score with {iou_type}.")
    index_of_image = {int(i): k for k, i in enumerate(gt.image_ids)}
    index_of_category = {c: k for k, c in enumerate(gt.category_ids)}
    num_k, num_t = len(gt.category_ids), len(IOU_THRESHOLDS)
    image = np.array([index_of_image[int(r["image_id"])] for r in dets], np.int64)
    category = np.array([index_of_category[int(r["category_id"])] for r in dets], np.int64)
    score = np.array([float(r["score"]) for r in dets], np.float64)
    # COCOeval: per image and category, by descending score (ties in file order), the first 100
    order = np.lexsort((np.arange(len(dets)), -score, category, image))
    pair = (image * num_k + category)[order]
    first = np.searchsorted(pair, pair, side="left")
    rank = np.arange(len(order)) - first
    keep = rank < MAX_DETECTIONS
    order, pair, rank = order[keep], pair[keep], rank[keep]

    gt_pair = gt.image * num_k + gt.category
    gt_order = np.lexsort((np.arange(len(gt_pair)), gt.ignored, gt_pair))  # ignored ones last
    gt_pair_sorted = gt_pair[gt_order]
    both = np.intersect1d(pair, gt_pair_sorted)
    dt_lo, dt_hi = np.searchsorted(pair, both, "left"), np.searchsorted(pair, both, "right")
    gt_lo, gt_hi = np.searchsorted(gt_pair_sorted, both, "left"), np.searchsorted(gt_pair_sorted, both, "right")

    # regions only of what is compared
    dt_used = np.concatenate([np.arange(lo, hi) for lo, hi in zip(dt_lo, dt_hi)] or [np.zeros(0, np.int64)])
    gt_used = np.concatenate([np.arange(lo, hi) for lo, hi in zip(gt_lo, gt_hi)] or [np.zeros(0, np.int64)])
    regions = _Regions(iou_type, gt, [gt.annotations[j] for j in gt_order[gt_used]],
                       [dets[j] for j in order[dt_used]])
    dt_slot = np.full(len(order), -1)
    dt_slot[dt_used] = np.arange(len(dt_used))
    gt_slot = np.full(len(gt_order), -1)
    gt_slot[gt_used] = np.arange(len(gt_used))

    matched = np.zeros((num_t, len(order)), bool)
    ignored = np.zeros((num_t, len(order)), bool)
    for dl, dh, gl, gh in zip(dt_lo, dt_hi, gt_lo, gt_hi):
        g = gt_order[gl:gh]
        ious = regions.ious(dt_slot[dl:dh], gt_slot[gl:gh], gt.crowd[g])
        matched[:, dl:dh], ignored[:, dl:dh] = match_detections(ious, gt.ignored[g], gt.crowd[g])
    # an unmatched detection outside the area range is ignored (never, for "all")
    area = np.array([_detection_area(dets[j]) for j in order], np.float64)
    ignored |= ~matched & ((area < AREA_ALL[0]) | (area > AREA_ALL[1]))[None, :]

    image, category, score = image[order], category[order], score[order]
    acc = np.lexsort((rank, image, -score, category))  # COCOeval's accumulation order
    return MatchTable(iou_type, gt.num_images, list(gt.category_ids), image[acc], category[acc], score[acc],
                      (matched & ~ignored)[:, acc], ignored[:, acc], gt.not_ignored)


def _detection_area(det):
    # COCO's loadRes: a detection with a box has the box's area, else its mask's
    if "bbox" in det:
        return float(det["bbox"][2]) * float(det["bbox"][3])
    segm = det["segmentation"]
    return float(mask_util.area(segm)) if isinstance(segm, dict) and not isinstance(segm["counts"], list) else 0.0


def match_file(gt, results_path, iou_types=IOU_TYPES):
    """{iou type: MatchTable} of a results file for the IoU types asked for that it can be scored with."""
    results = load_results(results_path, gt)
    have = available_iou_types(results)
    tables = {}
    for t in iou_types:
        if t in have:
            try:
                tables[t] = match_results(gt, results, t)
            except ResultsError as e:
                raise ResultsError(f"{results_path}: {e}") from None
            except Exception as e:  # pycocotools' own errors on a malformed box or mask
                raise ResultsError(f"{results_path}: a detection's {'box' if t == 'bbox' else 'mask'} cannot be "
                                   f"scored ({type(e).__name__}: {e}).") from None
    return tables
