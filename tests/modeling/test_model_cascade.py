"""Cascade R-CNN (FPN.CASCADE=True): stage re-matching, gradient scaling, inference averaging,
training of a tiny model, the MaskPlus techniques on it, and the config checks."""
import numpy as np
import pytest

from config import ConfigError
from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint, train_steps
from maskplus.compat import tf, tfv1

CASCADE = {"FPN.CASCADE": True}
WEIGHTS = [[10., 10., 5., 5.], [20., 20., 10., 10.], [30., 30., 15., 15.]]


def _np_iou(a, b):
    ix = np.maximum(0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    iy = np.maximum(0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _np_decode(deltas, boxes, weights, max_size):
    d = deltas / np.asarray(weights)
    wh = boxes[:, 2:] - boxes[:, :2]
    ctr = boxes[:, :2] + 0.5 * wh
    new_ctr = d[:, :2] * wh + ctr
    new_wh = np.exp(np.minimum(d[:, 2:], np.log(max_size / 16.0))) * wh
    return np.concatenate([new_ctr - 0.5 * new_wh, new_ctr + 0.5 * new_wh], axis=1)


def test_refined_boxes_are_matched_to_gt_at_the_stage_threshold():
    from maskplus.modeling.model_cascade import match_boxes_to_gt
    rng = np.random.RandomState(3)
    gt = np.array([[10, 10, 50, 60], [40, 30, 90, 80]], np.float32)
    jitter = rng.uniform(-12, 12, (40, 4)).astype(np.float32)
    boxes = np.concatenate([gt[rng.randint(0, 2, 40)] + jitter, [[0, 0, 5, 5]]]).astype(np.float32)
    labels_gt = np.array([3, 7], np.int64)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        p = match_boxes_to_gt(tf.constant(boxes), tf.constant(gt), tf.constant(labels_gt), 0.6)
        labels, fg_inds_wrt_gt, fg_boxes = sess.run([p.labels, p.fg_inds_wrt_gt, p.fg_boxes])
    iou = _np_iou(boxes, gt)
    fg = iou.max(axis=1) >= 0.6
    assert 0 < fg.sum() < len(boxes)  # the test exercises both sides of the threshold
    np.testing.assert_array_equal(labels, np.where(fg, labels_gt[iou.argmax(axis=1)], 0))
    np.testing.assert_array_equal(fg_inds_wrt_gt, iou.argmax(axis=1)[fg])
    np.testing.assert_array_equal(fg_boxes, boxes[fg])


def test_gradient_scaler_scales_only_the_gradient():
    from maskplus.modeling.model_cascade import gradient_scaler
    with tf.Graph().as_default(), tfv1.Session() as sess:
        x = tf.constant([1.0, -2.0, 3.0])
        y = gradient_scaler(1.0 / 3)(x)
        value, grad = sess.run([y, tf.gradients(tf.reduce_sum(y * y), x)[0]])
    np.testing.assert_allclose(value, [1.0, -2.0, 3.0])
    np.testing.assert_allclose(grad, 2 * np.array([1.0, -2.0, 3.0]) / 3, rtol=1e-6)


def test_inference_averages_stage_scores_and_uses_last_stage_boxes_decoded_in_chain():
    with config_snapshot():
        c = configure(dict(CASCADE, **{"TEST.RESULT_SCORE_THRESH": 0.0}), training=False)
        graph, placeholders, _ = build_graph(False)
        img = synthetic_datapoint()["image"]
        with graph.as_default():
            fetch = {"scores": graph.get_tensor_by_name("fastrcnn_all_scores:0"),
                     "boxes": graph.get_tensor_by_name("clip_boxes/fastrcnn_all_boxes:0"),
                     "proposals": graph.get_tensor_by_name("generate_fpn_proposals/boxes:0"),
                     "masks": graph.get_tensor_by_name("output/masks:0")}
            for k in (1, 2, 3):
                fetch[f"scores{k}"] = graph.get_tensor_by_name(f"cascade_scores_stage{k}:0")
                fetch[f"boxes{k}"] = graph.get_tensor_by_name(f"cascade_rcnn_stage{k}/output_boxes:0")
                fetch[f"deltas{k}"] = graph.get_tensor_by_name(f"cascade_rcnn_stage{k}/outputs/output_box:0")
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                # non-trivial box deltas, so that each stage really moves the boxes
                variables = {v.op.name: v for v in tfv1.global_variables()}
                for k in (1, 2, 3):
                    sess.run(variables[f"cascade_rcnn_stage{k}/outputs/box/b"].assign([2.0 * k, -1.0 * k, 0.5, -0.3]))
                out = sess.run(fetch, {placeholders["image"]: img})
        max_size = c.PREPROC.MAX_SIZE
    n = len(out["proposals"])
    assert n > 0 and out["scores"].shape == (n, 4) and out["masks"].ndim == 3
    np.testing.assert_allclose(out["scores"], (out["scores1"] + out["scores2"] + out["scores3"]) / 3, rtol=1e-5)
    # stage k decodes stage k-1's boxes (stage 1: the proposals) with its own weights, then clips
    inputs = out["proposals"]
    for k in (1, 2, 3):
        expected = np.clip(_np_decode(out[f"deltas{k}"].reshape(-1, 4), inputs, WEIGHTS[k - 1], max_size), 0, 96)
        np.testing.assert_allclose(out[f"boxes{k}"], expected, rtol=1e-4, atol=1e-3)
        inputs = out[f"boxes{k}"]
    assert not np.allclose(out["boxes3"], out["proposals"], atol=0.5)
    for cls in range(4):
        np.testing.assert_allclose(out["boxes"][:, cls], out["boxes3"], atol=1e-4)


def _refined_boxes_upstream(tensor):
    """The stages k whose refined boxes (``cascade_rcnn_stage{k}/output_boxes``) ``tensor`` depends on."""
    seen, todo, stages = set(), [tensor.op], set()
    while todo:
        op = todo.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        for k in (1, 2, 3):
            if op.name == f"cascade_rcnn_stage{k}/output_boxes":
                stages.add(k)
        todo.extend(t.op for t in op.inputs)
        todo.extend(op.control_inputs)
    return stages


def test_at_inference_each_stages_classifier_sees_that_stages_input_boxes():
    """As the example: stage 1 classifies the proposals, stage 2 stage 1's refined boxes, stage 3
    stage 2's; the mean of their scores goes with the boxes stage 3 decodes. No stage classifies
    the final boxes (the Cascade paper's ensemble would re-run all three heads on those)."""
    with config_snapshot():
        configure(CASCADE, training=False)
        graph, _, _ = build_graph(False)
        upstream = {k: _refined_boxes_upstream(graph.get_tensor_by_name(f"cascade_scores_stage{k}:0"))
                    for k in (1, 2, 3)}
        final_boxes = _refined_boxes_upstream(graph.get_tensor_by_name("clip_boxes/fastrcnn_all_boxes:0"))
    assert upstream == {1: set(), 2: {1}, 3: {1, 2}}
    assert final_boxes == {1, 2, 3}


@pytest.mark.slow
def test_tiny_cascade_trains_with_six_finite_box_losses_and_scaled_stage_gradients():
    with config_snapshot():
        configure(CASCADE)
        graph, placeholders, model = build_graph(True)
        dp = synthetic_datapoint()
        with graph.as_default():
            losses = [graph.get_tensor_by_name(f"cascade_loss_stage{k}/fastrcnn_losses/{n}:0")
                      for k in (1, 2, 3) for n in ("label_loss", "box_loss")]
            mask_loss = graph.get_tensor_by_name("maskrcnn_loss/maskrcnn_loss:0")
            # stage 1's head input is its RoI features, their gradient scaled by 1/3
            head_in = graph.get_tensor_by_name("cascade_rcnn_stage1/head/fc6/Reshape:0").op.inputs[0]
            roi = graph.get_tensor_by_name("cascade_rcnn_stage1/multilevel_roi_align/GatherV2:0")
            grads = tf.gradients(losses[0], [roi, head_in])
            labels2 = graph.get_tensor_by_name("cascade_rcnn_stage2/match_box_with_gt_0.6/StopGradient:0")
            feed = {placeholders[k]: v for k, v in dp.items()}
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                values, m, (g_roi, g_in), lab2 = sess.run([losses, mask_loss, grads, labels2], feed)
        assert all(np.isfinite(values)) and np.isfinite(m), values
        assert lab2.max() > 0  # refined boxes do reach the 0.6 threshold (the gt boxes at least)
        np.testing.assert_allclose(g_roi, g_in / 3.0, rtol=1e-5, atol=1e-9)
        assert np.abs(g_in).max() > 0
        costs = train_steps(graph, placeholders, model, dp, steps=3)
    assert all(np.isfinite(costs)), costs


@pytest.mark.slow
def test_maskplus_techniques_train_on_cascade():
    with config_snapshot():
        configure(dict(CASCADE, **{"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.DECONV_PYRAMID": True,
                                   "MASKPLUS.BOUNDARY_REFINEMENT": "original", "MASKPLUS.QUASI_MULTITASK": ["2x"],
                                   "MASKPLUS.BIASED_TRAINING": True}))
        graph, placeholders, model = build_graph(True)
        names = [op.name for op in graph.get_operations()]
        for suffix in ("context_fused_roi_features", "deconv_pyramid_output", "refined_mask_logits",
                       "quasi_multitask_loss_56", "weighted_maskrcnn_loss"):
            assert any(n.endswith(suffix) for n in names), suffix
        costs = train_steps(graph, placeholders, model, synthetic_datapoint(), steps=2)
    assert all(np.isfinite(costs)), costs


@pytest.mark.parametrize("overrides, key", [
    ({"CASCADE.IOUS": [0.5, 0.6]}, "CASCADE.IOUS"),
    ({"CASCADE.IOUS": [0.4, 0.6, 0.7]}, "FRCNN.FG_THRESH"),
    ({"CASCADE.BBOX_REG_WEIGHTS": [[10., 10., 5., 5.], [20., 20., 10., 10.]]}, "CASCADE.BBOX_REG_WEIGHTS"),
])
def test_inconsistent_cascade_settings_are_rejected_naming_the_key(overrides, key):
    with config_snapshot(), pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        configure(dict(CASCADE, **overrides))
