import os
import time

import cv2
import numpy as np
import pytest

from config import config as cfg
from maskplus.data import pipeline, transforms as T
from maskplus.data.anchors import AnchorParams
from maskplus.data.coco import get_dataset, load_training_records
from tests.conftest import TINY_IMAGES


def _first(ds, n):
    ds.reset_state()
    out = []
    for dp in ds:
        out.append(dp)
        if len(out) == n:
            break
    return out


def _dataflow(faults=None):
    """The training dataflow of the config's DATA.TRAIN, built as the trainer builds it."""
    records = load_training_records(cfg.DATA.TRAIN, cfg.MODE_MASK, cfg.DATA.ABSOLUTE_COORD,
                                    cfg.DATA.FILTER_EMPTY_ANNOTATIONS)
    return pipeline.get_train_dataflow(records, _mapper(), faults or pipeline.LoaderFaults(0.01),
                                       seed=cfg.DATA.SEED, num_workers=cfg.DATA.NUM_WORKERS)


def _mapper():
    return pipeline.TrainingMapper.from_config(cfg)


def _input_names():
    return pipeline.train_input_names(AnchorParams.from_config(cfg), cfg.MODE_MASK)


def _unpack(dp):
    w = dp["image"].shape[1]
    return np.unpackbits(dp["gt_masks_packed"], axis=-1)[:, :, :w]


def _record(image_id):
    return next(r for r in get_dataset("coco_train2017").training_records() if r["image_id"] == image_id)


def test_resized_shape_follows_tensorpack_rule():
    assert T.resized_shape(480, 640, 800, 1333) == (800, 1067)      # 1066.67 rounds up
    assert T.resized_shape(400, 1200, 800, 1333) == (444, 1333)     # capped by the long side
    assert T.resized_shape(70, 50, 60, 1000) == (84, 60)
    img, sy, sx = T.resize_image(np.zeros((70, 50, 3), np.uint8), 60, 1000)
    assert img.shape == (84, 60, 3) and (sy, sx) == (84 / 70, 60 / 50)


def test_flip_boxes_and_points_mirror_the_pixel_grid():
    np.testing.assert_array_equal(T.flip_boxes([[10, 10, 30, 20]], 80), [[50, 10, 70, 20]])
    np.testing.assert_array_equal(T.flip_points([[0, 5], [80, 7]], 80), [[80, 5], [0, 7]])


def test_datapoint_keys_dtypes_and_shapes(tiny_coco):
    (dp,) = _first(_dataflow(), 1)
    assert list(dp) == _input_names()
    assert list(dp) == (["image"] + [f"anchor_{k}_lvl{l}" for l in range(2, 7) for k in ("labels", "boxes")]
                        + ["gt_boxes", "gt_labels", "gt_masks_packed", "image_id"])
    assert dp["image_id"].dtype == np.int64 and int(dp["image_id"]) in (1, 2)
    h, w = dp["image"].shape[:2]
    assert dp["image"].dtype == np.float32 and dp["image"].shape[2] == 3
    assert min(h, w) == 60
    ph, pw = int(np.ceil(h / 32) * 32), int(np.ceil(w / 32) * 32)
    for lvl, s in zip(range(2, 7), (4, 8, 16, 32, 64)):
        lab, box = dp[f"anchor_labels_lvl{lvl}"], dp[f"anchor_boxes_lvl{lvl}"]
        assert lab.shape == (int(np.ceil(ph / s)), int(np.ceil(pw / s)), 3) and lab.dtype == np.int32
        assert box.shape == lab.shape + (4,) and box.dtype == np.float32
    n = len(dp["gt_boxes"])
    assert dp["gt_boxes"].dtype == np.float32 and dp["gt_boxes"].shape == (n, 4) and n >= 1
    assert dp["gt_labels"].dtype == np.int64 and set(dp["gt_labels"].tolist()) <= {1, 2}
    assert dp["gt_masks_packed"].dtype == np.uint8
    assert dp["gt_masks_packed"].shape == (n, h, (w + 7) // 8)
    assert sum(int((dp[f"anchor_labels_lvl{l}"] == 1).sum()) for l in range(2, 7)) >= 1


def _map_image1(seed):
    mapper = _mapper()
    return mapper((_record(1), seed))


def test_masks_unpack_to_polygon_area_at_box_and_crowd_excluded(tiny_coco):
    dp = _map_image1(3)
    assert dp["image"].shape[:2] == (60, 80)       # short edge already 60: no resize
    assert len(dp["gt_boxes"]) == 2                 # crowd instance is not a target
    masks = _unpack(dp)
    flipped = dp["gt_boxes"][0, 0] != 10
    rect = masks[0][:, ::-1] if flipped else masks[0]
    assert rect.sum() == 200
    ys, xs = np.nonzero(rect)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 19, 10, 29)
    for m, b in zip(masks, dp["gt_boxes"]):         # each mask lies within its box
        ys, xs = np.nonzero(m)
        assert xs.min() >= np.floor(b[0]) and xs.max() < np.ceil(b[2])
        assert ys.min() >= np.floor(b[1]) and ys.max() < np.ceil(b[3])


def test_resize_scales_boxes_and_masks(tiny_coco):
    mapper = _mapper()
    dp = mapper((_record(2), 0))                    # 50x70 -> 60x84, scale 1.2
    assert dp["image"].shape[:2] == (84, 60)
    b = dp["gt_boxes"][0]
    expect = np.array([5, 30, 45, 60], np.float32) * 1.2
    if b[0] != pytest.approx(expect[0]):
        expect = T.flip_boxes(expect[None], 60)[0]
    np.testing.assert_allclose(b, expect, rtol=1e-5)
    assert abs(int(_unpack(dp)[0].sum()) - 48 * 36) <= 60


def test_boxes_scale_by_their_own_axis_factor(tiny_coco, cfg_override):
    """Image 2 (50 wide, 70 high) to a short edge of 61: 61 x 85 (70 * 1.22 = 85.4 rounds to 85),
    so x scales by 61 / 50 = 1.22 and y by 85 / 70 = 1.2143: its rectangle [5, 30, 45, 60] becomes
    [6.1, 36.43, 54.9, 72.86] (the same when flipped: it is centred in x), its mask within it."""
    cfg_override({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [61, 61]})
    dp = _mapper()((_record(2), 0))
    assert dp["image"].shape[:2] == (85, 61)
    np.testing.assert_allclose(dp["gt_boxes"][0], [5 * 61 / 50, 30 * 85 / 70, 45 * 61 / 50, 60 * 85 / 70], rtol=1e-5)
    ys, xs = np.nonzero(_unpack(dp)[0])
    assert 36 <= ys.min() and ys.max() <= 72 and 6 <= xs.min() and xs.max() <= 54


def test_flip_moves_image_boxes_and_masks_together(tiny_coco):
    results = {}
    for seed in range(20):
        dp = _map_image1(seed)
        results[bool(dp["gt_boxes"][0, 0] != 10)] = dp
        if len(results) == 2:
            break
    assert set(results) == {False, True}, "20 seeds never produced both a flip and no flip"
    plain, flip = results[False], results[True]
    np.testing.assert_array_equal(flip["image"], plain["image"][:, ::-1])
    np.testing.assert_allclose(flip["gt_boxes"], T.flip_boxes(plain["gt_boxes"], 80))
    np.testing.assert_array_equal(_unpack(flip), _unpack(plain)[:, :, ::-1])
    np.testing.assert_allclose(plain["gt_boxes"][0], [10, 10, 30, 20])


def test_same_seed_gives_same_datapoints(tiny_coco, cfg_override):
    cfg_override({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [40, 90]})

    def run():
        return _first(_dataflow(), 4)

    a, b = run(), run()
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    cfg_override({"DATA.SEED": 2})
    c = run()
    assert any(x["image"].shape != y["image"].shape or not np.array_equal(x["image"], y["image"])
               for x, y in zip(a, c))


def test_unreadable_image_is_skipped_named_and_counted(tiny_coco):
    os.remove(tiny_coco / "train2017" / "000000000002.jpg")
    faults = pipeline.LoaderFaults(0.5)
    ds = _dataflow(faults)
    ds.reset_state()
    dps = list(ds)                                   # one epoch over the two records
    assert len(dps) == 1 and dps[0]["image"].shape[:2] == (60, 80)
    path = str(tiny_coco / "train2017" / "000000000002.jpg")
    assert faults.skipped == {(path, 2): "the file is missing or is not a readable image"} and faults.error is None


def test_the_mapper_turns_any_failure_into_a_named_skip_instead_of_raising(tiny_coco, cfg_override):
    """An exception would end a loader process for good (Tensorpack never replaces it: a hang)."""
    import cv2
    cfg_override({"PREPROC.MAX_SIZE": 128.0})  # 1000 px wide to 128: 0.128 rows
    strip = tiny_coco / "train2017" / "strip.png"
    cv2.imwrite(str(strip), np.full((1, 1000, 3), 90, np.uint8))  # 1 row: resizes to 0 rows
    record = dict(_record(1), file_name=str(strip), height=1, width=1000, image_id=77)
    out = _mapper()((record, 0))
    (path, image_id, reason), = out.values()
    assert (path, image_id) == (str(strip), 77) and reason.startswith("cv2.error: ") and "\n" not in reason
    gone = dict(_record(1), file_name=str(tiny_coco / "train2017" / "vanished.jpg"))
    assert list(_mapper()((gone, 0)).values()) == [
        (gone["file_name"], 1, "the file is missing or is not a readable image")]


def test_loader_faults_are_counted_once_per_image_and_stop_past_the_limit():
    faults = pipeline.LoaderFaults(0.01, num_images=250)  # ceil(2.5): 3 images may be skipped
    assert faults.allowed == 3
    for i in range(3):
        assert faults.record(f"/img/{i}.jpg", i, "bad")
    assert faults.record("/img/0.jpg", 0, "bad again")  # the same image in flight twice: counted once
    assert len(faults.skipped) == 3 and faults.error is None
    assert not faults.record("/img/9.jpg", 9, "bad")
    assert faults.error.startswith("The data loader could not use 4 of the 250 training images, more than "
                                   "DATA.LOADER_MAX_SKIPPED=0.01 allows (3):")
    assert "/img/9.jpg (image id 9): bad" in faults.error
    # never every image, whatever the limit: a run must keep something to train on
    assert pipeline.LoaderFaults(1.0, num_images=3).allowed == 2
    assert pipeline.LoaderFaults(0.0, num_images=10 ** 6).allowed == 0
    assert pipeline.LoaderFaults(0.01, num_images=300).allowed == 3  # not 4: 0.01 * 300 = 3.0000000000000004


def test_a_skipped_image_is_left_out_of_later_epochs_and_the_others_keep_their_seeds():
    records = [{"file_name": f"/img/{i}.jpg", "image_id": i} for i in range(5)]
    excluded = {}
    ds = pipeline.SeededRecords(records, seed=3, excluded=excluded)
    ds.reset_state()
    first = [(r["image_id"], s) for r, s in ds]
    excluded[("/img/2.jpg", 2)] = "vanished"
    ds.reset_state()
    again = [(r["image_id"], s) for r, s in ds]
    assert again == [(i, s) for i, s in first if i != 2]


def test_loader_processes_survive_a_failing_image_and_report_dead_ones_instead_of_hanging(tiny_coco, cfg_override):
    import signal
    import cv2
    from tensorpack.dataflow.base import DataFlowTerminated
    cfg_override({"DATA.NUM_WORKERS": 2, "PREPROC.MAX_SIZE": 128.0})
    cv2.imwrite(str(tiny_coco / "train2017" / "000000000002.jpg"), np.full((1, 1000, 3), 90, np.uint8))
    faults = pipeline.LoaderFaults(0.5)
    ds = _dataflow(faults)
    dps = _first(ds, 6)  # several epochs of the one good image: the processes live on
    assert len(dps) == 6 and all(int(dp["image_id"]) == 1 for dp in dps)
    assert list(faults.skipped) == [(str(tiny_coco / "train2017" / "000000000002.jpg"), 2)]
    processes = ds.ds._procs
    for p in processes:
        os.kill(p.pid, signal.SIGKILL)  # e.g. the out-of-memory killer
    start = time.time()
    with pytest.raises(DataFlowTerminated):
        for _ in ds:
            pass
    assert time.time() - start < 4 * pipeline.LoaderProcesses.POLL_SECONDS
    assert "2 data-loading process(es) died" in faults.error and "exit code -9" in faults.error
    del ds


def test_multiprocess_workers_yield_datapoints(tiny_coco, cfg_override):
    cfg_override({"DATA.NUM_WORKERS": 2})
    ds = _dataflow()
    dps = _first(ds, 3)   # more than one epoch: the parallel map repeats its source
    del ds
    assert len(dps) == 3 and all(list(dp) == _input_names() for dp in dps)


def test_eval_dataflow_shards_cover_all_images(tiny_coco):
    seen = []
    for shard in range(2):
        ds = pipeline.get_eval_dataflow("coco_train2017", shard, 2)
        ds.reset_state()
        for img, image_id in ds:
            assert img.dtype == np.uint8 and img.shape[2] == 3
            w, h = TINY_IMAGES[image_id]
            assert img.shape[:2] == (h, w)
            seen.append(image_id)
    assert seen == [1, 2, 3]


def test_dict_datapoint_feeds_the_model_placeholders(tiny_coco):
    """Tensorpack's QueueInput/FeedInput match dict keys to placeholder op names (and counts)."""
    from maskplus.compat import tf, tfv1
    from tensorpack.input_source.input_source import _make_feeds
    from tensorpack.input_source.input_source_base import build_or_reuse_placeholder
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    specs = ResNetFPNModel(model_params()).inputs()
    (dp,) = _first(_dataflow(), 1)
    with tf.Graph().as_default():
        phs = [build_or_reuse_placeholder(s) for s in specs]
        feed = _make_feeds(phs, dp)
        with tfv1.Session() as sess:
            shapes = sess.run([tf.shape(p) for p in phs], feed_dict=feed)
    assert [list(s) for s in shapes] == [list(dp[p.op.name].shape) for p in phs]


# -------------------- the Tensorpack example's rule (faithfulness): the training image is cast to float before resizing
@pytest.mark.faithfulness
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


# -------------------- the Tensorpack example's rule (faithfulness): empty images when not filtered
@pytest.mark.faithfulness
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
