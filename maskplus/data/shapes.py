"""A generated instance-segmentation dataset in COCO format, for the CPU demo and the tests.

Each image has 1-6 shapes (circle, rotated rectangle, triangle, star) of sizes from ~12 px to half
the image, in random colours, on a textured background (smooth colour gradient, low-frequency
blotches, pixel noise) crossed by a few distractor lines. Shapes are drawn in order, so later
ones hide earlier ones: an instance's mask is what stays visible, and an instance left with
almost nothing visible is dropped. Segmentations are polygons traced from the visible masks.

Generation is deterministic: image ``i`` of a split is drawn from its own generator seeded with
``(seed, split, i)``, so the same seed gives byte-identical files.
"""
import json
import os
import sys

import cv2
import numpy as np

CATEGORIES = ["circle", "rectangle", "triangle", "star"]
SPLITS = {"train2017": 0, "val2017": 1}
MIN_VISIBLE_PIXELS = 30   # an instance with fewer visible pixels is dropped
MIN_VISIBLE_FRACTION = 0.2  # ... or with less than this fraction of itself visible


def _background(rng, h, w):
    """Smooth two-colour gradient + low-frequency blotches + pixel noise, float32 BGR."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    blotches = cv2.resize(rng.uniform(-40, 40, (6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = img + blotches + rng.normal(0, 8, (h, w, 3))
    for _ in range(rng.integers(2, 5)):  # distractor lines
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, tuple(float(c) for c in rng.uniform(0, 255, 3)), int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _regular_points(cx, cy, radius, n, rotation, inner=None):
    """Vertices of a regular polygon (or a star with ``inner`` radius ratio)."""
    count = 2 * n if inner else n
    angles = rotation + np.arange(count) * 2 * np.pi / count
    radii = np.where(np.arange(count) % 2 == 1, radius * inner, radius) if inner else np.full(count, radius)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)


def _shape_mask(rng, category, h, w):
    """(full binary mask, size) of one random shape; the shape may extend past the image."""
    size = float(np.exp(rng.uniform(np.log(12), np.log(min(h, w) / 2))))  # log-uniform extent
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    rotation = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((h, w), np.uint8)
    if category == "circle":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(size / 2)), 1, -1, cv2.LINE_8)
    else:
        if category == "rectangle":
            aspect = rng.uniform(0.35, 1.0)
            half = np.array([size / 2, size * aspect / 2])
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
            rot = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
            pts = corners @ rot.T + [cx, cy]
        elif category == "triangle":
            pts = _regular_points(cx, cy, size / 2, 3, rotation)
        else:
            pts = _regular_points(cx, cy, size / 2, 5, rotation, inner=0.45)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)
    return mask


def _polygons(visible, upsample=4):
    """COCO polygons (flat float lists) of a binary mask's outer contours, >= 3 points each.

    Contours are traced at ``upsample`` x the resolution so that the polygon runs a fraction of
    a pixel inside the mask's outer edge rather than through the boundary pixels' centres (which
    would shave half a pixel off every side); collinear points are then simplified away.
    """
    big = cv2.resize(visible.astype(np.uint8), None, fx=upsample, fy=upsample, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float64)
        if len(c) >= 3:
            polys.append([round(float(v), 2) for v in ((c + 0.5) / upsample).reshape(-1)])
    return polys


def generate_image(rng, height, width, max_instances=6):
    """(BGR uint8 image, [(category index, visible mask)]) for one image."""
    img = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int32)
    drawn = []
    for k in range(int(rng.integers(1, max_instances + 1))):
        category = int(rng.integers(len(CATEGORIES)))
        mask = _shape_mask(rng, CATEGORIES[category], height, width).astype(bool)
        if not mask.any():
            continue
        colour = rng.uniform(0, 255, 3)
        texture = rng.normal(0, 6, (height, width, 3))
        img[mask] = colour + texture[mask]
        owner[mask] = len(drawn)
        drawn.append((category, int(mask.sum())))
    instances = []
    for idx, (category, full_area) in enumerate(drawn):
        visible = owner == idx
        area = int(visible.sum())
        if area >= MIN_VISIBLE_PIXELS and area >= MIN_VISIBLE_FRACTION * full_area:
            instances.append((category, visible.astype(np.uint8)))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _annotation(ann_id, image_id, category, visible):
    ys, xs = np.nonzero(visible)
    x0, y0 = int(xs.min()), int(ys.min())
    return {"id": ann_id, "image_id": image_id, "category_id": category + 1, "iscrowd": 0,
            "bbox": [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)],
            "area": float(visible.sum()), "segmentation": _polygons(visible)}


def _image_size(rng, size):
    if isinstance(size, (tuple, list)):
        lo, hi = size
        return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    return int(size), int(size)


def _write_image(task):
    """Draw and write image ``i`` of a split; returns its image record and its annotations
    (ids still to be numbered). A free function so that worker processes can run it."""
    img_dir, split, i, seed, size = task
    rng = np.random.default_rng([seed, SPLITS.get(split, 2), i])
    h, w = _image_size(rng, size)
    img, instances = generate_image(rng, h, w)
    image_id = i + 1
    name = f"{image_id:012d}.jpg"
    cv2.imwrite(os.path.join(img_dir, name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    annotations = [_annotation(0, image_id, category, visible) for category, visible in instances]
    return ({"id": image_id, "file_name": name, "height": h, "width": w},
            [a for a in annotations if a["segmentation"]])


def write_split(out_dir, split, num_images, seed=0, size=256, progress=True, workers=1):
    """Write ``out_dir/<split>/*.jpg`` and ``out_dir/annotations/instances_<split>.json``, drawing
    the images in ``workers`` processes (the files do not depend on it: each image has its own
    generator, and annotation ids are numbered in image order afterwards). Workers are forked,
    which hangs in a process whose TensorFlow/OpenMP thread pools already run, so ``workers > 1``
    is refused there (scripts/make_shapes_dataset.py runs without TensorFlow)."""
    if workers > 1 and "tensorflow" in sys.modules:
        raise RuntimeError("shapes.write_split(workers>1) forks, which can hang once TensorFlow is imported; "
                           "use workers=1 here or run scripts/make_shapes_dataset.py --workers N")
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
    tasks = [(img_dir, split, i, seed, size) for i in range(num_images)]
    pool = None
    if workers > 1 and num_images > 1:
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,))
        results = pool.imap(_write_image, tasks, chunksize=8)
    else:
        results = map(_write_image, tasks)
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=num_images, desc=f"shapes {split}", unit="img", leave=False)
    images, annotations = [], []
    try:
        for image, anns in results:
            images.append(image)
            for ann in anns:
                annotations.append(dict(ann, id=len(annotations) + 1))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    data = {"info": {"description": f"MaskPlus generated shapes, seed {seed}"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CATEGORIES)]}
    path = os.path.join(out_dir, "annotations", f"instances_{split}.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def write_dataset(out_dir, num_train, num_val, seed=0, size=256, progress=True, workers=1):
    """Both splits; returns {split: json path}."""
    return {split: write_split(out_dir, split, n, seed, size, progress, workers)
            for split, n in (("train2017", num_train), ("val2017", num_val))}


def summarize(json_path):
    """{"images": n, "instances": n, "per_category": {...}, "small/medium/large": fractions}."""
    with open(json_path) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    anns = data["annotations"]
    per_cat = {n: 0 for n in names.values()}
    for a in anns:
        per_cat[names[a["category_id"]]] += 1
    areas = np.array([a["area"] for a in anns]) if anns else np.zeros(0)
    n = max(len(anns), 1)
    return {"images": len(data["images"]), "instances": len(anns), "per_category": per_cat,
            "small": float((areas < 32 ** 2).sum() / n), "medium": float(((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() / n),
            "large": float((areas >= 96 ** 2).sum() / n)}
