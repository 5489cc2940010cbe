"""Results files scored against a dataset they do not fit: ids of images or categories the
dataset lacks are counted and the first few named; entries without the fields of their IoU type
(a box-only result scored as segm, a mask of another size than its image) are named likewise.
Nothing is scored and no metrics file written."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from maskplus.engine.evaluate import EvaluationError, EvaluationParams, metrics_path, score_results


def _rle(height, width):
    mask = np.zeros((height, width), np.uint8)
    mask[10:20, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return dict(rle, counts=rle["counts"].decode("ascii"))


def _result(image_id, category_id=2, mask=None, **extra):
    out = {"image_id": image_id, "category_id": category_id, "bbox": [10.0, 10.0, 20.0, 10.0], "score": 0.9}
    if mask is not None:
        out["segmentation"] = _rle(*mask)
    return dict(out, **extra)


def _params():
    """The evaluation of the global config (as each test overrides it)."""
    from config import config as cfg
    return EvaluationParams.from_config(cfg)


def _write(tmp_path, results):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return str(path)


def _refusal(tiny_coco, path):
    with pytest.raises(EvaluationError) as e:
        score_results("coco_train2017", path, _params())
    json_path = tiny_coco / "annotations" / "instances_train2017.json"
    prefix = f"The results file '{path}' does not fit dataset 'coco_train2017' ({json_path}): "
    text = str(e.value)
    assert text.startswith(prefix) and "\n" not in text, text
    assert not (tiny_coco / metrics_path("results.json")).exists()
    return text[len(prefix):]


def test_results_for_images_and_categories_the_dataset_lacks_are_counted_and_named(tiny_coco, tmp_path, cfg_override):
    # the tiny set: images 1 (80 x 60), 2 (50 x 70), 3 (40 x 40); categories 7 (dog) and 2 (cat)
    cfg_override({"MODE_MASK": False})
    results = [_result(1), _result(139), _result(285), _result(139), _result(632), _result(724), _result(776),
               _result(785), _result(2, category_id=1), _result(3, category_id=18), _result(2, category_id=1)]
    problem = _refusal(tiny_coco, _write(tmp_path, results))
    assert problem == ("7 of 11 results are for images the dataset lacks (image ids 139, 285, 632, 724, 776, ... "
                       "(1 more)); 3 of 11 results are for categories the dataset lacks (category ids 1, 18; the "
                       "dataset's are 7, 2).")


def test_results_without_the_fields_of_their_iou_type_are_named(tiny_coco, tmp_path, cfg_override):
    cfg_override({"MODE_MASK": True})
    results = [_result(1, mask=(60, 80)),        # right: height 60, width 80
               _result(1),                      # a box only, scored as segm too
               _result(2, mask=(50, 70)),        # the mask of a 70 x 50 image with height and width swapped
               _result(3, mask=(40, 40), bbox=[1.0, 2.0, 3.0])]
    problem = _refusal(tiny_coco, _write(tmp_path, results))
    assert problem == ("1 of 4 results have no 'bbox' [x, y, width, height] to score as bbox: #3 (image 3); "
                       "1 of 4 results have no 'segmentation' RLE ({'size', 'counts'}) to score as segm: #1 (image 1) "
                       "(results of boxes only are scored as bbox with MODE_MASK=False); "
                       "1 of 4 results have a mask of another size than their image (height x width): #2 (image 2): "
                       "mask 50 x 70 for a 70 x 50 image.")


def test_box_only_results_are_scored_as_boxes_without_masks(tiny_coco, tmp_path, cfg_override):
    cfg_override({"MODE_MASK": False, "TRAIN.BOUNDARY_AP": False})
    # the cat rectangle of image 1 exactly: one of the two non-crowd cats found at precision 1 (COCO's
    # 101 recall points: 0 .. 0.5 reached, 51 of them), no dog found; AP is the mean over the two
    # categories at every IoU threshold (the box is exact)
    path = _write(tmp_path, [_result(1)])
    metrics = score_results("coco_train2017", path, _params())
    assert metrics["bbox/AP"] == pytest.approx(51 / 101 / 2) and "segm/AP" not in metrics
