"""Fast R-CNN inference (decoding, clipping, scores, per-class NMS, the per-image cap) and the
masks of the detections, against a slow NumPy reference of the example's rules:

* each RoI's class-k box is its deltas divided by FRCNN.BBOX_REG_WEIGHTS = (10, 10, 5, 5), decoded
  from the RoI (size deltas capped at log(MAX_SIZE / 16)), then clipped to the (h, w) image;
* scores are the softmax of the class logits; background is dropped; per class, boxes scoring
  above TEST.RESULT_SCORE_THRESH = 0.05 go through greedy NMS at TEST.FRCNN_NMS_THRESH = 0.5;
* the best TEST.RESULTS_PER_IM (100) of all classes are kept, best first;
* a detection's mask is the mask head's channel of its own class.
"""
import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tf, tfv1

EXAMPLE = dict(weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.05, nms_thresh=0.5, per_image=100)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def decode_and_clip(proposals, box_logits, height, width, max_size, weights):
    """N x C x 4 boxes: every class's deltas (divided by the weights) applied to each RoI, clipped."""
    d = box_logits.astype(np.float64) / np.asarray(weights)
    size = (proposals[:, 2:] - proposals[:, :2]).astype(np.float64)[:, None]
    centre = proposals[:, :2][:, None] + 0.5 * size
    new_centre = d[..., :2] * size + centre
    new_size = np.exp(np.minimum(d[..., 2:], np.log(max_size / 16.0))) * size
    boxes = np.concatenate([new_centre - 0.5 * new_size, new_centre + 0.5 * new_size], axis=-1)
    boxes[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    boxes[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return boxes


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_detections(boxes, scores, score_thresh, nms_thresh, per_image):
    """[(score, label, box)] best first, from N x C x 4 boxes and N x C scores (class 0 = background)."""
    found = []
    for cls in range(1, scores.shape[1]):
        kept = []
        for i in sorted(np.flatnonzero(scores[:, cls] > score_thresh), key=lambda i: -scores[i, cls]):
            if all(_iou(boxes[i, cls], boxes[j, cls]) <= nms_thresh for j in kept):
                kept.append(i)
        found += [(scores[i, cls], cls, boxes[i, cls]) for i in kept]
    return sorted(found, key=lambda t: -t[0])[:per_image]


def _run_inference_outputs(proposals, box_logits, label_logits, image_hw, overrides=None):
    """The model's own inference post-processing (ResNetFPNModel.inference_outputs) on given head outputs."""
    from tensorpack.tfutils.tower import TowerContext
    from config import config as cfg
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    from maskplus.modeling.model_frcnn import BoxProposals, FastRCNNHead
    with config_snapshot():
        configure(dict({"MODE_MASK": False}, **(overrides or {})), training=False)
        with tf.Graph().as_default() as graph, TowerContext("", is_training=False):
            head = FastRCNNHead(BoxProposals(tf.constant(proposals)), tf.constant(box_logits),
                                tf.constant(label_logits), None, cfg.FRCNN.BBOX_REG_WEIGHTS, cfg.PREPROC.MAX_SIZE)
            ResNetFPNModel(model_params()).inference_outputs(None, head, tf.constant(image_hw))
            with tfv1.Session() as sess:
                return sess.run([graph.get_tensor_by_name(f"output/{n}:0") for n in ("boxes", "scores", "labels")])


def _assert_equal_detections(got, expected):
    boxes, scores, labels = got
    assert labels.tolist() == [lab for _, lab, _ in expected]
    np.testing.assert_allclose(scores, [s for s, _, _ in expected], rtol=1e-5)
    np.testing.assert_allclose(boxes, np.array([b for _, _, b in expected]).reshape(-1, 4), rtol=1e-5, atol=1e-3)


def _head_outputs(seed=0, n=30):
    """Random RoIs on a 60 x 100 (h x w) image, some past its right or bottom edge; box deltas of
    ~15% of the RoI size (in weighted units) and class logits spread enough that scores differ."""
    rng = np.random.RandomState(seed)
    xy = rng.uniform([0, 0], [85, 48], (n, 2))
    proposals = np.concatenate([xy, xy + rng.uniform([8, 8], [40, 30], (n, 2))], axis=1).astype(np.float32)
    box_logits = (rng.normal(0, 1, (n, 4, 4)) * [1.5, 1.5, 1.0, 1.0]).astype(np.float32)
    label_logits = rng.normal(0, 1.5, (n, 4)).astype(np.float32)
    return proposals, box_logits, label_logits


HEIGHT, WIDTH, MAX_SIZE = 60, 100, 128.0  # MAX_SIZE of the tiny config


def _expected(proposals, box_logits, label_logits, weights=EXAMPLE["weights"], clip=True, **rules):
    rules = dict(EXAMPLE, **rules)
    rules.pop("weights")
    boxes = decode_and_clip(proposals, box_logits, HEIGHT if clip else 1e9, WIDTH if clip else 1e9, MAX_SIZE, weights)
    return reference_detections(boxes, softmax(label_logits), **rules)


def test_fast_rcnn_inference_equals_the_numpy_reference_of_the_examples_rules():
    head = _head_outputs()
    expected = _expected(*head)
    # the inputs make each rule visible: another value of it gives other detections
    for other in (dict(weights=(1.0, 1.0, 1.0, 1.0)), dict(clip=False), dict(nms_thresh=0.7), dict(nms_thresh=0.4),
                  dict(score_thresh=0.01), dict(score_thresh=0.1)):
        alternative = _expected(*head, **other)
        assert len(alternative) != len(expected) or any(
            a[1] != b[1] or not np.allclose(a[2], b[2], atol=1e-2) for a, b in zip(alternative, expected)), other
    boxes = decode_and_clip(head[0], head[1], HEIGHT, WIDTH, MAX_SIZE, EXAMPLE["weights"])
    assert (boxes[..., 2] == WIDTH).any() and (boxes[..., 3] == HEIGHT).any()  # clipped at both far edges
    _assert_equal_detections(_run_inference_outputs(*head, [HEIGHT, WIDTH]), expected)


def test_the_score_and_nms_thresholds_are_the_configs():
    """Non-default TEST.RESULT_SCORE_THRESH and TEST.FRCNN_NMS_THRESH, each giving other detections
    than the example's defaults would: the post-processing reads both keys."""
    head = _head_outputs(seed=2)
    rules = dict(score_thresh=0.12, nms_thresh=0.3)
    expected = _expected(*head, **rules)
    for defaults in (dict(rules, score_thresh=0.05), dict(rules, nms_thresh=0.5)):
        alternative = _expected(*head, **defaults)
        assert len(alternative) != len(expected), defaults
    got = _run_inference_outputs(*head, [HEIGHT, WIDTH], {"TEST.RESULT_SCORE_THRESH": 0.12,
                                                          "TEST.FRCNN_NMS_THRESH": 0.3})
    _assert_equal_detections(got, expected)


def test_at_most_results_per_im_detections_are_kept_best_first():
    head = _head_outputs(seed=1)
    assert len(_expected(*head)) > 6
    got = _run_inference_outputs(*head, [HEIGHT, WIDTH], {"TEST.RESULTS_PER_IM": 6})
    _assert_equal_detections(got, _expected(*head, per_image=6))


# ------------------------------------------------------------------ the whole inference graph
MASK_BIAS = [-2.0, 0.5, 3.0]  # the mask head's constant logit for classes 1, 2, 3


@pytest.fixture(scope="module")
def inference():
    """The tiny model's inference graph on a 90 x 120 image, its box outputs moved by hand (a
    delta of (3, -2, 1, -0.5) in weighted units plus noise) and its class outputs spread by larger
    random weights, the mask head's last layer set to a constant logit per class: the graph's
    proposals, head outputs and final outputs. The head outputs to final outputs step is the one
    the NumPy reference checks here: the wiring the designed cases above cannot see."""
    rng = np.random.RandomState(4)
    with config_snapshot():
        configure({}, training=False)
        graph, ph, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(2)
            sess.run(tfv1.global_variables_initializer())
            variables = {v.op.name: v for v in tfv1.global_variables()}
            box_w = variables["fastrcnn/outputs/box/W"]
            box_w.load(rng.normal(0, 0.05, box_w.shape.as_list()), sess)
            variables["fastrcnn/outputs/box/b"].load(np.tile([3.0, -2.0, 1.0, -0.5], 4), sess)
            class_w = variables["fastrcnn/outputs/class/W"]
            class_w.load(rng.normal(0, 0.3, class_w.shape.as_list()), sess)
            mask_w = variables["maskrcnn/conv/W"]
            mask_w.load(np.zeros(mask_w.shape.as_list()), sess)
            variables["maskrcnn/conv/b"].load(MASK_BIAS, sess)
            names = {"proposals": "generate_fpn_proposals/boxes:0", "label_logits": "fastrcnn/outputs/class/output:0",
                     "box_logits": "fastrcnn/outputs/output_box:0", "boxes": "output/boxes:0",
                     "scores": "output/scores:0", "labels": "output/labels:0", "masks": "output/masks:0"}
            image = synthetic_datapoint(h=90, w=120)["image"]
            return sess.run(names, {ph["image"]: image})


def test_the_inference_graph_decodes_its_head_outputs_by_the_examples_rules(inference):
    out = inference
    boxes = decode_and_clip(out["proposals"], out["box_logits"], 90, 120, MAX_SIZE, EXAMPLE["weights"])
    expected = reference_detections(boxes, softmax(out["label_logits"]), 0.05, 0.5, 100)
    assert len(expected) > 5
    _assert_equal_detections((out["boxes"], out["scores"], out["labels"]), expected)


def test_each_detections_mask_is_its_own_class_channel(inference):
    labels, masks = inference["labels"], inference["masks"]
    assert {2, 3} <= set(labels.tolist())  # classes other than the first
    expected = 1 / (1 + np.exp(-np.array(MASK_BIAS)[labels - 1]))
    np.testing.assert_allclose(masks, np.broadcast_to(expected[:, None, None], masks.shape), rtol=1e-5)
