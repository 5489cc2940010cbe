"""Small COCO ground truths and results with COCOeval's corner cases, and the resampled set a
bootstrap draw stands for, built the slow obvious way (for plain pycocotools to score)."""
import numpy as np
from pycocotools import mask as mask_util

#: category 6 only ever has crowd regions (COCOeval leaves it out); 8 has no ground truth at all
CATEGORIES = [{"id": c, "name": f"class{c}"} for c in (2, 4, 6, 8)]


def _polygon(x, y, w, h):
    return [x, y, x + w, y, x + w, y + 0.7 * h, x + 0.4 * w, y + h, x, y + h]


def _rle_of(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask):
    """COCO's crowd format: column-major run lengths, starting with a run of zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


def make_case(num_images=30, seed=0, quality=0.8, results_seed=None):
    """(ground truth dict, results list): the ground truth from ``seed``, the detections from
    ``results_seed`` (default: ``seed``), so that several results files can share a ground truth. Image kinds by index: i % 10 == 9 has neither objects
    nor detections, == 8 only detections, == 7 objects but no detection; every fifth image holds a
    crowd region; sizes alternate portrait and landscape. Detections: a jittered copy of each
    object found with probability ``quality`` (sometimes two), random false positives, scores often
    rounded to one decimal so that equal scores occur within and across images."""
    rng = np.random.RandomState(seed)
    det_rng = np.random.RandomState(1000 + (seed if results_seed is None else results_seed))
    images, annotations, results = [], [], []
    for i in range(num_images):
        h, w = (int(rng.randint(48, 64)), int(rng.randint(90, 120))) if i % 2 else \
               (int(rng.randint(90, 120)), int(rng.randint(48, 64)))
        image_id = 5000 + 13 * i
        images.append({"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"})
        objects = []
        if i % 10 not in (8, 9):
            for _ in range(rng.randint(1, 5)):
                bw, bh = int(rng.randint(10, w // 2)), int(rng.randint(10, h // 2))
                x, y = int(rng.randint(0, w - bw)), int(rng.randint(0, h - bh))
                category = int(rng.choice([2, 4]))
                poly = _polygon(x, y, bw, bh)
                mask = mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly], h, w)))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                    "bbox": [float(x), float(y), float(bw), float(bh)], "area": float(mask.sum()),
                                    "iscrowd": 0, "segmentation": [poly]})
                objects.append((x, y, bw, bh, category, mask))
            if i % 5 == 0:  # a crowd region, drawn as COCO does (uncompressed RLE)
                bw, bh = w // 2, h // 3
                x, y = int(rng.randint(0, w - bw)), int(rng.randint(0, h - bh))
                mask = np.zeros((h, w), np.uint8)
                mask[y:y + bh, x:x + bw] = 1
                category = 6 if i % 10 == 0 else int(rng.choice([2, 4]))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                    "bbox": [float(x), float(y), float(bw), float(bh)], "area": float(mask.sum()),
                                    "iscrowd": 1, "segmentation": _uncompressed_rle(mask)})
                objects.append((x, y, bw, bh, category, mask))
        if i % 10 in (7, 9):
            continue
        for x, y, bw, bh, category, mask in objects:
            for _ in range(1 + (det_rng.rand() < 0.3)):  # sometimes a duplicate
                if det_rng.rand() > quality:
                    continue
                dx, dy = int(det_rng.randint(-1, 2)), int(det_rng.randint(-1, 2))
                shifted = np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
                results.append(_result(image_id, category, shifted, det_rng))
        for _ in range(det_rng.randint(1, 4)):  # false positives, some of a category without ground truth
            bw, bh = int(det_rng.randint(6, w // 2)), int(det_rng.randint(6, h // 2))
            x, y = int(det_rng.randint(0, w - bw)), int(det_rng.randint(0, h - bh))
            mask = np.zeros((h, w), np.uint8)
            mask[y:y + bh, x:x + bw] = 1
            results.append(_result(image_id, int(det_rng.choice([2, 4, 8])), mask, det_rng, low=True))
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, results


def _result(image_id, category, mask, rng, low=False):
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    score = rng.uniform(0.05, 0.6) if low else rng.uniform(0.3, 1.0)
    score = round(score, 1) if rng.rand() < 0.6 else round(score, 4)
    return {"image_id": image_id, "category_id": category, "bbox": box, "score": score, "segmentation": _rle_of(mask)}


def resampled_set(gt, results, draw):
    """The ground truth and results of a bootstrap draw (image indices into the images sorted by
    id), the slow obvious way: the draw in dataset order, each drawn image a new image with a new id
    (an image drawn k times is k images, one after another), its objects and detections copied."""
    ids = sorted(img["id"] for img in gt["images"])
    image_of = {img["id"]: img for img in gt["images"]}
    images, annotations, drawn_results = [], [], []
    for new_id, index in enumerate(sorted(draw), start=1):
        old_id = ids[index]
        images.append(dict(image_of[old_id], id=new_id))
        annotations += [dict(a, image_id=new_id) for a in gt["annotations"] if a["image_id"] == old_id]
        drawn_results += [dict(r, image_id=new_id) for r in results if r["image_id"] == old_id]
    annotations = [dict(a, id=k) for k, a in enumerate(annotations, start=1)]
    return {"images": images, "annotations": annotations, "categories": gt["categories"]}, drawn_results
