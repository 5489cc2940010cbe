"""Dataset validation: each kind of bad input is named (file, image id, annotation id) and either
skipped and counted or, where training cannot sensibly start, an error before training."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from maskplus.data.coco import COCOFormatDataset
from maskplus.data.validate import validate_dataset

from tests.conftest import ROOT
SQUARE = [[10, 10, 30, 10, 30, 30, 10, 30]]


def _write(root, images, anns, categories=({"id": 1, "name": "thing"},), files=None):
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for img in images:
        content = (files or {}).get(img["id"], "ok")
        path = os.path.join(root, "images", img["file_name"])
        if content == "ok":
            cv2.imwrite(path, np.full((img["height"], img["width"], 3), 90, np.uint8))
        elif content == "garbage":
            open(path, "wb").write(b"\x00garbage, not an image")
        elif isinstance(content, tuple):  # a real image of another size
            cv2.imwrite(path, np.full((content[0], content[1], 3), 90, np.uint8))
        # "missing": no file
    path = os.path.join(root, "instances.json")
    json.dump({"images": images, "annotations": anns, "categories": list(categories)}, open(path, "w"))
    return COCOFormatDataset("bad", path, os.path.join(root, "images"))


def _img(i, w=64, h=48):
    return {"id": i, "file_name": f"{i}.jpg", "width": w, "height": h}


def _ann(i, img, bbox=(10, 10, 20, 20), seg=SQUARE, cat=1, crowd=0):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": list(bbox), "segmentation": seg,
            "iscrowd": crowd, "area": 400.0}


def test_image_files_missing_unreadable_or_of_the_wrong_size_are_skipped_by_id(tmp_path):
    ds = _write(str(tmp_path), [_img(1), _img(2), _img(3), _img(4)], [_ann(k, k) for k in range(1, 5)],
                files={2: "missing", 3: "garbage", 4: (20, 20)})
    report = validate_dataset(ds)
    reasons = {k.split(" under ")[0]: v for k, v in report.skipped_images.items()}
    assert reasons == {"image file missing": [2], "unreadable or corrupt image": [3],
                       "image size differs from the json's width/height (with or without EXIF rotation)": [4]}
    assert report.errors == [] and report.bad_image_ids == {2, 3, 4}
    assert str(tmp_path / "images") in report.summary()
    # by id and by file name
    assert "1 x image file missing" in report.summary() and "image ids 2 (2.jpg))" in report.summary()
    assert "image ids 3 (3.jpg))" in report.summary() and "image ids 4 (4.jpg))" in report.summary()


@pytest.mark.parametrize("ann, reason", [
    (_ann(1, 1, bbox=(10, 10, 0, 20)), "bbox with zero or negative area"),
    (_ann(1, 1, bbox=(10, 10, -5, 20)), "bbox with zero or negative area"),
    (_ann(1, 1, bbox=(100, 10, 20, 20)), "bbox outside the image"),
    # the image is 64 wide and 48 high: y from 50 lies below it, although 50 < 64
    (_ann(1, 1, bbox=(10, 50, 20, 10)), "bbox outside the image"),
    (_ann(1, 1, bbox=(10, -30, 20, 25)), "bbox outside the image"),
    (_ann(1, 1, bbox=(float("nan"), 10, 20, 20)), "bbox has NaN/inf coordinates"),
    (_ann(1, 1, seg=[[10, 10, 30, 30]]), "polygon with fewer than 3 points"),
    (_ann(1, 1, seg=[[10, 10, 20, 20, 30, 30]]), "polygon with zero area"),
    (_ann(1, 1, seg={"size": [10, 10], "counts": "abc"}), "RLE of size [10, 10] for an image of 48x64"),
    (_ann(1, 1, cat=9), "category_id not among the json's categories"),
])
def test_each_unusable_annotation_is_skipped_with_its_reason_and_id(tmp_path, ann, reason):
    ds = _write(str(tmp_path), [_img(1), _img(2)], [ann, _ann(2, 2)])
    report = validate_dataset(ds)
    assert dict(report.skipped_annotations) == {reason: [1]}
    assert report.errors == []
    assert f"1 x {reason} (annotation ids 1)" in report.summary()


def test_a_box_right_of_x_48_in_a_64_px_wide_image_is_inside(tmp_path):
    """x from 50 is inside a 64 x 48 (w x h) image: only a check against the height would drop it."""
    ds = _write(str(tmp_path), [_img(1)], [_ann(1, 1, bbox=(50, 10, 10, 20))])
    report = validate_dataset(ds)
    assert not report.skipped_annotations and report.errors == []


def test_crowd_annotations_are_kept_as_crowd_and_counted(tmp_path, cfg_override):
    cfg_override({"MODE_MASK": True, "DATA.FILTER_EMPTY_ANNOTATIONS": True})
    crowd = _ann(2, 1, seg={"size": [48, 64], "counts": [0, 3072]}, crowd=1)
    ds = _write(str(tmp_path), [_img(1)], [_ann(1, 1), crowd])
    report = validate_dataset(ds)
    assert report.crowd == 1 and not report.skipped_annotations
    (record,) = ds.training_records()
    assert record["is_crowd"].tolist() == [0, 1] and record["segmentation"][1] == []


def test_duplicate_image_ids_and_no_usable_image_are_errors(tmp_path):
    ds = _write(str(tmp_path), [_img(1), _img(1)], [_ann(1, 1, bbox=(0, 0, 0, 0))])
    report = validate_dataset(ds)
    assert any("duplicate image ids [1]" in e for e in report.errors)
    assert any("has no usable image" in e for e in report.errors)


@pytest.mark.cli
def test_train_py_reports_every_problem_and_stops_before_training_without_a_traceback(tmp_path):
    root = str(tmp_path / "data")
    _write(root, [_img(1), _img(1), _img(2)], [_ann(1, 1), _ann(3, 1, cat=5), _ann(2, 2)], files={2: "missing"})
    custom = {"broken": [os.path.join(root, "instances.json"), os.path.join(root, "images")]}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(tmp_path / "log"),
                           "--config", f"DATA.CUSTOM={custom!r}", "DATA.TRAIN=broken", "DATA.VAL=broken",
                           "TRAIN.NUM_GPUS=1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "duplicate image ids [1]" in proc.stderr
    assert "image file missing" in out and "category_id not among the json's categories" in out


def test_duplicate_and_non_positive_annotation_ids_are_reported_in_any_split(tmp_path):
    anns = [_ann(1, 1), _ann(1, 2), _ann(0, 3), _ann(5, 3, bbox=(30, 20, 10, 10)), _ann(5, 1, bbox=(40, 5, 8, 9))]
    ds = _write(str(tmp_path), [_img(1), _img(2), _img(3)], anns)
    report = validate_dataset(ds)
    assert report.duplicate_annotation_ids == [1, 5] and report.non_positive_annotation_ids == [0]
    assert "annotation ids: 2 duplicate (1, 5) and 1 zero, negative or non-integer (0)" in report.summary()
    assert "COCO evaluation renumbers" in report.summary()
    assert report.errors == [] and not report.skipped_annotations  # training does not need the ids


def test_an_image_over_pils_decompression_bomb_limit_is_checked_not_called_corrupt(tmp_path):
    from PIL import Image
    w, h = 14000, 13000  # 182 MP: over PIL's 179 MP limit; a 1-bit PNG of it is small
    assert w * h > 2 * Image.MAX_IMAGE_PIXELS
    ds = _write(str(tmp_path), [_img(1), _img(2, w, h), _img(3, w + 1, h)], [_ann(1, 1), _ann(2, 2), _ann(3, 3)],
                files={2: "missing", 3: "missing"})
    big = Image.new("1", (w, h))
    big.save(str(tmp_path / "images" / "2.jpg"), format="PNG")
    os.link(str(tmp_path / "images" / "2.jpg"), str(tmp_path / "images" / "3.jpg"))
    report = validate_dataset(ds)
    reasons = {k.split(" under ")[0]: v for k, v in report.skipped_images.items()}
    assert reasons == {"image size differs from the json's width/height (with or without EXIF rotation)": [3]}
    assert Image.MAX_IMAGE_PIXELS == 89478485  # the guard is back for everyone else


def test_an_image_over_opencvs_decoding_limit_is_named_as_too_large(tmp_path, monkeypatch):
    monkeypatch.setenv("CV_IO_MAX_IMAGE_PIXELS", str(64 * 48 - 1))
    ds = _write(str(tmp_path), [_img(1), _img(2, 40, 30)], [_ann(1, 1), _ann(2, 2)])
    report = validate_dataset(ds)
    reasons = {k.split(" under ")[0]: v for k, v in report.skipped_images.items()}
    assert reasons == {"image too large to decode (over OpenCV's 3071 pixels; raise CV_IO_MAX_IMAGE_PIXELS)": [1]}


# -------------------- the Tensorpack example's rule (faithfulness): tiny annotations
@pytest.mark.faithfulness
@pytest.mark.parametrize("area, dropped", [(1.0, True), (0.5, True), (1.5, False)])
def test_annotations_of_at_most_one_pixel_area_are_dropped(area, dropped):
    from maskplus.data.validate import annotation_problem
    ann = {"bbox": [10, 10, 5, 5], "category_id": 1, "area": area, "iscrowd": 0,
           "segmentation": [[10, 10, 15, 10, 15, 15, 10, 15]]}
    problem = annotation_problem(ann, 100, 100, {1: 1}, mode_mask=True)
    assert (problem == "area of at most 1 pixel") if dropped else problem is None
