import json
import os

import numpy as np
import pytest

from config import config as cfg
from maskplus.data import coco
from maskplus.data.coco import DatasetError
from tests.conftest import write_tiny_coco
from tests.helpers import config_snapshot


def test_coco_split_names_resolve_from_basedir(tiny_coco):
    write_tiny_coco(str(tiny_coco), split="val2017")
    assert coco.available_datasets() == ["coco_train2017"]  # registered before the split was written
    coco.register_coco(str(tiny_coco))
    assert coco.available_datasets() == ["coco_train2017", "coco_val2017"]
    ds = coco.get_dataset("coco_val2017")
    assert ds.json_path == os.path.join(str(tiny_coco), "annotations", "instances_val2017.json")
    assert ds.image_dir == os.path.join(str(tiny_coco), "val2017")


def test_custom_dataset_registered_by_the_command_lines_from_the_config(tmp_path, cfg_override):
    from maskplus.cli import register_datasets
    json_path, img_dir = write_tiny_coco(str(tmp_path / "elsewhere"), split="mine")
    cfg_override({"DATA.BASEDIR": str(tmp_path / "does_not_exist"),
                  "DATA.CUSTOM": {"my_set": [json_path, img_dir]}})
    with pytest.raises(DatasetError, match="Unknown dataset 'my_set'. Available: none"):
        coco.get_dataset("my_set")  # nothing is registered until the command line does it
    register_datasets()
    ds = coco.get_dataset("my_set")
    assert ds.class_names == ["cat", "dog"]
    assert len(ds.inference_records()) == 3


def test_unknown_name_lists_available_and_folder(tiny_coco):
    with pytest.raises(DatasetError) as e:
        coco.get_dataset("coco_train2099")
    msg = str(e.value)
    assert "coco_train2099" in msg and "coco_train2017" in msg
    assert os.path.join(str(tiny_coco), "annotations") in msg


def test_missing_basedir_is_named(tmp_path, cfg_override):
    from maskplus.cli import register_datasets
    missing = str(tmp_path / "nowhere")
    cfg_override({"DATA.BASEDIR": missing, "DATA.CUSTOM": {}})
    register_datasets()
    with pytest.raises(DatasetError, match="DATA.BASEDIR .*nowhere.* does not exist"):
        coco.get_dataset("coco_train2017")


def test_missing_json_with_existing_image_folder_is_named(tiny_coco):
    os.makedirs(tiny_coco / "val2017")
    with pytest.raises(DatasetError, match="instances_val2017.json is missing"):
        coco.get_dataset("coco_val2017")


def test_missing_image_folder_is_named(tiny_coco):
    os.rename(tiny_coco / "train2017", tiny_coco / "moved")
    with pytest.raises(DatasetError, match="image folder .*train2017 does not exist"):
        coco.get_dataset("coco_train2017")


def test_custom_json_missing_is_named(tmp_path):
    coco.register_dataset("x", str(tmp_path / "nope.json"), str(tmp_path))
    with pytest.raises(DatasetError, match="nope.json does not exist"):
        coco.get_dataset("x")


def test_a_malformed_custom_entry_is_named_when_registered(cfg_override):
    from maskplus.cli import register_datasets
    cfg_override({"DATA.CUSTOM": {"x": ["only_a_json.json"]}})
    with pytest.raises(DatasetError, match=r"DATA.CUSTOM\['x'\] must be \[json_path, image_dir\]"):
        register_datasets()


def test_registering_another_basedir_replaces_the_coco_names(tiny_coco, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    write_tiny_coco(str(other), split="val2017")
    coco.register_dataset("mine", str(tiny_coco / "annotations" / "instances_train2017.json"), str(tiny_coco))
    coco.register_coco(str(other))
    assert coco.available_datasets() == ["coco_val2017", "mine"]
    with pytest.raises(DatasetError, match="Unknown dataset 'coco_train2017'"):
        coco.get_dataset("coco_train2017")


def test_zero_images_and_zero_usable_images_raise(tiny_coco):
    path = tiny_coco / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data_noimg = dict(data, images=[], annotations=[])
    (tiny_coco / "annotations" / "instances_a.json").write_text(json.dumps(data_noimg))
    os.makedirs(tiny_coco / "a")
    coco.register_coco(str(tiny_coco))
    with pytest.raises(DatasetError, match="zero images"):
        coco.get_dataset("coco_a").class_names
    data_crowd_only = dict(data, annotations=[a for a in data["annotations"] if a["iscrowd"]])
    (tiny_coco / "annotations" / "instances_b.json").write_text(json.dumps(data_crowd_only))
    os.makedirs(tiny_coco / "b")
    coco.register_coco(str(tiny_coco))
    with pytest.raises(DatasetError, match="zero usable training images"):
        coco.get_dataset("coco_b").training_records()


def test_class_mapping_follows_category_id_order(tiny_coco):
    ds = coco.get_dataset("coco_train2017")
    assert ds.class_names == ["cat", "dog"]        # ids 2, 7 although listed 7, 2
    assert ds.category_id_to_label == {2: 1, 7: 2}
    assert ds.label_to_category_id == {1: 2, 2: 7}
    assert coco.class_names_for(["coco_train2017"]) == ["cat", "dog"]


def test_class_names_for_rejects_disagreeing_datasets(tiny_coco):
    path = tiny_coco / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    data["categories"] = [{"id": 2, "name": "cat"}, {"id": 7, "name": "horse"}]
    (tiny_coco / "annotations" / "instances_other.json").write_text(json.dumps(data))
    os.makedirs(tiny_coco / "other")
    coco.register_coco(str(tiny_coco))
    with pytest.raises(DatasetError, match="coco_train2017.*coco_other"):
        coco.class_names_for(["coco_train2017", "coco_other"])


def test_training_records_convert_boxes_and_skip_degenerate(tiny_coco):
    ds = coco.get_dataset("coco_train2017")
    recs = {r["image_id"]: r for r in ds.training_records()}
    assert sorted(recs) == [1, 2]                  # image 3 has only a crowd instance
    r1 = recs[1]
    assert r1["file_name"] == os.path.join(str(tiny_coco), "train2017", "000000000001.jpg")
    assert (r1["height"], r1["width"]) == (60, 80)
    np.testing.assert_allclose(r1["boxes"], [[10, 10, 30, 20], [40, 40, 70, 55], [2, 40, 20, 58]])
    assert r1["boxes"].dtype == np.float32
    assert r1["class"].tolist() == [1, 2, 1] and r1["class"].dtype == np.int32
    assert r1["is_crowd"].tolist() == [0, 0, 1] and r1["is_crowd"].dtype == np.int8
    assert len(r1["segmentation"]) == 3 and r1["segmentation"][2] == []
    np.testing.assert_allclose(r1["segmentation"][0][0], np.reshape(
        [10, 10, 30, 10, 30, 20, 10, 20], (-1, 2)))
    assert recs[2]["class"].tolist() == [2]        # the 2-point polygon is gone
    assert ds.dropped_annotations == {"bbox with zero or negative area": 1,
                                      "polygon with fewer than 3 points": 1}
    assert ds.dropped_images == 1


def test_empty_images_kept_without_filter(tiny_coco):
    ids = [r["image_id"] for r in coco.get_dataset("coco_train2017").training_records(filter_empty=False)]
    assert ids == [1, 2, 3]


def test_excluded_images_are_left_out_of_the_records_asked_for_only(tiny_coco):
    """Validation's verdict travels as an argument: the cached dataset is not changed by it."""
    ds = coco.get_dataset("coco_train2017")
    assert [r["image_id"] for r in ds.training_records(excluded={1})] == [2]
    assert [r["image_id"] for r in ds.training_records()] == [1, 2]
    write_tiny_coco(str(tiny_coco), split="val2017")
    coco.register_coco(str(tiny_coco))
    records = coco.load_training_records(["coco_train2017", "coco_val2017"], excluded={"coco_val2017": {1}})
    assert [(r["file_name"].split(os.sep)[-2], r["image_id"]) for r in records] == [
        ("train2017", 1), ("train2017", 2), ("val2017", 2)]


def test_boxes_clipped_and_relative_coords_scaled(tiny_coco):
    path = tiny_coco / "annotations" / "instances_train2017.json"
    data = json.loads(path.read_text())
    w, h = 80.0, 60.0
    data["annotations"] = [{"id": 1, "image_id": 1, "category_id": 2, "iscrowd": 0, "area": 1.0,
                            "bbox": [0.5, 0.5, 0.75, 0.25],  # right edge at 1.25 -> clipped to 1
                            "segmentation": [[0.5, 0.5, 1.0, 0.5, 0.75, 0.75]]}]
    (tiny_coco / "annotations" / "instances_rel.json").write_text(json.dumps(data))
    os.makedirs(tiny_coco / "rel")
    coco.register_coco(str(tiny_coco))
    (rec,) = coco.get_dataset("coco_rel").training_records(absolute=False)
    np.testing.assert_allclose(rec["boxes"], [[0.5 * w, 0.5 * h, w, 0.75 * h]])
    np.testing.assert_allclose(rec["segmentation"][0][0], [[40, 30], [80, 30], [60, 45]])


def test_mode_mask_off_has_no_segmentation(tiny_coco):
    recs = coco.get_dataset("coco_train2017").training_records(mode_mask=False)
    assert all("segmentation" not in r for r in recs)


def test_load_training_records_concatenates(tiny_coco, cfg_override):
    write_tiny_coco(str(tiny_coco), split="val2017")
    coco.register_coco(str(tiny_coco))
    recs = coco.load_training_records(["coco_train2017", "coco_val2017"])
    assert len(recs) == 4
    assert recs[0]["file_name"].endswith(os.path.join("train2017", "000000000001.jpg"))
    assert recs[3]["file_name"].endswith(os.path.join("val2017", "000000000002.jpg"))


# -------------------- the Tensorpack example's rule (faithfulness): COCO's names
@pytest.mark.faithfulness
def test_coco_names_without_a_dataset_give_the_80_coco_classes(cfg_override, tmp_path):
    from maskplus.data.coco_classes import COCO_CLASS_NAMES
    cfg_override({"DATA.BASEDIR": str(tmp_path), "DATA.CUSTOM": {}})
    with config_snapshot():
        cfg.DATA.CLASS_NAMES = []
        cfg.DATA.VAL = ("coco_val2017",)
        from maskplus.cli import finalize
        finalize(is_training=False)
        assert cfg.DATA.NUM_CLASS == 81 and cfg.DATA.CLASS_NAMES[1:] == list(COCO_CLASS_NAMES)
        assert cfg.DATA.CLASS_NAMES[1] == "person" and cfg.DATA.CLASS_NAMES[-1] == "toothbrush"
