"""ResNet-C4 models (MODE_FPN=False): anchors, data targets, graph structure, training, inference,
and the MaskPlus techniques on C4."""
import numpy as np
import pytest

from config import ConfigError
from tests.helpers import (build_graph, config_snapshot, configure, position_dependent_map, roi_align_reference,
                           synthetic_datapoint, train_steps)
from maskplus.compat import tf, tfv1

C4 = {"MODE_FPN": False, "RPN.HEAD_DIM": 64, "RPN.TRAIN_PRE_NMS_TOPK": 300, "RPN.TRAIN_POST_NMS_TOPK": 100,
      "RPN.TEST_PRE_NMS_TOPK": 200, "RPN.TEST_POST_NMS_TOPK": 50}
#: every technique that C4 supports (contextual fusion needs an FPN level)
C4_TECHNIQUES = {"MASKPLUS.DECONV_PYRAMID": True, "MASKPLUS.BOUNDARY_REFINEMENT": "improved",
                 "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"], "MASKPLUS.BIASED_TRAINING": True}


def test_c4_cell_anchors_are_every_size_with_every_ratio_size_major():
    from maskplus.data.anchors import c4_cell_anchors
    cell = c4_cell_anchors((32, 64), (0.5, 1.0, 2.0))
    assert cell.shape == (6, 4)
    # index 3 = second size, first ratio (h/w = 0.5): w = sqrt(64*64/0.5) = 90.51, h = 45.25
    w, h = np.sqrt(64 * 64 / 0.5), 0.5 * np.sqrt(64 * 64 / 0.5)
    np.testing.assert_allclose(cell[3], [-w / 2, -h / 2, w / 2, h / 2], rtol=1e-6)
    np.testing.assert_allclose(cell[1], [-16, -16, 16, 16], rtol=1e-6)


def test_graph_anchors_equal_the_data_pipeline_anchors():
    from maskplus.data import anchors
    from maskplus.modeling import model_box
    sizes, ratios = (32, 64, 128), (0.5, 1.0, 2.0)
    # a 100 x 84 image: the C4 map is floor(100/16) x floor(84/16) = 6 x 5
    expected = anchors.grid_anchors((6, 5), 16, anchors.c4_cell_anchors(sizes, ratios))
    assert expected.shape == (6, 5, 9, 4)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        got = sess.run(model_box.grid_anchors(tf.zeros([1, 8, 6, 5]), 16, anchors.c4_cell_anchors(sizes, ratios)))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # row 2, column 3: centre (48, 32); anchor 1 = size 32, ratio 1; anchor 4 = size 64, ratio 1
    np.testing.assert_allclose(expected[2, 3, 1], [48 - 16, 32 - 16, 48 + 16, 32 + 16])
    np.testing.assert_allclose(expected[2, 3, 4], [48 - 32, 32 - 32, 48 + 32, 32 + 32])


def test_c4_targets_sample_anchors_beyond_the_map_then_cut_them_as_the_example():
    """A 111 x 111 image has a 6 x 6 C4 map (floor(111/16)), but a 30 x 30 anchor of cell row 6
    (centre y = 96: [81, 111]) still lies inside the image. The example labels the whole field
    and cuts it to the map afterwards, so that anchor, equal to the gt box (IoU 1), is the gt's
    best anchor; the map's anchor just above it ([33, 65, 63, 95], IoU 14*30 / (1800 - 420) =
    0.304, between the 0.3 and 0.7 thresholds) is then neither best nor above 0.7: ignored (-1),
    and the map has no positive at all. Labelling only the map's anchors would make it positive."""
    from maskplus.data.anchors import AnchorParams, c4_anchor_targets
    params = AnchorParams(fpn=False, strides=(16,), sizes=(30,), ratios=(1.0,), positive_thresh=0.7,
                          negative_thresh=0.3, batch_per_im=256, fg_ratio=0.5, crowd_overlap_thresh=9.99)
    gt = np.array([[33, 81, 63, 111]], np.float32)
    labels, boxes = c4_anchor_targets(111, 111, gt, np.zeros((0, 4)), np.random.RandomState(0), params)
    assert labels.shape == (6, 6, 1) and boxes.shape == (6, 6, 1, 4)
    assert labels[5, 3, 0] == -1 and (labels == 1).sum() == 0
    # inside the image: cells 1..5 of the map in each direction (centre 16 i within [15, 96]);
    # every one of them but (5, 3) has IoU < 0.3 with the gt: negative
    expected = -np.ones((6, 6), np.int32)
    expected[1:6, 1:6] = 0
    expected[5, 3] = -1
    np.testing.assert_array_equal(labels[:, :, 0], expected)
    assert not boxes.any()


def test_c4_config_derives_anchor_count_and_keeps_max_size():
    with config_snapshot():
        c = configure({"MODE_FPN": False}, tiny=False)
        assert c.RPN.NUM_ANCHOR == 15 and c.PREPROC.MAX_SIZE == 1333
    with config_snapshot():
        c = configure({}, tiny=False)
        assert c.RPN.NUM_ANCHOR == 3 and c.PREPROC.MAX_SIZE == 1344


# On a 100 x 100 image: b1 lies beyond the right edge and is clipped to zero width (kept: RPN.MIN_SIZE
# is 0); b2 overlaps b0 at IoU 38*38 / (2*1600 - 38*38) = 0.82 > 0.7 and is suppressed.
_BOXES = [[10, 10, 50, 50], [120, 20, 160, 60], [12, 12, 52, 52], [60, 60, 90, 95]]
_LOGITS = [5.0, 4.0, 3.0, 2.0]


@pytest.mark.parametrize("pre, post, expected", [
    (4, 10, [[10, 10, 50, 50], [100, 20, 100, 60], [60, 60, 90, 95]]),
    (3, 10, [[10, 10, 50, 50], [100, 20, 100, 60]]),   # b3 is not among the top 3 before NMS
    (4, 2, [[10, 10, 50, 50], [100, 20, 100, 60]]),    # NMS keeps three, the top 2 after it stay
])
def test_c4_proposals_take_the_pre_nms_top_k_then_nms_then_the_post_nms_top_k(pre, post, expected):
    from config import config as cfg
    from maskplus.modeling.model_rpn import RPNParams, generate_rpn_proposals
    with config_snapshot():
        configure(C4)
        rpn = RPNParams.from_config(cfg)
        with tf.Graph().as_default(), tfv1.Session() as sess:
            boxes, _ = sess.run(generate_rpn_proposals(tf.constant(_BOXES, tf.float32), tf.constant(_LOGITS),
                                                       tf.constant([100, 100]), pre, post, min_size=rpn.min_size,
                                                       nms_thresh=rpn.nms_thresh))
    np.testing.assert_array_equal(boxes, expected)


def test_c4_rpn_keeps_the_examples_c4_top_k_of_each_phase(monkeypatch):
    """The example's C4 keys: 12000 before and 2000 after NMS in training, 6000 and 1000 at test."""
    import maskplus.modeling.model_c4 as model_c4
    seen = []

    def record(boxes, scores, image_shape2d, pre_nms_topk, post_nms_topk, **nms):
        seen.append((pre_nms_topk, post_nms_topk))
        return boxes[:0], scores[:0]
    monkeypatch.setattr(model_c4, "generate_rpn_proposals", record)
    from tensorpack.tfutils.tower import TowerContext
    from maskplus.engine.model import model_params
    for training in (True, False):
        with config_snapshot():
            configure({"MODE_FPN": False, "RPN.HEAD_DIM": 16}, tiny=False, training=training)
            params = model_params()
            with tf.Graph().as_default(), TowerContext("", is_training=training):
                model_c4.c4_rpn(tf.zeros([1, 32, 4, 4]), tf.constant([64, 64]), tf.zeros([4, 4, 15], tf.int32),
                                tf.zeros([4, 4, 15, 4]), training, params.rpn, params.frcnn.max_size)
    assert seen == [(12000, 2000), (6000, 1000)]


@pytest.mark.parametrize("overrides, key", [
    ({"MASKPLUS.CONTEXT_FUSION": True}, "MASKPLUS.CONTEXT_FUSION"),
    ({"FPN.CASCADE": True}, "FPN.CASCADE"),
    ({"RPN.ANCHOR_STRIDE": 8}, "RPN.ANCHOR_STRIDE"),
])
def test_what_c4_cannot_do_is_rejected_naming_the_key(overrides, key):
    with config_snapshot(), pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        configure(dict(C4, **overrides))


def test_c4_rois_are_cropped_from_c4_at_stride_16_and_14_x_14(monkeypatch):
    """Before res5, each RoI is a 14 x 14 RoIAlign of C4 at box / 16: equal to a slow NumPy
    RoIAlign on a map that differs by position (a 96 x 176 image: a 6 x 11 map)."""
    import maskplus.modeling.model_c4 as model_c4
    monkeypatch.setattr(model_c4, "resnet_conv5", lambda crops, backbone: crops)  # what enters res5
    fmap = position_dependent_map(6, 11)
    boxes = np.array([[3.3, 5.6, 60.2, 40.9], [100.5, 20.25, 170.0, 90.1], [30.7, 50.2, 46.1, 61.4]], np.float32)
    from maskplus.engine.model import model_params
    with config_snapshot():
        configure(C4)
        params = model_params()
        with tf.Graph().as_default(), tfv1.Session() as sess:
            crops = sess.run(model_c4.c4_roi_features(tf.constant(fmap), tf.constant(boxes), params.rpn.anchor_stride,
                                                      params.backbone))
    assert crops.shape == (3, 2, 14, 14)
    for k, box in enumerate(boxes):
        for c in range(2):
            np.testing.assert_allclose(crops[k, c], roi_align_reference(fmap[0, c], box / 16.0, 14), rtol=1e-4,
                                       atol=1e-3, err_msg=f"box {k}, channel {c}")


def _c4_training_graph(overrides, h=100, w=84):
    configure(dict(C4, **overrides))
    dp = synthetic_datapoint(h=h, w=w, boxes=((10, 12, 50, 60), (40, 30, 80, 90)))
    return build_graph(True), dp


@pytest.mark.slow
def test_tiny_c4_map_matches_its_anchor_targets_and_trains_with_finite_losses():
    with config_snapshot():
        (graph, placeholders, model), dp = _c4_training_graph({})
        # floor(100/16) x floor(84/16): the C4 map of an unpadded image, as the targets assume
        assert dp["anchor_labels"].shape == (6, 5, 15) and dp["anchor_boxes"].shape == (6, 5, 15, 4)
        assert (dp["anchor_labels"] == 1).sum() >= 1
        names = [op.name for op in graph.get_operations()]
        # training runs res5 once: the mask head reads the box head's res5 features
        assert not any(n.startswith("group3_1/") for n in names)
        with graph.as_default():
            c4 = graph.get_tensor_by_name("group2/block0/output:0")
            targets = graph.get_tensor_by_name("sampled_fg_mask_targets:0")
            losses = [graph.get_tensor_by_name(n + ":0") for n in (
                "rpn_losses/label_loss", "rpn_losses/box_loss", "fastrcnn_losses/label_loss",
                "fastrcnn_losses/box_loss", "maskrcnn_loss/maskrcnn_loss")]
            feed = {placeholders[k]: v for k, v in dp.items()}
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                c4_shape, t, values = sess.run([tf.shape(c4), targets, losses], feed)
        assert list(c4_shape) == [1, 1024, 6, 5]
        assert t.shape[1:] == (14, 14)  # C4 masks are 14 x 14
        assert all(np.isfinite(values)) and values[0] > 0, values
        costs = train_steps(graph, placeholders, model, dp, steps=3)
    assert all(np.isfinite(costs)), costs


def test_tiny_c4_inference_gives_14x14_masks_from_a_second_res5_pass():
    with config_snapshot():
        configure(dict(C4, **{"TEST.RESULT_SCORE_THRESH": 0.0}), training=False)
        graph, placeholders, _ = build_graph(False)
        assert any(op.name.startswith("group3_1/") for op in graph.get_operations())
        img = synthetic_datapoint(h=100, w=84)["image"]
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            boxes, scores, labels, masks = sess.run(
                [graph.get_tensor_by_name(f"output/{k}:0") for k in ("boxes", "scores", "labels", "masks")],
                {placeholders["image"]: img})
    n = len(boxes)
    assert n > 0 and scores.shape == (n,) and labels.shape == (n,) and masks.shape == (n, 14, 14)
    assert ((masks >= 0) & (masks <= 1)).all() and (labels >= 1).all()


@pytest.mark.slow
def test_maskplus_techniques_train_on_c4():
    with config_snapshot():
        (graph, placeholders, model), dp = _c4_training_graph(C4_TECHNIQUES)
        names = {op.name for op in graph.get_operations()}
        for suffix in ("quasi_multitask_loss_7", "quasi_multitask_loss_28", "weighted_maskrcnn_loss",
                       "refined_mask_logits"):
            assert any(n.endswith(suffix) for n in names), suffix
        def tensor(suffix):
            (name,) = [n for n in names if n.endswith(suffix)]
            return graph.get_tensor_by_name(name + ":0")

        with graph.as_default():
            deconv_out = tensor("deconv_pyramid_output")
            t7, t28 = tensor("mask_targets_7"), tensor("mask_targets_28")
            assert deconv_out.shape.as_list()[1:] == [2048, 7, 7]  # res5's width, before the deconv
            feed = {placeholders[k]: v for k, v in dp.items()}
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                m7, m28 = sess.run([t7, t28], feed)
        assert m7.shape[1:] == (7, 7) and m28.shape[1:] == (28, 28)
        costs = train_steps(graph, placeholders, model, dp, steps=2)
    assert all(np.isfinite(costs)), costs


def test_training_mapper_gives_c4_targets(tiny_coco, cfg_override):
    from maskplus.data.pipeline import LoaderFaults
    from maskplus.engine.trainer import train_dataflow
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetC4Model
    cfg_override({"MODE_FPN": False})
    with config_snapshot():
        configure({"MODE_FPN": False, "DATA.BASEDIR": str(tiny_coco), "PREPROC.TRAIN_SHORT_EDGE_SIZE": [160, 160]},
                  class_names=("a", "b"), tiny=False)
        ds = train_dataflow(LoaderFaults(0.01))
        ds.reset_state()
        dp = next(iter(ds))
        spec_names = [s.name for s in ResNetC4Model(model_params()).inputs()]
    assert list(dp) == spec_names == ["image", "anchor_labels", "anchor_boxes", "gt_boxes", "gt_labels",
                                      "gt_masks_packed", "image_id"]
    h, w = dp["image"].shape[:2]
    assert dp["anchor_labels"].shape == (h // 16, w // 16, 15)
    assert dp["anchor_boxes"].shape == (h // 16, w // 16, 15, 4)
    assert (dp["anchor_labels"] == 1).sum() >= 1
