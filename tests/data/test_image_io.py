"""One EXIF orientation rule (maskplus/data/image_io.py) for the validator, training and evaluation:
real JPEGs carrying an EXIF Orientation tag, written with PIL, whose json width/height are either the
rotated size or the stored size."""
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from maskplus.data.coco import COCOFormatDataset, register_dataset
from maskplus.data.image_io import read_header, read_image
from maskplus.data.validate import validate_dataset


def write_exif_jpeg(path, stored_bgr, orientation):
    """A JPEG of ``stored_bgr`` whose EXIF says to show it turned as ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored_bgr[:, :, ::-1])).save(path, exif=exif, quality=95)
    return path


def _noise(h, w, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 80 + 20).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_without_a_json_size_the_orientation_is_applied_as_opencv_applies_it(tmp_path, orientation):
    path = write_exif_jpeg(str(tmp_path / "o.jpg"), _noise(24, 40), orientation)
    assert read_header(path) == (40, 24, orientation)
    np.testing.assert_array_equal(read_image(path), cv2.imread(path, cv2.IMREAD_COLOR))  # OpenCV's own EXIF code
    stored = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    # the json naming the stored size keeps the stored pixels when the tag would swap width and height
    want = stored if orientation >= 5 else cv2.imread(path, cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(read_image(path, json_size=(40, 24)), want)


def test_orientation_6_turns_the_stored_top_left_corner_to_the_top_right(tmp_path):
    stored = np.full((24, 40, 3), 30, np.uint8)
    stored[0:8, 0:12] = 240  # stored: 12 wide, 8 high, top-left
    path = write_exif_jpeg(str(tmp_path / "six.jpg"), stored, 6)
    shown = read_image(path, json_size=(24, 40))  # the json names the rotated size
    assert shown.shape == (40, 24, 3)
    bright = shown[:, :, 0] > 128
    ys, xs = np.nonzero(bright)
    # a quarter turn clockwise: stored (x, y) -> shown (23 - y, x); the block becomes 8 wide, 12 high
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (0, 11, 16, 23)
    as_stored = read_image(path, json_size=(40, 24))  # the json names the stored size
    assert as_stored.shape == (24, 40, 3) and as_stored[4, 6, 0] > 128 and as_stored[4, 30, 0] < 128


# -------------------------------------------------------------- a dataset of two such images
SHOWN_W, SHOWN_H = 64, 96  # displayed size; the files store 96 x 64 pixels with Orientation=6
BLOCK = (30, 12, 52, 40)   # x1, y1, x2, y2 of the bright object in the json's frame


def _exif_dataset(root):
    """Image 1: the json's width/height are the rotated size; image 2: the stored size. In both,
    the annotation is the bright block in the json's frame."""
    os.makedirs(os.path.join(root, "images"))
    images, anns = [], []
    x1, y1, x2, y2 = BLOCK
    for img_id, json_w, json_h in ((1, SHOWN_W, SHOWN_H), (2, SHOWN_H, SHOWN_W)):
        frame = _noise(json_h, json_w, img_id)
        frame[y1:y2, x1:x2] = 235
        # what the file must store so that the json's frame is what the rule gives
        stored = cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE) if img_id == 1 else frame
        write_exif_jpeg(os.path.join(root, "images", f"{img_id}.jpg"), stored, 6)
        images.append({"id": img_id, "file_name": f"{img_id}.jpg", "width": json_w, "height": json_h})
        anns.append({"id": img_id, "image_id": img_id, "category_id": 1, "iscrowd": 0, "area": 616.0,
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    path = os.path.join(root, "instances.json")
    json.dump({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "block"}]}, open(path, "w"))
    return path, os.path.join(root, "images")


@pytest.fixture
def exif_dataset(tmp_path, cfg_override):
    json_path, image_dir = _exif_dataset(str(tmp_path))
    cfg_override({"DATA.CUSTOM": {"exif": [json_path, image_dir]}, "DATA.TRAIN": ("exif",), "DATA.VAL": ("exif",),
                  "MODE_MASK": True, "DATA.ABSOLUTE_COORD": True, "DATA.FILTER_EMPTY_ANNOTATIONS": True,
                  "PREPROC.TRAIN_SHORT_EDGE_SIZE": [64, 64], "PREPROC.MAX_SIZE": 1000.0})
    register_dataset("exif", json_path, image_dir)
    return COCOFormatDataset("exif", json_path, image_dir)


def test_the_validator_keeps_both_images_and_says_which_rule_applied(exif_dataset):
    report = validate_dataset(exif_dataset)
    assert not report.skipped_images and report.errors == []
    assert report.exif_rotated == [1] and report.exif_as_stored == [2]
    assert "EXIF orientation: 1 images read rotated (the json's width/height are the rotated size), " \
           "1 read as stored (the json's width/height are the stored size; image ids 2)" in report.summary()


def test_evaluation_reads_each_image_in_its_jsons_frame(exif_dataset):
    from maskplus.data.pipeline import get_eval_dataflow
    got = {image_id: img for img, image_id in get_eval_dataflow("exif")}
    x1, y1, x2, y2 = BLOCK
    for image_id, (h, w) in ((1, (SHOWN_H, SHOWN_W)), (2, (SHOWN_W, SHOWN_H))):
        assert got[image_id].shape == (h, w, 3)
        assert got[image_id][y1:y2, x1:x2].mean() > 200  # the object where the json says


def test_training_masks_cover_the_object_in_both_cases(exif_dataset):
    from config import config as cfg
    from maskplus.data.pipeline import TrainingMapper
    mapper = TrainingMapper.from_config(cfg)
    for record in exif_dataset.training_records():
        for seed in (1, 2, 3):  # flipped or not
            dp = mapper((record, seed))
            img = dp["image"]
            assert img.shape[:2] == (record["height"], record["width"])  # short edge 64 either way: scale 1
            mask = np.unpackbits(dp["gt_masks_packed"][0], axis=-1)[:, :img.shape[1]].astype(bool)
            assert mask.sum() == 22 * 28
            assert img[mask].mean() > 200 and img[~mask].mean() < 100, record["image_id"]
