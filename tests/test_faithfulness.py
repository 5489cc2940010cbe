"""The Tensorpack example's rules (examples/FasterRCNN at 1547a54e), each pinned by values worked
out by hand or by the example's published formulas, not by our code."""
import math
import os

import cv2
import numpy as np
import pytest

from config import ConfigError, config as cfg
from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint, train_steps
from maskplus.compat import tf, tfv1


# ------------------------------------------------------------------ proposals and RPN.MIN_SIZE
# On a 100 x 100 image: b1 lies beyond the right edge and is clipped to zero width; b2 overlaps b0
# at IoU 38*38 / (2*1600 - 38*38) = 0.82 > 0.7 and is suppressed.
_BOXES = [[10, 10, 50, 50], [120, 20, 160, 60], [12, 12, 52, 52], [60, 60, 90, 95]]
_LOGITS = [5.0, 4.0, 3.0, 2.0]


def _proposals(min_size):
    from maskplus.modeling.model_rpn import generate_rpn_proposals
    with config_snapshot():
        configure({"RPN.MIN_SIZE": float(min_size)})
        with tf.Graph().as_default(), tfv1.Session() as sess:
            boxes, scores = generate_rpn_proposals(tf.constant(_BOXES, tf.float32), tf.constant(_LOGITS),
                                                   tf.constant([100, 100]), 10)
            return sess.run([boxes, scores])


def test_with_min_size_zero_a_box_clipped_to_zero_width_stays_a_proposal():
    boxes, scores = _proposals(0)
    np.testing.assert_array_equal(boxes, [[10, 10, 50, 50], [100, 20, 100, 60], [60, 60, 90, 95]])
    np.testing.assert_array_equal(scores, [5.0, 4.0, 2.0])


def test_with_a_positive_min_size_boxes_not_wider_and_taller_are_dropped():
    boxes, scores = _proposals(1)
    np.testing.assert_array_equal(boxes, [[10, 10, 50, 50], [60, 60, 90, 95]])
    np.testing.assert_array_equal(scores, [5.0, 2.0])


# ------------------------------------------------------------------ training image: float before resize
def test_training_image_is_cast_to_float32_before_resizing(tiny_coco, cfg_override):
    from maskplus.data.coco import load_training_records
    from maskplus.data.pipeline import TrainingMapper
    cfg_override({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [45, 45]})
    record = [r for r in load_training_records(cfg.DATA.TRAIN) if r["image_id"] == 1][0]
    seed = 3
    dp = TrainingMapper.from_config(cfg)((record, seed))

    raw = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)  # 60 x 80 -> 45 x 60
    expected = cv2.resize(raw.astype(np.float32), (60, 45), interpolation=cv2.INTER_LINEAR)
    rng = np.random.RandomState(seed)  # the mapper's draws: short edge, then the flip
    rng.randint(45, 46)
    if rng.uniform() < 0.5:
        expected = expected[:, ::-1]
    np.testing.assert_array_equal(dp["image"], expected)
    # the uint8 resize would have rounded every pixel: here most are fractional
    assert np.mean(dp["image"] != np.round(dp["image"])) > 0.5


# ------------------------------------------------------------------ inference: one scale back to the image
def _map_back(per_axis):
    from maskplus.engine.inference import run_network
    seen = {}

    def fake_predictor(image):
        seen["shape"] = image.shape
        boxes = np.array([[10, 20, 100, 90], [140, 0, 153, 100]], np.float32)
        return boxes, np.array([0.9, 0.8], np.float32), np.array([1, 2], np.int32)

    with config_snapshot():
        configure({"MODE_MASK": False, "PREPROC.TEST_SHORT_EDGE_SIZE": 100, "PREPROC.MAX_SIZE": 1000.0,
                   "TEST.BOX_SCALE_PER_AXIS": per_axis}, training=False)
        out = run_network(fake_predictor, np.zeros((150, 230, 3), np.uint8))
    return seen["shape"], out.boxes


def test_inference_boxes_go_back_with_one_scale_as_in_the_example():
    shape, boxes = _map_back(per_axis=False)
    assert shape == (100, 153, 3)  # 230 * 100 / 150 = 153.3 -> 153
    s = math.sqrt(100 / 150 * 153 / 230)  # the example: sqrt(scale_y * scale_x) = 0.665942
    expected = np.array([[10 / s, 20 / s, 100 / s, 90 / s],
                         [140 / s, 0, 153 / s, 150]])  # 100 / s = 150.16 is clipped to the height
    np.testing.assert_allclose(boxes, expected, rtol=1e-6)


def test_per_axis_box_scaling_is_available_behind_its_key():
    _, boxes = _map_back(per_axis=True)
    sy, sx = 100 / 150, 153 / 230
    expected = np.array([[10 / sx, 20 / sy, 100 / sx, 90 / sy], [140 / sx, 0, 230, 150]])
    np.testing.assert_allclose(boxes, expected, rtol=1e-6)


# ------------------------------------------------------------------ schedules and towers
@pytest.mark.parametrize("name, steps", [
    ("1x", [120000, 160000, 180000]), ("2x", [240000, 320000, 360000]), ("3x", [420000, 500000, 540000]),
    ("6x", [960000, 1040000, 1080000]), ("9x", [1500000, 1580000, 1620000])])
def test_named_schedules_follow_the_examples_formula(name, steps):
    with config_snapshot():
        configure({"TRAIN.LR_SCHEDULE": name})
        assert cfg.TRAIN.LR_SCHEDULE == steps


@pytest.mark.parametrize("towers, drops, end, warmup_start, accumulate", [
    (1, [960000, 1280000], 1440000, 0.0033, 8),
    (2, [480000, 640000], 720000, 0.0033, 4),
    (4, [240000, 320000], 360000, 0.0033, 2),
    (8, [120000, 160000], 180000, 0.0033, 1),
    (16, [60000, 80000], 90000, 0.00165, 1),
])
def test_tower_counts_scale_the_steps_and_the_warm_up_as_in_the_example(towers, drops, end, warmup_start, accumulate):
    from maskplus.engine.schedules import Schedule
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": towers, "TRAIN.LR_SCHEDULE": "1x", "TRAIN.STEPS_PER_EPOCH": 500,
                   "TRAIN.BASE_LR": 0.01, "TRAIN.WARMUP": 1000, "TRAIN.WARMUP_INIT_LR": 0.0033})
        schedule = Schedule.from_config(cfg)
        assert schedule.drop_steps == tuple(drops)
        assert schedule.total_steps == end and schedule.max_epoch == end // 500
        assert schedule.lr_at(0) == pytest.approx(warmup_start)
        assert schedule.lr_at(500) == pytest.approx((warmup_start + 0.01) / 2)
        assert schedule.lr_at(drops[0] - 1) == pytest.approx(0.01)
        assert schedule.lr_at(drops[0]) == pytest.approx(0.001)
        assert schedule.lr_at(drops[1]) == pytest.approx(0.0001)
        with tf.Graph().as_default():
            opt = ResNetFPNModel().optimizer()
        # the base optimizer applies BASE_LR / 8 to the gradient summed over the 8 (or n) images
        assert getattr(opt, "_niter", 1) == accumulate


@pytest.mark.parametrize("towers", [3, 5, 6, 7, 12])
def test_tower_counts_that_do_not_divide_a_batch_of_8_are_rejected(towers):
    with config_snapshot(), pytest.raises(ConfigError, match=rf"TRAIN.NUM_GPUS={towers}: training needs 1, 2, 4 "
                                                            r"or a multiple of 8 towers"):
        configure({"TRAIN.NUM_GPUS": towers})


def test_lr_drops_fall_on_epoch_starts_and_the_run_ends_on_a_whole_epoch():
    # the example: drop after epoch floor(b * 8 / n / STEPS_PER_EPOCH), max_epoch likewise floored
    from maskplus.engine.schedules import Schedule
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": 8, "TRAIN.LR_SCHEDULE": [1000, 1250, 1650], "TRAIN.STEPS_PER_EPOCH": 300,
                   "TRAIN.BASE_LR": 0.1, "TRAIN.WARMUP": 10, "TRAIN.EVAL_PERIOD": 2})
        schedule = Schedule.from_config(cfg)
        assert schedule.drop_steps == (900, 1200) and schedule.max_epoch == 5 and schedule.total_steps == 1500
        assert [round(schedule.lr_at(s), 6) for s in (899, 900, 1199, 1200)] == [0.1, 0.01, 0.01, 0.001]
        assert schedule.eval_steps == (600, 1200, 1500)  # after epochs 2, 4 (every EVAL_PERIOD) and always the last
        by_step = Schedule.from_config(cfg, rounding="step")
        assert by_step.drop_steps == (1000, 1250) and by_step.max_epoch == 6 and by_step.total_steps == 1650
        assert by_step.eval_steps == (600, 1200, 1650)  # the last epoch is cut at the schedule's end


def test_the_example_sets_cudnn_autotuning_by_phase(monkeypatch):
    env = os.environ
    for key in ("TF_AUTOTUNE_THRESHOLD", "TF_CUDNN_USE_AUTOTUNE"):
        monkeypatch.delenv(key, raising=False)
    with config_snapshot():
        configure({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [640, 800]})  # multi-scale: shapes change every image
    assert (env.get("TF_AUTOTUNE_THRESHOLD"), env.get("TF_CUDNN_USE_AUTOTUNE")) == ("1", "0")
    monkeypatch.delenv("TF_CUDNN_USE_AUTOTUNE")
    with config_snapshot():
        configure({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [800, 800]})
    assert env.get("TF_CUDNN_USE_AUTOTUNE") is None
    with config_snapshot():
        configure({}, training=False)  # inference: never autotune
    assert env.get("TF_CUDNN_USE_AUTOTUNE") == "0"


# ------------------------------------------------------------------ data rules
def test_empty_images_train_as_all_negative_when_not_filtered(tiny_coco, cfg_override):
    from maskplus.data.coco import load_training_records
    from maskplus.data.pipeline import TrainingMapper
    cfg_override({"DATA.FILTER_EMPTY_ANNOTATIONS": False})
    records = load_training_records(cfg.DATA.TRAIN, filter_empty=cfg.DATA.FILTER_EMPTY_ANNOTATIONS)
    record = [r for r in records if r["image_id"] == 3][0]  # 40 x 40, only a crowd box
    dp = TrainingMapper.from_config(cfg)((record, 0))
    assert dp is not None and dp["gt_boxes"].shape == (0, 4) and dp["gt_masks_packed"].shape == (0, 60, 8)
    labels = np.concatenate([dp[f"anchor_labels_lvl{k}"].ravel() for k in range(2, 7)])
    assert np.sum(labels == 1) == 0 and np.sum(labels == 0) > 0


def test_an_image_without_foreground_trains_with_finite_losses_and_zero_mask_loss():
    empty = synthetic_datapoint(boxes=np.zeros((0, 4)), labels=())
    with config_snapshot():
        configure({"MASKPLUS.QUASI_MULTITASK": ["0.5x"]})
        graph, placeholders, model = build_graph(True)
        costs = train_steps(graph, placeholders, model, empty)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            mask_losses = [op.outputs[0] for op in graph.get_operations() if op.name.endswith("_or_zero")]
            values = sess.run(mask_losses, {placeholders[k]: v for k, v in empty.items()})
    assert np.all(np.isfinite(costs)) and values == [0.0, 0.0]  # the mask loss and the 0.5x loss


@pytest.mark.parametrize("area, dropped", [(1.0, True), (0.5, True), (1.5, False)])
def test_annotations_of_at_most_one_pixel_area_are_dropped(area, dropped):
    from maskplus.data.validate import annotation_problem
    ann = {"bbox": [10, 10, 5, 5], "category_id": 1, "area": area, "iscrowd": 0,
           "segmentation": [[10, 10, 15, 10, 15, 15, 10, 15]]}
    problem = annotation_problem(ann, 100, 100, {1: 1}, mode_mask=True)
    assert (problem == "area of at most 1 pixel") if dropped else problem is None


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


# ------------------------------------------------------------------ initialisation of norms
def _initial_gammas(norm_init, *names):
    with config_snapshot():
        configure({"BACKBONE.NORM_INIT": norm_init})
        graph, _, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            return sess.run([graph.get_tensor_by_name(f"{n}/gamma:0") for n in names])


def test_backbone_norms_start_as_the_examples_get_norm():
    """Last norm of a residual branch at 0; every other with no initializer, i.e. TF's
    glorot-uniform on a [C] vector: uniform in +-sqrt(6 / (C + C))."""
    final, inner, fpn = _initial_gammas("example", "group1/block0/conv3/gn", "group1/block0/conv1/gn",  # 128 ch
                                        "fpn/gn_c2")
    np.testing.assert_array_equal(final, 0)
    limit = math.sqrt(6 / (128 + 128))
    assert np.all(np.abs(inner) <= limit) and inner.std() > 0.5 * limit / math.sqrt(3)
    np.testing.assert_array_equal(fpn, 1)  # the FPN's and heads' GN keep gamma 1, as in the example


def test_unit_norm_init_starts_every_other_gamma_at_one():
    inner, = _initial_gammas("unit", "group1/block0/conv1/gn")
    np.testing.assert_array_equal(inner, 1)
