import numpy as np

from maskplus.data import anchors as A

#: the example's FPN anchors and RPN sampling rules (its config defaults)
FPN_PARAMS = A.AnchorParams(fpn=True, strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512),
                            ratios=(0.5, 1.0, 2.0), positive_thresh=0.7, negative_thresh=0.3, batch_per_im=256,
                            fg_ratio=0.5, crowd_overlap_thresh=9.99)

LABEL_KW = dict(positive_thresh=0.7, negative_thresh=0.3, batch_per_im=256, fg_ratio=0.5,
                crowd_overlap_thresh=9.99)


def test_cell_anchor_of_size32_ratio1_is_centred_on_the_origin():
    np.testing.assert_array_equal(A.cell_anchors(32, [1.0]), [[-16, -16, 16, 16]])


def test_cell_anchors_keep_the_area_and_set_h_over_w_to_the_ratio():
    got = A.cell_anchors(32, [0.5, 1.0, 2.0])
    w, h = got[:, 2] - got[:, 0], got[:, 3] - got[:, 1]
    np.testing.assert_allclose(w * h, 32 * 32, rtol=1e-6)
    np.testing.assert_allclose(h / w, [0.5, 1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(got[:, :2], -got[:, 2:], rtol=1e-6)  # centred
    assert got.dtype == np.float32


def test_grid_shifts_by_stride_and_field_sizes_use_padded_image():
    g = A.grid_anchors((3, 5), 16, A.cell_anchors(32, [1.0]))
    assert g.shape == (3, 5, 1, 4) and g.dtype == np.float32
    np.testing.assert_array_equal(g[2, 4, 0], [-16 + 64, -16 + 32, 16 + 64, 16 + 32])
    assert A.padded_shape(800, 1333, 32) == (800, 1344)
    sizes = A.fpn_field_sizes(800, 1344, (4, 8, 16, 32, 64))
    assert sizes == [(200, 336), (100, 168), (50, 84), (25, 42), (13, 21)]


def test_iou_and_ioa():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]], np.float32)
    np.testing.assert_allclose(A.pairwise_iou(a, b)[0], [1, 1 / 3, 0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(A.pairwise_ioa(a, b)[0], [1, 0.5, 0, 1], rtol=1e-6)


def _anchor_setup():
    anchors = A.grid_anchors((4, 4), 16, A.cell_anchors(32, [1.0])).reshape(-1, 4)  # 16 anchors, 4x4 cells
    return anchors


def test_gt_equal_to_anchor_is_positive_far_negative_outside_ignored():
    anchors = _anchor_setup()
    # image 64 x 64: only anchors with x1,y1 >= 0 and x2,y2 <= 64 are inside (cells 1..3)
    gt = anchors[5:6].copy()  # cell (1, 1): [0, 0, 32, 32]
    labels, boxes = A.anchor_targets(anchors, 64, 64, gt, np.zeros((0, 4)), np.random.RandomState(0),
                                     **LABEL_KW)
    inside = [5, 6, 7, 9, 10, 11, 13, 14, 15]
    assert labels[5] == 1
    np.testing.assert_array_equal(boxes[5], gt[0])
    assert labels[10] == 0                                   # [16,16,48,48] vs gt: IoU 0.14
    assert all(labels[i] == -1 for i in range(16) if i not in inside)
    assert np.all(boxes[labels != 1] == 0)


def test_only_anchors_inside_a_wide_image_are_candidates():
    """A 48 x 112 (h x w) image: anchor (i, j) = [16j - 16, 16i - 16, 16j + 16, 16i + 16] lies inside
    for rows 1..2 (16i + 16 <= 48) and columns 1..6 (16j + 16 <= 112); without a gt all of those
    (12 < the batch of 256) are negatives and every other anchor is ignored."""
    anchors = A.grid_anchors((4, 8), 16, A.cell_anchors(32, [1.0])).reshape(-1, 4)  # the field of a 64 x 128 padded image
    labels, _ = A.anchor_targets(anchors, 48, 112, np.zeros((0, 4)), np.zeros((0, 4)), np.random.RandomState(0),
                                 **LABEL_KW)
    expected = -np.ones((4, 8), np.int32)
    expected[1:3, 1:7] = 0
    np.testing.assert_array_equal(labels.reshape(4, 8), expected)


def test_best_anchor_of_each_gt_positive_even_below_threshold():
    anchors = _anchor_setup()
    gt = np.array([[0, 0, 28, 28]], np.float32)   # IoU with anchor 5 = 784/1024 ~ 0.77
    gt2 = np.array([[22, 22, 47, 47]], np.float32)  # best IoU ~ 0.61 (< 0.7) with anchor 10
    labels, boxes = A.anchor_targets(anchors, 64, 64, np.concatenate([gt, gt2]), np.zeros((0, 4)),
                                     np.random.RandomState(0), **LABEL_KW)
    assert labels[5] == 1 and labels[10] == 1
    np.testing.assert_array_equal(boxes[10], gt2[0])


def test_best_match_below_negative_thresh_stays_negative_as_in_tensorpack():
    anchors = _anchor_setup()
    tiny = np.array([[0, 0, 4, 4]], np.float32)   # best IoU 16/1024 with anchor 5
    labels, _ = A.anchor_targets(anchors, 64, 64, tiny, np.zeros((0, 4)), np.random.RandomState(0),
                                 **LABEL_KW)
    assert labels[5] == 0 and not (labels == 1).any()


def test_crowd_overlap_ignores_anchors():
    anchors = _anchor_setup()
    gt = anchors[5:6].copy()
    # two crowd boxes, the threshold 0.5 (not the example's 0.7): each ignored anchor is so by one
    # box only, one of them the second, and one with an IoA between the two thresholds
    crowd = np.array([[20, 20, 64, 64], [0, 44, 32, 64]], np.float32)
    kw = dict(LABEL_KW, crowd_overlap_thresh=0.5)
    labels, _ = A.anchor_targets(anchors, 64, 64, gt, crowd, np.random.RandomState(0), **kw)
    # IoA = the share of the anchor inside the crowd box
    assert labels[10] == -1          # [16,16,48,48]: 28x28 / 32x32 = 0.77 in the first (its IoU: 0.36)
    assert labels[13] == -1          # [0,32,32,64]: 32x20 / 32x32 = 0.625 in the second (0.375 in the first)
    assert labels[7] == 0            # [32,0,64,32]: 32x12 / 32x32 = 0.375 in the first, 0 in the second
    assert labels[5] == 1            # [0,0,32,32], the gt itself: 12x12 / 32x32 = 0.14 in the first


def test_sampling_respects_batch_limits_and_no_gt_gives_negatives():
    rng = np.random.RandomState(0)
    anchors = A.grid_anchors((50, 50), 4, A.cell_anchors(32, [1.0])).reshape(-1, 4)   # 200 x 200 image
    inside = np.flatnonzero((anchors >= 0).all(axis=1) & (anchors <= 200).all(axis=1))
    gts = anchors[rng.choice(inside, 5, replace=False)]
    kw = dict(LABEL_KW, batch_per_im=64, fg_ratio=0.25)
    labels, _ = A.anchor_targets(anchors, 200, 200, gts, np.zeros((0, 4)), rng, **kw)
    assert (labels == 1).sum() == 16
    assert (labels == 0).sum() == 48
    labels, boxes = A.anchor_targets(anchors, 200, 200, np.zeros((0, 4)), np.zeros((0, 4)), rng, **kw)
    assert (labels == 1).sum() == 0 and (labels == 0).sum() == 64
    assert not boxes.any()


def test_multilevel_targets_shapes_and_joint_batch():
    rng = np.random.RandomState(0)
    out = A.multilevel_anchor_targets(100, 150, np.array([[10, 10, 90, 60]], np.float32),
                                      np.zeros((0, 4), np.float32), rng, FPN_PARAMS)
    assert len(out) == 5
    for (labels, boxes), s in zip(out, (4, 8, 16, 32, 64)):
        fh, fw = int(np.ceil(128 / s)), int(np.ceil(160 / s))
        assert labels.shape == (fh, fw, 3) and labels.dtype == np.int32
        assert boxes.shape == (fh, fw, 3, 4) and boxes.dtype == np.float32
    total_pos = sum(int((lab == 1).sum()) for lab, _ in out)
    total = sum(int((lab >= 0).sum()) for lab, _ in out)
    assert 1 <= total_pos <= 128 and total == 256


def test_anchor_params_take_the_configs_keys_and_c4_its_single_stride():
    from config import config as cfg
    from tests.helpers import config_snapshot
    with config_snapshot():
        cfg.RPN.POSITIVE_ANCHOR_THRESH, cfg.RPN.BATCH_PER_IM = 0.65, 128
        params = A.AnchorParams.from_config(cfg)
        assert params == FPN_PARAMS._replace(positive_thresh=0.65, batch_per_im=128)
        cfg.MODE_FPN = False
        assert A.AnchorParams.from_config(cfg)[:2] == (False, (16,))


def test_full_size_image_gets_positive_anchors_on_every_used_level():
    # speed of this path is measured in scripts/benchmark.py, not asserted here
    rng = np.random.RandomState(0)
    gts = np.sort(rng.uniform(0, 800, size=(40, 4)).astype(np.float32).reshape(40, 2, 2), axis=1).reshape(40, 4)
    out = A.multilevel_anchor_targets(800, 1333, gts, np.zeros((0, 4), np.float32), rng, FPN_PARAMS)
    assert [lab.shape for lab, _ in out] == [(200, 336, 3), (100, 168, 3), (50, 84, 3), (25, 42, 3), (13, 21, 3)]
    assert sum(int((lab == 1).sum()) for lab, _ in out) > 0
    assert sum(int((lab >= 0).sum()) for lab, _ in out) == 256


def test_chunked_matching_equals_dense_reference_including_ties():
    rng = np.random.RandomState(1)
    anchors = A.grid_anchors((12, 12), 8, A.cell_anchors(32, [0.5, 1.0, 2.0])).reshape(-1, 4)
    xy = rng.uniform(0, 70, size=(6, 2))
    gts = np.concatenate([xy, xy + rng.uniform(4, 40, size=(6, 2))], 1).astype(np.float32)
    gts = np.concatenate([gts, [[12, 12, 36, 36]]]).astype(np.float32)  # ties between anchors
    iou = A.pairwise_iou(anchors, gts)
    best_iou, best_gt, best_for_gt = A._match(anchors, gts, chunk=37)
    np.testing.assert_array_equal(best_gt, iou.argmax(axis=1))
    np.testing.assert_array_equal(best_iou, iou.max(axis=1))
    expect = np.flatnonzero((iou == iou.max(axis=0, keepdims=True)).any(axis=1))
    np.testing.assert_array_equal(best_for_gt, expect)
    assert len(expect) > len(gts)  # the reference really contains ties
