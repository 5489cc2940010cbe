"""The mask loss of the training graph against a NumPy reference: Mask R-CNN's L_mask, the mean
per-pixel sigmoid cross-entropy of each foreground RoI's own class channel."""
import numpy as np

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tfv1

MASK_BIAS = [-2.0, 0.5, 3.0]  # added to the logits of classes 1, 2, 3: channels differ clearly


def _suffix(graph, suffix):
    (name,) = [op.name for op in graph.get_operations() if op.name == suffix or op.name.endswith("/" + suffix)]
    return graph.get_tensor_by_name(name + ":0")


def test_the_mask_loss_reads_each_rois_own_class_channel():
    dp = synthetic_datapoint()  # gts of classes 1 and 3
    with config_snapshot():
        configure({"FRCNN.FG_THRESH": 0.6}, training=True)
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            tfv1.set_random_seed(0)
            sess.run(tfv1.global_variables_initializer())
            [v for v in tfv1.global_variables() if v.op.name == "maskrcnn/conv/b"][0].load(MASK_BIAS, sess)
            fetch = {"logits": graph.get_tensor_by_name("maskrcnn/conv/output:0"),
                     "labels": _suffix(graph, "fg_labels"), "targets": _suffix(graph, "sampled_fg_mask_targets"),
                     "loss": graph.get_tensor_by_name("maskrcnn_loss/maskrcnn_loss:0")}
            out = sess.run(fetch, {ph[k]: v for k, v in dp.items()})
    labels, logits, targets = out["labels"], out["logits"].astype(np.float64), out["targets"]
    assert {1, 3} <= set(labels.tolist()) and logits.shape == (len(labels), 3, 28, 28)
    own = logits[np.arange(len(labels)), labels - 1]
    # sigmoid CE of logit x and target t: max(x, 0) - x t + log(1 + exp(-|x|))
    expected = np.mean(np.maximum(own, 0) - own * targets + np.log1p(np.exp(-np.abs(own))))
    assert abs(out["loss"] - expected) < 1e-5 * expected
