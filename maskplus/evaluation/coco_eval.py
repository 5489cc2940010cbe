"""COCO evaluation: results in COCO format, bbox / segm AP, and Boundary AP.

Boundary AP (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation
Evaluation", CVPR 2021) replaces the mask IoU of segm AP by min(mask IoU, boundary IoU), where a
mask's boundary region is the mask minus its erosion by d = max(1, round(0.02 x image diagonal))
pixels (the image border counts as outside, so a mask cut by the border has a boundary there).

Backends: faster-coco-eval when installed (its ``boundary`` iouType implements exactly the
above), pycocotools otherwise (with our own boundary IoU on the same definition). Both give the
same numbers; a test checks it.
"""
import contextlib
import copy
import hashlib
import io
import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from maskplus.data.validate import annotation_id_problems
from maskplus.evaluation.paste import CroppedMask, encode_cropped_mask

METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
BOUNDARY_DILATION_RATIO = 0.02


def detections_to_coco_results(image_id, boxes, scores, labels, masks, label_to_category_id):
    """COCO result dicts of one image. ``masks``: None, or per detection an RLE dict, a
    :class:`~maskplus.evaluation.paste.CroppedMask` or a full-image binary array."""
    results = []
    for k, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x1, y1, x2, y2 = [float(v) for v in box]
        res = {"image_id": int(image_id), "category_id": int(label_to_category_id[int(label)]),
               "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
               "score": round(float(score), 4)}
        if masks is not None:
            mask = masks[k]
            if isinstance(mask, CroppedMask):
                mask = encode_cropped_mask(mask)
            elif not isinstance(mask, dict):
                mask = mask_util.encode(np.asfortranarray(np.asarray(mask, np.uint8)[:, :, None]))[0]
            if isinstance(mask["counts"], bytes):
                mask = dict(mask, counts=mask["counts"].decode("ascii"))
            res["segmentation"] = mask
        results.append(res)
    return results


def metrics_path(results_json):
    """Where the machine-readable metrics of a results file are written (predict.py --evaluate):
    the dataset, its annotation file, the model, a hash of the results, the metrics."""
    root, _ = os.path.splitext(results_json)
    return root + "-metrics.json"


def file_sha1(path):
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recorded_evaluation(results_json):
    """The metrics json written with a results file (:func:`metrics_path`), or None when there is
    none or it describes other contents (its hash of the results differs)."""
    try:
        with open(metrics_path(results_json)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("results_sha1") != file_sha1(results_json):
        return None
    return info


def boundary_region(binary_mask, dilation_ratio=BOUNDARY_DILATION_RATIO):
    """Pixels of the mask within d of its contour (d from the image diagonal), image border outside."""
    h, w = binary_mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h * h + w * w))))
    padded = cv2.copyMakeBorder(binary_mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return binary_mask.astype(np.uint8) - eroded


def boundary_iou(mask_a, mask_b, dilation_ratio=BOUNDARY_DILATION_RATIO):
    """Boundary IoU of two binary masks of the same image."""
    a, b = boundary_region(mask_a, dilation_ratio), boundary_region(mask_b, dilation_ratio)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _load_results(results):
    if isinstance(results, str):
        with open(results) as f:
            results = json.load(f)
    if not isinstance(results, (list, tuple)) or not all(isinstance(r, dict) for r in results):
        raise ValueError("COCO results must be a list of dicts ({image_id, category_id, bbox, score, ...})")
    return list(results)


class ResultsMismatch(ValueError):
    """A results file that does not fit the dataset it is scored against; the message counts each
    kind of fault and names the first few."""


#: how many ids or entries a results problem names
SHOWN = 5


def _named(items):
    shown = ", ".join(str(i) for i in items[:SHOWN])
    return shown + (f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else "")


def _entry(k, result):
    return f"#{k} (image {result.get('image_id')!r})"


def _is_box(box):
    return isinstance(box, (list, tuple)) and len(box) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)


def _mask_size_problem(segmentation, image):
    """Why ``segmentation`` is no RLE mask of ``image`` (None if ``image`` is unknown or it is one)."""
    if not isinstance(segmentation, dict) or "counts" not in segmentation or "size" not in segmentation:
        return "no RLE"
    if image is None or "height" not in image or "width" not in image:
        return None
    size = list(segmentation["size"])
    if size != [image["height"], image["width"]]:
        return f"mask {size[0]} x {size[1]} for a {image['height']} x {image['width']} image"
    return None


def results_problems(gt_dataset, results, iou_types):
    """Why ``results`` cannot be scored against ``gt_dataset`` as ``iou_types``: one sentence per
    kind of fault (ids of images or categories the dataset lacks; entries without the fields of an
    IoU type, or with a mask of another size than their image), each counted with its first few
    ids or entries named. Empty when they fit."""
    images = {img.get("id"): img for img in gt_dataset.get("images", [])}
    categories = [c.get("id") for c in gt_dataset.get("categories", [])]
    known_categories = set(categories)
    foreign_images, foreign_categories = {}, {}
    no_score, no_box, no_mask, wrong_size = [], [], [], []
    for k, r in enumerate(results):
        image = images.get(r.get("image_id"))
        if image is None:
            foreign_images.setdefault(r.get("image_id"), []).append(k)
        if r.get("category_id") not in known_categories:
            foreign_categories.setdefault(r.get("category_id"), []).append(k)
        if not isinstance(r.get("score"), (int, float)) or isinstance(r.get("score"), bool):
            no_score.append(_entry(k, r))
        if "bbox" in iou_types and not _is_box(r.get("bbox")):
            no_box.append(_entry(k, r))
        if "segm" in iou_types:
            problem = _mask_size_problem(r.get("segmentation"), image)
            if problem == "no RLE":
                no_mask.append(_entry(k, r))
            elif problem:
                wrong_size.append(f"{_entry(k, r)}: {problem}")
    n, out = len(results), []
    if foreign_images:
        count = sum(len(v) for v in foreign_images.values())
        out.append(f"{count} of {n} results are for images the dataset lacks (image id{'s' * (len(foreign_images) > 1)} "
                   f"{_named([repr(i) for i in foreign_images])})")
    if foreign_categories:
        count = sum(len(v) for v in foreign_categories.values())
        out.append(f"{count} of {n} results are for categories the dataset lacks (category id"
                   f"{'s' * (len(foreign_categories) > 1)} {_named([repr(i) for i in foreign_categories])}; the "
                   f"dataset's are {_named(categories)})")
    if no_score:
        out.append(f"{len(no_score)} of {n} results have no numeric 'score': {_named(no_score)}")
    if no_box:
        out.append(f"{len(no_box)} of {n} results have no 'bbox' [x, y, width, height] to score as bbox: "
                   f"{_named(no_box)}")
    if no_mask:
        out.append(f"{len(no_mask)} of {n} results have no 'segmentation' RLE ({{'size', 'counts'}}) to score as "
                   f"segm: {_named(no_mask)} (results of boxes only are scored as bbox with MODE_MASK=False)")
    if wrong_size:
        out.append(f"{len(wrong_size)} of {n} results have a mask of another size than their image (height x "
                   f"width): {_named(wrong_size)}")
    return out


def _gt_dataset(coco_gt):
    if isinstance(coco_gt, str):
        with open(coco_gt) as f:
            return json.load(f)
    return coco_gt.dataset


def with_unique_annotation_ids(gt_dataset, warn=None):
    """``gt_dataset`` itself when its annotation ids are unique positive integers; otherwise a
    copy whose annotations are renumbered 1..N in file order, with one warning naming the counts."""
    annotations = gt_dataset.get("annotations", [])
    duplicates, non_positive = annotation_id_problems(annotations)
    if not (duplicates or non_positive):
        return gt_dataset
    if warn is not None:
        parts = ([f"{len(duplicates)} duplicate"] if duplicates else []) + \
                ([f"{len(non_positive)} zero, negative or non-integer"] if non_positive else [])
        warn(f"The ground truth has {' and '.join(parts)} annotation ids: renumbering its {len(annotations)} "
             f"annotations 1..{len(annotations)} for scoring (COCO evaluation needs unique ids > 0; "
             f"unrenumbered, perfect detections would score less than 100 AP).")
    renumbered = dict(gt_dataset)
    renumbered["annotations"] = [dict(ann, id=k) for k, ann in enumerate(annotations, start=1)]
    return renumbered


def _have_faster():
    try:
        import faster_coco_eval  # noqa: F401  (only its presence matters here)
        return True
    except ImportError:
        return False


def _evaluate_faster(gt_dataset, results, iou_type):
    from faster_coco_eval import COCO as FasterCOCO, COCOeval_faster
    with contextlib.redirect_stdout(io.StringIO()):
        gt = FasterCOCO(copy.deepcopy(gt_dataset))
        dt = gt.loadRes(copy.deepcopy(results))
        ev = COCOeval_faster(gt, dt, iouType=iou_type, print_function=lambda *a, **k: None,
                             boundary_dilation_ratio=BOUNDARY_DILATION_RATIO)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


def _evaluate_pycocotools(gt_dataset, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dataset)
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(results))
        if iou_type == "boundary":
            ev = _BoundaryCOCOeval(gt, dt, "segm")
        else:
            ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:6]]


class _BoundaryCOCOeval(COCOeval):
    """segm COCOeval whose IoU is min(mask IoU, boundary IoU) for non-crowd ground truth."""

    def computeIoU(self, img_id, cat_id):
        ious = super().computeIoU(img_id, cat_id)
        if len(ious) == 0:
            return ious
        p = self.params
        gt = self._gts[img_id, cat_id] if p.useCats else [g for c in p.catIds for g in self._gts[img_id, c]]
        dt = self._dts[img_id, cat_id] if p.useCats else [d for c in p.catIds for d in self._dts[img_id, c]]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[:p.maxDets[-1]]
        dt_masks = [mask_util.decode(dt[i]["segmentation"]) for i in order]
        out = np.array(ious, dtype=np.float64)
        for j, g in enumerate(gt):
            if g.get("iscrowd", 0):
                continue
            gt_mask = mask_util.decode(self.cocoGt.annToRLE(g))
            for i, dt_mask in enumerate(dt_masks):
                out[i, j] = min(out[i, j], boundary_iou(gt_mask, dt_mask))
        return out


def evaluate_coco(coco_gt, results, iou_types=("bbox", "segm"), boundary=True, backend="auto"):
    """{"bbox/AP": ..., "segm/AP50": ..., "boundary/APl": ...} as fractions.

    Args:
        coco_gt: a pycocotools COCO object or the path of an annotation json.
        results: a list of COCO result dicts or the path of a results json.
        boundary: also compute Boundary AP when "segm" is evaluated.
        backend: "faster" (faster-coco-eval), "pycocotools", or "auto" (faster when installed).
    """
    from maskplus import compat  # noqa: F401  (its shims before Tensorpack imports TensorFlow)
    from tensorpack.utils import logger
    gt_dataset = with_unique_annotation_ids(_gt_dataset(coco_gt), warn=logger.warn)
    results = _load_results(results)
    problems = results_problems(gt_dataset, results, iou_types)
    if problems:
        raise ResultsMismatch("; ".join(problems) + ".")
    if backend == "auto":
        backend = "faster" if _have_faster() else "pycocotools"
    run = _evaluate_faster if backend == "faster" else _evaluate_pycocotools
    kinds = list(iou_types) + (["boundary"] if boundary and "segm" in iou_types else [])
    metrics = {}
    for kind in kinds:
        needed = "segmentation" if kind != "bbox" else "bbox"
        usable = [r for r in results if needed in r]
        if not usable:
            logger.warn(f"No {kind} results to evaluate: {kind} AP is 0.")
            stats = [0.0] * 6
        else:
            stats = run(gt_dataset, usable, kind)
        # COCOeval reports -1 where a metric is undefined (e.g. APs with no small object)
        metrics.update({f"{kind}/{name}": (v if v >= 0 else None) for name, v in zip(METRICS, stats)})
    return metrics


def format_metrics_table(metrics):
    """A table with a row per evaluated kind (bbox, segm, boundary) and AP..APl columns, x100."""
    rows = []
    for kind in ("bbox", "segm", "boundary"):
        if f"{kind}/AP" in metrics:
            values = [metrics[f"{kind}/{m}"] for m in METRICS]
            rows.append([kind] + ["-" if v is None else f"{100 * v:.2f}" for v in values])
    return tabulate(rows, headers=["IoU type"] + METRICS, tablefmt="github", disable_numparse=True)
