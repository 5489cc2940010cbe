"""The mask losses of the training graph against a NumPy reference: Mask R-CNN's L_mask, the mean
per-pixel sigmoid cross-entropy of each foreground RoI's own class channel, and the quasi-multitask
losses (3.4) the same way at 14 x 14 and 56 x 56."""
import numpy as np

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tfv1

MASK_BIAS = [-2.0, 0.5, 3.0]  # added to the logits of classes 1, 2, 3: channels differ clearly
PREDICTORS = ("maskrcnn/conv", "quasi_multitask/half/conv", "quasi_multitask/double/conv")


def _suffix(graph, suffix):
    (name,) = [op.name for op in graph.get_operations() if op.name == suffix or op.name.endswith("/" + suffix)]
    return graph.get_tensor_by_name(name + ":0")


def test_the_mask_losses_read_each_rois_own_class_channel():
    dp = synthetic_datapoint()  # gts of classes 1 and 3
    with config_snapshot():
        configure({"FRCNN.FG_THRESH": 0.6, "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"]}, training=True)
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(0)
            sess.run(tfv1.global_variables_initializer())
            for v in tfv1.global_variables():
                if v.op.name in [p + "/b" for p in PREDICTORS]:
                    v.load(MASK_BIAS, sess)
            fetch = {"labels": _suffix(graph, "fg_labels"),
                     28: (graph.get_tensor_by_name("maskrcnn/conv/output:0"), _suffix(graph, "sampled_fg_mask_targets"),
                          graph.get_tensor_by_name("maskrcnn_loss/maskrcnn_loss:0"))}
            for size, scale in ((14, "half"), (56, "double")):  # QUASI_MULTITASK_WEIGHT is 1
                fetch[size] = (graph.get_tensor_by_name(f"quasi_multitask/{scale}/conv/output:0"),
                               _suffix(graph, f"mask_targets_{size}"),
                               graph.get_tensor_by_name(f"quasi_multitask_loss_{size}/quasi_multitask_loss_{size}:0"))
            out = sess.run(fetch, {ph[k]: v for k, v in dp.items()})
    labels = out["labels"]
    assert {1, 3} <= set(labels.tolist())
    for size in (28, 14, 56):
        logits, targets, loss = out[size]
        assert logits.shape == (len(labels), 3, size, size) and targets.shape == (len(labels), size, size)
        own = logits.astype(np.float64)[np.arange(len(labels)), labels - 1]
        # sigmoid CE of logit x and target t: max(x, 0) - x t + log(1 + exp(-|x|))
        expected = np.mean(np.maximum(own, 0) - own * targets + np.log1p(np.exp(-np.abs(own))))
        assert abs(loss - expected) < 1e-5 * expected, size


def test_mask_targets_are_zero_where_a_sample_falls_outside_the_image():
    """As the example (crop_and_resize with pad_border=False): a gt mask is sampled at the centres
    of a size x size grid over the RoI, and a sample outside the image's pixel centres [0.5, w - 0.5]
    reads 0 instead of the border pixel. A 7 x 7 box at the corner of an all-ones 20 x 30 mask, at
    14 x 14: samples at 0.25, 0.75, ..., so the first row and column are 0, the rest 1."""
    from maskplus.compat import tf
    from maskplus.modeling.model_mrcnn import mask_targets
    with tf.Graph().as_default(), tfv1.Session() as sess:
        got = sess.run(mask_targets(tf.ones([1, 20, 30], tf.uint8), tf.constant([[0.0, 0.0, 7.0, 7.0]]),
                                    tf.constant([0]), 14))
    expected = np.ones((1, 14, 14))
    expected[:, 0, :] = expected[:, :, 0] = 0
    np.testing.assert_allclose(got, expected, atol=1e-6)
