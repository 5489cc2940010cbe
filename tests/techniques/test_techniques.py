"""The five MaskPlus techniques: the variables each adds, the baseline untouched, and what each
one computes (paper sections 3.1-3.5)."""
import functools

import numpy as np
import pytest

from tests.helpers import (build_graph, config_snapshot, configure, position_dependent_map, roi_align_reference,
                           synthetic_datapoint, train_steps, variable_shapes)
from maskplus.compat import tf, tfv1
from maskplus.presets import PRESETS, preset_overrides

K = 3  # categories in the tiny config
PAPER_ONLY = ("MODE_MASK", "MODE_FPN", "BACKBONE.", "TRAIN.", "FRCNN.", "PREPROC.", "FPN.", "MRCNN.", "RPN.", "DATA.")


def tiny_preset(name):
    """A preset's technique switches on top of the tiny config (its paper-scale setup dropped)."""
    values = {}
    for arg in preset_overrides(name):
        key, text = arg.split("=", 1)
        if key.startswith(PAPER_ONLY):
            continue
        import ast
        try:
            values[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key] = text
    if values.get("MASKPLUS.CONTEXT_FUSION"):
        values["MASKPLUS.CONTEXT_FUSION_DIMS"] = [32, 64]  # tiny widths, last = FPN.NUM_CHANNEL
    values.pop("MASKPLUS.DECONV_PYRAMID_DIM", None)
    if values.get("MASKPLUS.BIASED_TRAINING"):
        values["MASKPLUS.MASK_LOSS_ALPHA"] = [[0, 1.5], [8, 1.0]]
    return values


#: every technique off: the tiny baseline, whatever the config held when the baseline is first built
#: (``configure`` applies its overrides on top of the current config, e.g. a preset's)
TECHNIQUES_OFF = {"MASKPLUS.CONTEXT_FUSION": False, "MASKPLUS.DECONV_PYRAMID": False,
                  "MASKPLUS.BOUNDARY_REFINEMENT": "none", "MASKPLUS.QUASI_MULTITASK": [],
                  "MASKPLUS.BIASED_TRAINING": False}


@functools.lru_cache(maxsize=None)
def _baseline_variables(training):
    with config_snapshot():
        configure(TECHNIQUES_OFF, training=training)
        return variable_shapes(build_graph(training)[0])


def added_variables(graph, training):
    """The variables of ``graph`` (the configured model's) that the tiny baseline does not hold."""
    base, ours = _baseline_variables(training), variable_shapes(graph)
    assert set(base) <= set(ours), "a technique must only add variables"
    assert all(ours[k] == base[k] for k in base), "a technique must not change baseline shapes"
    return {k: v for k, v in ours.items() if k not in base}


def extra_variables(overrides, training):
    with config_snapshot():
        configure(overrides, training=training)
        return added_variables(build_graph(training)[0], training)


EXPECTED_EXTRA = {
    "context-fusion-256-256": {
        "context_fusion/conv0/W": [3, 3, 64, 32], "context_fusion/conv0/b": [32],
        "context_fusion/conv1/W": [3, 3, 32, 64], "context_fusion/conv1/b": [64]},
    "deconv-pyramid": {
        "maskrcnn/deconv_pyramid/up0/W": [2, 2, 64, 64], "maskrcnn/deconv_pyramid/up0/b": [64],
        "maskrcnn/deconv_pyramid/up1/W": [2, 2, 64, 64], "maskrcnn/deconv_pyramid/up1/b": [64],
        "maskrcnn/deconv_pyramid/down0/W": [3, 3, 64, 64], "maskrcnn/deconv_pyramid/down0/b": [64],
        "maskrcnn/deconv_pyramid/down1/W": [3, 3, 64, 64], "maskrcnn/deconv_pyramid/down1/b": [64]},
    "boundary-refinement-original": {
        "boundary_refinement/conv0/W": [3, 3, K, K], "boundary_refinement/conv0/b": [K],
        "boundary_refinement/conv1/W": [3, 3, K, K], "boundary_refinement/conv1/b": [K]},
    "quasi-multitask-2x": {
        "quasi_multitask/fcn0/W": [3, 3, 64, 64], "quasi_multitask/fcn0/b": [64],
        "quasi_multitask/fcn1/W": [3, 3, 64, 64], "quasi_multitask/fcn1/b": [64],
        "quasi_multitask/double/deconv0/W": [2, 2, 64, 64], "quasi_multitask/double/deconv0/b": [64],
        "quasi_multitask/double/deconv1/W": [2, 2, 64, 64], "quasi_multitask/double/deconv1/b": [64],
        "quasi_multitask/double/conv/W": [1, 1, 64, K], "quasi_multitask/double/conv/b": [K]},
    "quasi-multitask-0.5x": {
        "quasi_multitask/fcn0/W": [3, 3, 64, 64], "quasi_multitask/fcn0/b": [64],
        "quasi_multitask/fcn1/W": [3, 3, 64, 64], "quasi_multitask/fcn1/b": [64],
        "quasi_multitask/half/conv/W": [1, 1, 64, K], "quasi_multitask/half/conv/b": [K]},
    "biased-training": {},  # alpha is training state, not a model variable
    "baseline": {},
}


def _improved_expected():
    out, width = {}, K
    for i in range(4):
        p = f"boundary_refinement/module{i}"
        out.update({f"{p}/bn0/gamma": [width], f"{p}/bn0/beta": [width], f"{p}/bn0/mean/EMA": [width],
                    f"{p}/bn0/variance/EMA": [width], f"{p}/prelu0/alpha": [],
                    f"{p}/conv0/W": [1, 1, width, 16], f"{p}/conv0/b": [16],
                    f"{p}/bn1/gamma": [16], f"{p}/bn1/beta": [16], f"{p}/bn1/mean/EMA": [16],
                    f"{p}/bn1/variance/EMA": [16], f"{p}/prelu1/alpha": [],
                    f"{p}/conv1/W": [3, 3, 16, 4], f"{p}/conv1/b": [4]})
        width += 4
    out.update({"boundary_refinement/fuse/W": [1, 1, width, K], "boundary_refinement/fuse/b": [K]})
    return out


EXPECTED_EXTRA["boundary-refinement-improved"] = _improved_expected()


def test_quasi_multitask_variables_are_absent_from_the_inference_graph():
    assert extra_variables(tiny_preset("quasi-multitask-0.5x"), training=False) == {}
    assert extra_variables({"MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"]}, training=False) == {}


# the -p5 variants differ from their row only in the context level: one of them stands for all
TRAINED_PRESETS = sorted(n for n in PRESETS if not n.endswith("-p5")) + ["context-fusion-256-256-p5"]


def test_every_technique_with_expected_variables_is_a_trained_preset():
    assert set(EXPECTED_EXTRA) <= set(TRAINED_PRESETS)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED_PRESETS)
def test_every_preset_adds_exactly_its_variables_trains_with_finite_losses_and_predicts(name):
    """One training graph per preset (they cost ~10 s each): its variables beyond the baseline's
    are the technique's own (EXPECTED_EXTRA, the paper's layers), then two SGD steps."""
    with config_snapshot():
        configure(tiny_preset(name), training=True)
        graph, ph, model = build_graph(True)
        if name in EXPECTED_EXTRA:
            assert added_variables(graph, training=True) == EXPECTED_EXTRA[name]
        costs = train_steps(graph, ph, model, synthetic_datapoint(), steps=2)
        assert np.all(np.isfinite(costs)), costs
    with config_snapshot():
        configure(tiny_preset(name), training=False)
        graph, ph, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            outs = sess.run(["output/boxes:0", "output/scores:0", "output/labels:0", "output/masks:0"],
                            {ph["image"]: synthetic_datapoint()["image"]})
        n = len(outs[0])
        assert outs[0].shape == (n, 4) and outs[3].shape == (n, 28, 28)


def _fpn_mask_logits_at_inference(feats, boxes):
    """The configured FPN model's inference mask branch on P2-P6 ``feats`` and ``boxes`` of a 64 x 64 image."""
    from config import config as cfg
    from maskplus.engine.model import build_model
    from maskplus.modeling.model_mrcnn import mask_branch_inference
    model = build_model()
    return mask_branch_inference(feats, boxes, tf.constant([64, 64]), K, model.mask_head_func(),
                                 model.mask_roi_func(feats), cfg.TEST.MASK_BATCH_MULTIPLE, model.mask_techniques)


def _mask_branch(features_value, boxes_value, training=False, zero=()):
    """Run the inference mask branch on given P2-P6 values and boxes; variables named in ``zero`` are zeroed."""
    from tensorpack.tfutils.tower import TowerContext
    with tf.Graph().as_default() as g:
        tfv1.set_random_seed(1)
        feats = [tf.constant(f) for f in features_value]
        boxes = tf.constant(boxes_value)
        with TowerContext("", is_training=training):
            logits = _fpn_mask_logits_at_inference(feats, boxes)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            for v in tfv1.global_variables():
                if any(v.op.name.startswith(z) for z in zero):
                    v.load(np.zeros(v.shape.as_list(), np.float32), sess)
            return sess.run(logits), g, sess


def _features(seed=0, c=64):
    rng = np.random.RandomState(seed)
    return [rng.standard_normal((1, c, 64 // s, 64 // s)).astype(np.float32) for s in (4, 8, 16, 32, 64)]


@pytest.mark.parametrize("fusion_on", [True, False])
def test_contextual_fusion_sees_outside_the_roi(fusion_on):
    box = np.array([[4.0, 4.0, 20.0, 20.0]], np.float32)  # small: P2, top-left corner
    feats = _features()
    changed = [f.copy() for f in feats]
    changed[0][:, :, 10:, 10:] += 5.0  # P2 pixels 40..64 in the image: far outside the RoI
    with config_snapshot():
        configure({"MASKPLUS.CONTEXT_FUSION": fusion_on})
        before, _, _ = _mask_branch(feats, box)
        after, _, _ = _mask_branch(changed, box)
    assert (np.abs(after - before).max() > 1e-4) == fusion_on


def test_contextual_fusion_adds_one_context_to_every_roi():
    """3.1: the context branch's output is added to the RoI features: what fusion adds does not
    depend on the RoI features and is the same for every RoI."""
    from config import config as cfg
    from maskplus.techniques.context_fusion import fuse_context
    rng = np.random.RandomState(0)
    rois_a, rois_b = (rng.standard_normal((3, 64, 14, 14)).astype(np.float32) for _ in range(2))
    with config_snapshot():
        configure({"MASKPLUS.CONTEXT_FUSION": True})
        with tf.Graph().as_default(), tfv1.Session() as sess:
            rois = tfv1.placeholder(tf.float32, [None, 64, 14, 14])
            level = cfg.MASKPLUS.CONTEXT_FUSION_LEVEL
            fused = fuse_context(rois, tf.constant(_features()[level - 2]), cfg.FPN.ANCHOR_STRIDES[level - 2],
                                 tf.constant([64, 64]), cfg.MASKPLUS.CONTEXT_FUSION_DIMS)
            sess.run(tfv1.global_variables_initializer())
            added_a = sess.run(fused, {rois: rois_a}) - rois_a
            added_b = sess.run(fused, {rois: rois_b}) - rois_b
    assert np.abs(added_a).max() > 1e-3
    np.testing.assert_allclose(added_a, added_b, atol=1e-5)
    np.testing.assert_allclose(added_a, np.broadcast_to(added_a[:1], added_a.shape), atol=1e-6)


@pytest.mark.parametrize("level", [2, 5])
def test_contextual_fusion_pools_the_real_image_not_the_padding_on_its_level(level):
    """The full-image RoI of 3.1 is [0, 0, w, h] of the real 50 x 90 image (padded to 64 x 96) at
    the stride of MASKPLUS.CONTEXT_FUSION_LEVEL: in the mask branch built from the config, its
    14 x 14 RoIAlign (before the convolutions) equals a slow NumPy RoIAlign of that level's map,
    which differs by position and from level to level."""
    from config import config as cfg
    from tensorpack.tfutils.tower import TowerContext
    from maskplus.engine.model import mask_techniques, model_params
    from maskplus.modeling.model_mrcnn import build_mask_branch
    strides = (4, 8, 16, 32, 64)
    feats = [position_dependent_map(64 // s, 96 // s, offset=100.0 * k) for k, s in zip(range(2, 7), strides)]
    with config_snapshot():
        configure({"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_LEVEL": level})
        with tf.Graph().as_default() as graph, TowerContext("", is_training=False):
            rois = tf.zeros([1, cfg.FPN.NUM_CHANNEL, 14, 14])
            build_mask_branch(rois, [tf.constant(f) for f in feats], tf.constant([50, 90]), K,
                              model_params().mask.fpn_head(), techniques=mask_techniques())
            (pooled,) = [op.outputs[0] for op in graph.get_operations()
                         if op.type == "AvgPool" and op.name.startswith("context_fusion/")]
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                context = sess.run(pooled)
    box = np.array([0, 0, 90, 50]) / strides[level - 2]
    assert context.shape == (1, 2, 14, 14)
    for c in range(2):
        np.testing.assert_allclose(context[0, c], roi_align_reference(feats[level - 2][0, c], box, 14),
                                   rtol=1e-4, atol=1e-3)


def test_deconv_pyramid_is_the_identity_skip_when_its_weights_are_zero():
    from maskplus.techniques.deconv_pyramid import deconv_pyramid_module
    x = np.random.RandomState(0).standard_normal((2, 64, 14, 14)).astype(np.float32)
    with tf.Graph().as_default():
        y = deconv_pyramid_module(tf.constant(x), 64)
        g = tf.compat.v1.get_default_graph()
        up28 = g.get_tensor_by_name("deconv_pyramid/up0/output:0")
        down28 = g.get_tensor_by_name("deconv_pyramid/skip28:0")
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            u, d = sess.run([up28, down28])
            assert u.shape == (2, 64, 28, 28) and np.abs(u).max() > 0
            for v in tfv1.global_variables():
                if "/down0/" in v.op.name:
                    v.load(np.zeros(v.shape.as_list(), np.float32), sess)
            u, d = sess.run([up28, down28])
            np.testing.assert_allclose(d, u, atol=1e-6)  # down28 = conv(up56) + up28
            for v in tfv1.global_variables():
                v.load(np.zeros(v.shape.as_list(), np.float32), sess)
            np.testing.assert_allclose(sess.run(y), x, atol=1e-6)  # down14 = conv(...) + x14


@pytest.mark.parametrize("mode, last", [("original", "boundary_refinement/conv1/"),
                                        ("improved", "boundary_refinement/fuse/")])
def test_boundary_refinement_with_its_residual_zeroed_is_the_identity(mode, last):
    from maskplus.techniques.boundary_refinement import refine_boundary
    from tensorpack.tfutils.tower import TowerContext
    s = np.random.RandomState(0).standard_normal((3, K, 28, 28)).astype(np.float32)
    with tf.Graph().as_default(), TowerContext("", is_training=False):
        out = refine_boundary(tf.constant(s), mode, 4, [16, 4])
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            assert np.abs(sess.run(out) - s).max() > 1e-3  # the residual does something
            for v in tfv1.global_variables():
                if v.op.name.startswith(last):
                    v.load(np.zeros(v.shape.as_list(), np.float32), sess)
            np.testing.assert_allclose(sess.run(out), s, atol=1e-6)


def test_quasi_multitask_targets_are_the_gt_masks_at_14_and_56():
    dp = synthetic_datapoint()
    with config_snapshot():
        configure({"MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"], "FRCNN.FG_THRESH": 0.99}, training=True)
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            names = [op.name for op in graph.get_operations()]
            t14 = [n for n in names if n.endswith("mask_targets_14")]
            t56 = [n for n in names if n.endswith("mask_targets_56")]
            t28 = [n for n in names if n.endswith("sampled_fg_mask_targets")]
            assert len(t14) == len(t56) == len(t28) == 1
            fg_boxes = [n for n in names if n.endswith("/fg_boxes")][0] + ":0"
            feed = {ph[k]: v for k, v in dp.items()}
            m14, m56, m28, boxes = sess.run([t14[0] + ":0", t56[0] + ":0", t28[0] + ":0", fg_boxes], feed)
    assert m14.shape[1:] == (14, 14) and m56.shape[1:] == (56, 56) and m28.shape[1:] == (28, 28)
    # with FG_THRESH 0.99 the foreground RoIs are the gt boxes themselves
    masks = np.unpackbits(dp["gt_masks_packed"], axis=-1)[:, :, :96]
    gts = [tuple(b) for b in dp["gt_boxes"].tolist()]
    for k, box in enumerate(boxes.tolist()):
        gt_index = gts.index(tuple(box))
        for got in (m14[k], m28[k], m56[k]):
            np.testing.assert_allclose(got, _crop_reference(masks[gt_index], box, got.shape[0]), atol=1e-4)
        assert m14[k].min() > 0.99  # 14 samples over a >= 40 px box: all inside the object


def _crop_reference(mask, box, size):
    """size x size bilinear samples at the centres of a regular grid over ``box`` (pixel i covers
    [i, i+1)); zero outside the image."""
    x1, y1, x2, y2 = box
    h, w = mask.shape
    padded = np.pad(mask.astype(np.float64), 1)

    def sample(y, x):
        y, x = y + 1, x + 1  # into the padded image
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        dy, dx = y - y0, x - x0
        p = padded
        return (p[y0, x0] * (1 - dy) * (1 - dx) + p[y0, x0 + 1] * (1 - dy) * dx
                + p[y0 + 1, x0] * dy * (1 - dx) + p[y0 + 1, x0 + 1] * dy * dx)

    ys = y1 + (np.arange(size) + 0.5) * (y2 - y1) / size - 0.5
    xs = x1 + (np.arange(size) + 0.5) * (x2 - x1) / size - 0.5
    return np.array([[sample(y, x) for x in xs] for y in ys])


def test_quasi_multitask_losses_exist_in_training_only():
    with config_snapshot():
        configure({"MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"]}, training=True)
        train_ops = [op.name for op in build_graph(True)[0].get_operations()]
    with config_snapshot():
        configure({"MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"]}, training=False)
        infer_ops = [op.name for op in build_graph(False)[0].get_operations()]
    for size in (14, 56):
        assert any(n.endswith(f"quasi_multitask_loss_{size}") for n in train_ops)
        assert not any("quasi_multitask" in n for n in infer_ops)


def test_mask_loss_is_scaled_by_alpha():
    dp = synthetic_datapoint()
    with config_snapshot():
        configure({"MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.5], [10, 1.0]]})
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(0)
            sess.run(tfv1.global_variables_initializer())
            names = [op.name for op in graph.get_operations()]
            raw = [n for n in names if n.endswith("maskrcnn_loss/maskrcnn_loss")][0] + ":0"
            weighted = graph.get_tensor_by_name("weighted_maskrcnn_loss:0")
            feed = {ph[k]: v for k, v in dp.items()}
            r, w = sess.run([raw, weighted], feed)
            assert w == pytest.approx(1.5 * r, rel=1e-5)
            graph.get_tensor_by_name("mask_loss_alpha:0")
            [v for v in tfv1.global_variables() if v.op.name == "mask_loss_alpha"][0].load(1.0, sess)
            r, w = sess.run([raw, weighted], feed)
            assert w == pytest.approx(r, rel=1e-5)


def _inference_mask_logits(boxes_value, multiple, values=None):
    """Inference mask branch of maskplus-all with TEST.MASK_BATCH_MULTIPLE=multiple; variables
    set from ``values`` ({name: array}) when given. Returns (logits, variable values)."""
    from tensorpack.tfutils.tower import TowerContext
    with config_snapshot():
        configure(dict(tiny_preset("maskplus-all"), **{"TEST.MASK_BATCH_MULTIPLE": multiple}), training=False)
        with tf.Graph().as_default():
            feats = [tf.constant(f) for f in _features()]
            with TowerContext("", is_training=False):
                logits = _fpn_mask_logits_at_inference(feats, tf.constant(boxes_value))
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                for v in tfv1.global_variables():
                    if values is not None:
                        v.load(values[v.op.name], sess)
                return sess.run(logits), {v.op.name: sess.run(v) for v in tfv1.global_variables()}


@pytest.mark.parametrize("count", [0, 1, 5, 16, 17])
def test_padding_the_mask_batch_at_inference_changes_no_result(count):
    boxes = np.random.RandomState(count).uniform(0, 30, (count, 2)).astype(np.float32)
    boxes = np.concatenate([boxes, boxes + np.float32(20)], axis=1)
    padded, values = _inference_mask_logits(boxes, 16)
    exact, _ = _inference_mask_logits(boxes, 1, values)
    assert padded.shape == exact.shape == (count, K, 28, 28)
    np.testing.assert_allclose(padded, exact, atol=1e-4)


@pytest.mark.parametrize("name", ["deconv-pyramid", "maskplus-all"])
def test_an_image_without_detections_predicts_nothing_instead_of_failing(name):
    with config_snapshot():
        configure(dict(tiny_preset(name), **{"TEST.RESULT_SCORE_THRESH": 0.99}), training=False)
        graph, ph, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            boxes, masks = sess.run(["output/boxes:0", "output/masks:0"], {ph["image"]: synthetic_datapoint()["image"]})
    assert boxes.shape == (0, 4) and masks.shape == (0, 28, 28)


@pytest.mark.slow
def test_a_baseline_npz_loads_into_maskplus_all_with_only_the_new_variables_fresh(tmp_path):
    from maskplus.engine.checkpoint import CheckpointInit, export_npz
    path = str(tmp_path / "baseline.npz")
    with config_snapshot():
        configure({}, training=False)
        graph, _, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            export_npz(sess, path)
    new_vars = extra_variables(tiny_preset("maskplus-all"), training=True)
    with config_snapshot():
        configure(tiny_preset("maskplus-all"), training=True)
        graph, _, _ = build_graph(True)
        with graph.as_default():
            init = CheckpointInit(path)
            init._setup_graph()
    assert init.report.unused == []
    assert sorted(init.report.missing) == sorted(new_vars)
    assert any(n.startswith("quasi_multitask/") for n in new_vars) and any(n.startswith("context_fusion/") for n in new_vars)


@pytest.mark.parametrize("limit", [0, 3])
def test_the_mask_branch_trains_on_at_most_the_first_limit_foreground_rois(limit):
    dp = synthetic_datapoint()
    with config_snapshot():
        configure({"MRCNN.TRAIN_MAX_FG_PER_IM": limit, "FRCNN.FG_THRESH": 0.1})
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(0)
            sess.run(tfv1.global_variables_initializer())
            names = [op.name for op in graph.get_operations()]
            fg_boxes = [n for n in names if n.endswith("/fg_boxes") or n == "fg_boxes"][0] + ":0"
            targets = [n for n in names if n.endswith("sampled_fg_mask_targets")][0] + ":0"
            boxes, masks = sess.run([fg_boxes, targets], {ph[k]: v for k, v in dp.items()})
    assert len(boxes) > 3  # the low FG_THRESH makes many foreground RoIs
    assert len(masks) == (len(boxes) if limit == 0 else limit)
