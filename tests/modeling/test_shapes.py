"""Output shapes of every stage of the tiny model, for an image that needs padding."""
import numpy as np

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tfv1


def _tensor(graph, suffix):
    names = [op.name for op in graph.get_operations() if op.name.endswith(suffix)]
    assert names, f"no op ending with {suffix}"
    return graph.get_tensor_by_name(names[0] + ":0")


def test_every_stage_has_the_expected_shape_in_training():
    dp = synthetic_datapoint(h=90, w=120)  # padded to 96 x 128 inside the graph
    with config_snapshot():
        configure({})
        graph, ph, _ = build_graph(True)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            feed = {ph[k]: v for k, v in dp.items()}
            c = [_tensor(graph, f"group{i}/block0/output") for i in range(4)]
            p = [graph.get_tensor_by_name(f"fpn/posthoc_3x3_p{i}/output:0") for i in range(2, 6)]
            p6 = graph.get_tensor_by_name("fpn/maxpool_p6/output:0")
            rpn = _tensor(graph, "rpn/class/output")
            rois = _tensor(graph, "sampled_proposal_boxes")
            box_feat = _tensor(graph, "multilevel_roi_align/GatherV2")
            mask_feat = _tensor(graph, "multilevel_roi_align_mask/GatherV2")
            mask_logits = graph.get_tensor_by_name("maskrcnn/conv/output:0")
            cls = graph.get_tensor_by_name("fastrcnn/outputs/class/output:0")
            box = graph.get_tensor_by_name("fastrcnn/outputs/output_box:0")
            out = sess.run(dict(c=c, p=p, p6=p6, rpn=rpn, rois=rois, box_feat=box_feat, mask_feat=mask_feat,
                                mask_logits=mask_logits, cls=cls, box=box), feed)
    assert [x.shape for x in out["c"]] == [(1, 256, 24, 32), (1, 512, 12, 16), (1, 1024, 6, 8), (1, 2048, 3, 4)]
    assert [x.shape for x in out["p"]] == [(1, 64, 24, 32), (1, 64, 12, 16), (1, 64, 6, 8), (1, 64, 3, 4)]
    assert out["p6"].shape == (1, 64, 2, 2)
    assert out["rpn"].shape == (1, 3, 24, 32)
    n = len(out["rois"])
    assert 2 <= n <= 64 and out["box_feat"].shape == (n, 64, 7, 7)
    nfg = out["mask_feat"].shape[0]
    assert 1 <= nfg <= 16 and out["mask_feat"].shape[1:] == (64, 14, 14)
    assert out["mask_logits"].shape == (nfg, 3, 28, 28)
    assert out["cls"].shape == (n, 4) and out["box"].shape == (n, 4, 4)


def test_inference_outputs_are_named_and_shaped():
    img = synthetic_datapoint(h=90, w=120)["image"]
    with config_snapshot():
        configure({"TEST.RESULT_SCORE_THRESH": 0.0})  # untrained scores are low: keep them all
        graph, ph, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            boxes, scores, labels, masks = sess.run(
                ["output/boxes:0", "output/scores:0", "output/labels:0", "output/masks:0"], {ph["image"]: img})
    n = len(boxes)
    assert 1 <= n <= 100
    assert boxes.shape == (n, 4) and scores.shape == (n,) and labels.shape == (n,) and masks.shape == (n, 28, 28)
    assert labels.min() >= 1 and labels.max() <= 3
    assert np.all(boxes[:, 2] <= 120 + 1e-3) and np.all(boxes[:, 3] <= 90 + 1e-3) and boxes.min() >= 0
    assert masks.min() >= 0 and masks.max() <= 1
