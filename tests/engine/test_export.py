"""SavedModel and frozen-graph export: reloaded with plain TensorFlow (no Tensorpack), they give
the same outputs as predict.py's predictor on an image."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import config_snapshot, configure, write_random_model
from maskplus.compat import tfv1

PLAIN_TF = r'''
import sys, numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
image = np.load(sys.argv[1])
names = ["boxes", "scores", "labels", "masks"]
out = {}
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sys.argv[2])
    sig = meta.signature_def["serving_default"]
    fetches = {k: sig.outputs[k].name for k in names}
    res = sess.run(fetches, {sig.inputs["image"].name: image})
    out.update({"saved_" + k: v for k, v in res.items()})
graph_def = tf.compat.v1.GraphDef()
graph_def.ParseFromString(open(sys.argv[3], "rb").read())
with tf.Graph().as_default() as g:
    tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=g) as sess:
        res = sess.run({k: k + ":0" for k in names}, {"input_image:0": image})
        out.update({"frozen_" + k: v for k, v in res.items()})
assert "tensorpack" not in sys.modules and "maskplus" not in sys.modules
np.savez(sys.argv[4], **out)
'''


def near_tie_order(scores, boxes, expected_scores, expected_boxes, tie=1e-5):
    """The order of the detections (``scores``, ``boxes``) that lines them up with the expected
    ones: random weights give many scores near 0.25, and two within round-off of each other may
    come out swapped by another graph. Only such near ties are reordered (to the closest box)."""
    order, free = [], list(range(len(scores)))
    for score, box in zip(expected_scores, expected_boxes):
        tied = [j for j in free if abs(scores[j] - score) <= tie] or free[:1]
        best = min(tied, key=lambda j: np.abs(boxes[j] - box).max())
        order.append(best)
        free.remove(best)
    return np.asarray(order + free, int)


def test_near_tie_order_swaps_only_near_ties():
    boxes = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], np.float32)
    scores = np.array([0.9, 0.25319302, 0.25319305])
    expected = np.array([0.9, 0.25319305, 0.25319302])
    assert near_tie_order(scores, boxes, expected, boxes[[0, 2, 1]]).tolist() == [0, 2, 1]
    apart = np.array([0.9, 0.3, 0.2])  # not a tie: the wrong box stays where it is and fails the test
    assert near_tie_order(apart, boxes, apart, boxes[[0, 2, 1]]).tolist() == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.cli
def test_saved_model_and_frozen_graph_match_the_predictor(tmp_path):
    from maskplus.engine.export import export_frozen_graph, export_serving
    from maskplus.engine.inference import build_predictor, run_network
    # an image already at the test size (short edge 96, long edge <= 128): both paths resize it
    # to itself, so they must agree exactly (up to float round-off)
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, (96, 128, 3)).astype(np.uint8)
    image[20:60, 30:90] = (40, 200, 90)
    weights = str(tmp_path / "model.npz")
    with config_snapshot():
        configure({"TEST.RESULT_SCORE_THRESH": 0.0, "MASKPLUS.BOUNDARY_REFINEMENT": "improved",
                   "MASKPLUS.CONTEXT_FUSION": True}, training=False)
        write_random_model(weights)
        expected = run_network(build_predictor(weights), image)
        export_serving(weights, str(tmp_path / "saved"))
        export_frozen_graph(weights, str(tmp_path / "model.pb"))
        with pytest.raises(FileExistsError, match="not empty"):
            export_serving(weights, str(tmp_path / "saved"))
    np.save(tmp_path / "image.npy", image)
    script = tmp_path / "plain_tf.py"
    script.write_text(PLAIN_TF)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "image.npy"), str(tmp_path / "saved"),
                           str(tmp_path / "model.pb"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert len(expected.boxes) > 0
    for prefix in ("saved_", "frozen_"):
        order = near_tie_order(got[prefix + "scores"], got[prefix + "boxes"], expected.scores, expected.boxes)
        got = {k: v[order] if k.startswith(prefix) else v for k, v in got.items()}
        np.testing.assert_allclose(got[prefix + "boxes"], expected.boxes, atol=1e-3)
        np.testing.assert_allclose(got[prefix + "scores"], expected.scores, atol=1e-5)
        np.testing.assert_array_equal(got[prefix + "labels"], expected.labels)
        np.testing.assert_allclose(got[prefix + "masks"], expected.masks, atol=1e-4)


@pytest.mark.parametrize("h, w", [(480, 640), (300, 301), (1000, 200), (96, 128)])
def test_the_exported_resize_follows_the_predict_rule(h, w):
    from maskplus.compat import tf
    from maskplus.data.transforms import resized_shape
    from maskplus.engine.export import _resize_like_predict
    with config_snapshot():
        configure({}, training=False)
        with tf.Graph().as_default(), tfv1.Session() as sess:
            image = tfv1.placeholder(tf.uint8, (None, None, 3))
            resized, scales = _resize_like_predict(image)
            out, sc = sess.run([resized, scales], {image: np.zeros((h, w, 3), np.uint8)})
        from config import config as cfg
        want = resized_shape(h, w, cfg.PREPROC.TEST_SHORT_EDGE_SIZE, cfg.PREPROC.MAX_SIZE)
    assert out.shape[:2] == want
    np.testing.assert_allclose(sc, [want[0] / h, want[1] / w], rtol=1e-6)


@pytest.mark.parametrize("per_axis", [False, True])
def test_the_exported_graph_maps_boxes_back_like_predict(per_axis):
    """A 150 x 230 image resized to 100 x 153: boxes go back by one scale sqrt(sy * sx) and x2, y2
    are clipped at the width and the height (the example), or per axis with BOX_SCALE_PER_AXIS;
    the expected values are the ones tests/engine/test_inference.py works out by hand."""
    from maskplus.compat import tf
    from maskplus.engine.export import _unresize_boxes
    boxes = np.array([[10, 20, 100, 90], [140, 0, 153, 100]], np.float32)
    sy, sx = 100 / 150, 153 / 230
    if per_axis:
        expected = [[10 / sx, 20 / sy, 100 / sx, 90 / sy], [140 / sx, 0, 230, 150]]
    else:
        s = np.sqrt(sy * sx)
        expected = [[10 / s, 20 / s, 100 / s, 90 / s], [140 / s, 0, 153 / s, 150]]
    with config_snapshot():
        configure({"TEST.BOX_SCALE_PER_AXIS": per_axis}, training=False)
        with tf.Graph().as_default(), tfv1.Session() as sess:
            got = sess.run(_unresize_boxes(tf.constant(boxes), tf.constant([sy, sx], tf.float32),
                                           tf.constant([150.0, 230.0])))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
