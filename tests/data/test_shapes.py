"""The generated shapes dataset: determinism, masks vs polygons, occlusion, COCO loading."""
import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from maskplus.data import shapes

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    shapes.write_dataset(root, 12, 4, seed=3, progress=False)
    return root


@pytest.mark.cli
def test_same_seed_gives_identical_files_and_another_seed_differs(generated, tmp_path):
    # `again` is drawn by the script with two worker processes: the files must not depend on how many
    again, other = str(tmp_path / "again"), str(tmp_path / "other")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_shapes_dataset.py"), "--out", again,
                    "--train", "12", "--val", "4", "--seed", "3", "--workers", "2"], check=True, timeout=300)
    shapes.write_dataset(other, 12, 4, seed=4, progress=False)
    for split in ("train2017", "val2017"):
        name = f"annotations/instances_{split}.json"
        assert filecmp.cmp(os.path.join(generated, name), os.path.join(again, name), shallow=False)
        assert not filecmp.cmp(os.path.join(generated, name), os.path.join(other, name), shallow=False)
        images = sorted(os.listdir(os.path.join(generated, split)))
        assert len(images) == (12 if split == "train2017" else 4)
        for img in images:
            assert filecmp.cmp(os.path.join(generated, split, img), os.path.join(again, split, img), shallow=False)


def test_training_and_validation_images_are_drawn_from_different_generators(generated):
    """Image k of val2017 is not image k of train2017 (a shared generator would put the
    validation images into the training set), nor are their annotations."""
    for k in range(1, 5):
        name = f"{k:012d}.jpg"
        assert not filecmp.cmp(os.path.join(generated, "train2017", name), os.path.join(generated, "val2017", name),
                               shallow=False), name
    boxes = {}
    for split in ("train2017", "val2017"):
        data = json.load(open(os.path.join(generated, "annotations", f"instances_{split}.json")))
        boxes[split] = {(a["image_id"], tuple(a["bbox"])) for a in data["annotations"] if a["image_id"] <= 4}
    assert boxes["val2017"] and not boxes["val2017"] & boxes["train2017"]


def test_an_annotation_box_is_the_tight_box_of_the_visible_pixels():
    visible = np.zeros((40, 60), np.uint8)
    visible[3:8, 10:20] = 1  # rows 3..7, columns 10..19
    visible[12, 25] = 1      # one more pixel: the box reaches row 12, column 25
    ann = shapes._annotation(7, 2, 1, visible)
    assert ann["bbox"] == [10.0, 3.0, 16.0, 10.0] and ann["area"] == 51.0
    assert ann["category_id"] == 2 and ann["image_id"] == 2 and ann["iscrowd"] == 0


def test_polygons_rasterise_back_to_the_drawn_visible_masks():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(20):
        _, instances = shapes.generate_image(rng, 128, 160)
        for category, visible in instances:
            if visible.sum() < 15 * 15:
                continue
            polys = shapes._polygons(visible)
            rle = mask_util.merge(mask_util.frPyObjects(polys, 128, 160))
            raster = mask_util.decode(rle)
            iou = np.logical_and(raster, visible).sum() / np.logical_or(raster, visible).sum()
            assert iou > 0.9, iou
            checked += 1
    assert checked > 10


def test_a_later_shape_hides_an_earlier_one_and_a_fully_hidden_one_is_dropped(monkeypatch):
    # two circles at the same place: the big second one hides the first completely
    masks = iter([("circle", (60, 60, 10)), ("circle", (60, 60, 30)), ("circle", (75, 60, 20))])

    def fake_shape(rng, category, h, w):
        _, (cx, cy, r) = next(masks)
        yy, xx = np.mgrid[0:h, 0:w]
        return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r).astype(np.uint8)

    class Rng:
        def __init__(self):
            self.real = np.random.default_rng(0)

        def integers(self, lo, hi=None, size=None):
            if hi == 7:  # the instance count
                return 3
            return self.real.integers(lo, hi, size) if hi is not None else self.real.integers(lo)

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(shapes, "_shape_mask", fake_shape)
    _, instances = shapes.generate_image(Rng(), 120, 120)
    assert len(instances) == 2  # the fully hidden small circle is gone
    big, last = instances[0][1], instances[1][1]
    yy, xx = np.mgrid[0:120, 0:120]
    full_big = (xx - 60) ** 2 + (yy - 60) ** 2 <= 900
    full_last = (xx - 75) ** 2 + (yy - 60) ** 2 <= 400
    np.testing.assert_array_equal(big.astype(bool), full_big & ~full_last)  # overlap removed
    np.testing.assert_array_equal(last.astype(bool), full_last)


def test_annotations_load_with_pycocotools_and_our_loader(generated):
    coco = COCO(os.path.join(generated, "annotations", "instances_train2017.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == shapes.CATEGORIES
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 12
    for a in anns:
        img = coco.loadImgs(a["image_id"])[0]
        m = coco.annToMask(a)
        ys, xs = np.nonzero(m)
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
        assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5  # the box fits the mask
    from maskplus.data.coco import class_names_for, load_training_records, register_coco
    register_coco(generated)
    assert class_names_for(["coco_train2017"]) == shapes.CATEGORIES
    records = load_training_records(["coco_train2017"])
    assert len(records) == 12 and sum(len(r["boxes"]) for r in records) == len(anns)


def test_summary_counts_instances_by_category_and_size(generated):
    s = shapes.summarize(os.path.join(generated, "annotations", "instances_val2017.json"))
    data = json.load(open(os.path.join(generated, "annotations", "instances_val2017.json")))
    anns = data["annotations"]
    assert s["images"] == 4 and s["instances"] == len(anns) == sum(s["per_category"].values())
    names = dict(zip(range(1, 5), shapes.CATEGORIES))
    assert s["per_category"] == {n: sum(a["category_id"] == c for a in anns) for c, n in names.items()}
    # COCO's size classes: area below 32^2, from 32^2 to below 96^2, from 96^2
    areas = [a["area"] for a in anns]
    assert 0 < s["small"] < 1  # the split has small objects and others, so the bounds matter
    assert s["small"] == pytest.approx(sum(a < 1024 for a in areas) / len(areas))
    assert s["medium"] == pytest.approx(sum(1024 <= a < 9216 for a in areas) / len(areas))
    assert s["large"] == pytest.approx(sum(a >= 9216 for a in areas) / len(areas))


def test_forked_workers_are_refused_once_tensorflow_is_loaded(tmp_path):
    import maskplus.compat  # noqa: F401  (TensorFlow)
    with pytest.raises(RuntimeError, match="make_shapes_dataset.py --workers"):
        shapes.write_split(str(tmp_path), "val2017", 4, progress=False, workers=2)
