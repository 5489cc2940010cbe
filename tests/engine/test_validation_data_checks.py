"""What a run's evaluations will need is checked before its first step, not at the first
evaluation (by default after 50 epochs): each DATA.VAL dataset exists, loads, has every image
readable and the training classes in the training order (evaluation maps labels to categories
by position: another order would score silently wrong AP)."""
import json
import os

import pytest

from config import config as cfg
from maskplus.data.coco import DatasetError, register_coco
from maskplus.engine.trainer import check_validation_data
from tests.conftest import write_tiny_coco


def _val_split(root, edit=None):
    """A ``coco_val2017`` split beside the training one; ``edit(data)`` changes its json."""
    json_path, image_dir = write_tiny_coco(str(root), split="val2017")
    if edit:
        with open(json_path) as f:
            data = json.load(f)
        edit(data)
        with open(json_path, "w") as f:
            json.dump(data, f)
    register_coco(str(root))
    return image_dir


@pytest.fixture
def evaluating(tiny_coco, cfg_override):
    cfg_override({"DATA.VAL": ("coco_val2017",), "TRAIN.EVAL_PERIOD": 1, "DATA.CLASS_NAMES": ["BG", "cat", "dog"]})
    return tiny_coco


def test_a_validation_set_like_the_training_set_passes(evaluating):
    _val_split(evaluating)
    check_validation_data()


def test_a_missing_validation_split_is_named(evaluating):
    with pytest.raises(DatasetError, match=r"DATA.VAL \['coco_val2017'\] cannot be evaluated, which this run "
                                           r"would do every TRAIN.EVAL_PERIOD=1 epochs[^\n]*\n  "
                                           r"Unknown dataset 'coco_val2017'"):
        check_validation_data()


def test_the_training_classes_in_another_order_are_refused(evaluating):
    # the same names, but "dog" now has the lower category id: label 1 would be scored as dog
    def swap(data):
        data["categories"] = [{"id": 2, "name": "dog"}, {"id": 7, "name": "cat"}]
    _val_split(evaluating, swap)
    with pytest.raises(DatasetError, match=r"has the training classes in another order \(by category id\): "
                                           r"\['dog', 'cat'\] vs \['cat', 'dog'\]"):
        check_validation_data()


def test_other_classes_are_refused(evaluating):
    def rename(data):
        data["categories"] = [{"id": 7, "name": "wolf"}, {"id": 2, "name": "cat"}]
    _val_split(evaluating, rename)
    with pytest.raises(DatasetError, match=r"only in 'coco_val2017': \['wolf'\], only in the training data: \['dog'\]"):
        check_validation_data()


def test_an_unreadable_validation_image_is_refused_by_name(evaluating):
    image_dir = _val_split(evaluating)
    os.remove(os.path.join(image_dir, "000000000002.jpg"))
    with pytest.raises(DatasetError, match=r"1 x image file missing under .*: 000000000002.jpg \(image ids \[2\]\)"):
        check_validation_data()


def test_nothing_is_checked_when_the_run_never_evaluates(evaluating, cfg_override):
    cfg_override({"TRAIN.EVAL_PERIOD": 0})
    check_validation_data()  # DATA.VAL does not exist, but is never used
    assert cfg.DATA.VAL == ("coco_val2017",)
