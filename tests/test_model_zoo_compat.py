"""The checkpoint-compatibility contract: with every MaskPlus option off, the graph holds exactly
the variables of a Tensorpack model-zoo Mask R-CNN R50-FPN .npz, and such a file loads fully."""
import json
import os

import numpy as np
import pytest

from helpers import build_graph, config_snapshot, configure, variable_shapes
from maskplus.compat import tfv1

DATA = os.path.join(os.path.dirname(__file__), "data")
COCO_80 = [f"class{i}" for i in range(80)]


def _reference(name):
    with open(os.path.join(DATA, name)) as f:
        return {k[:-2]: v for k, v in json.load(f).items()}


GN_OVERRIDES = {"BACKBONE.NORM": "GN", "FPN.NORM": "GN", "FPN.FRCNN_HEAD_FUNC": "fastrcnn_4conv1fc_gn_head",
                "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head"}


@pytest.mark.parametrize("reference, overrides", [
    ("tensorpack_r50fpn_mask_variables.json", {}),
    ("tensorpack_r50fpn_gn_mask_variables.json", GN_OVERRIDES),
])
@pytest.mark.parametrize("training", [True, False])
def test_default_r50fpn_graph_has_exactly_the_model_zoo_variables(reference, overrides, training):
    with config_snapshot():
        configure(overrides, class_names=COCO_80, training=training, tiny=False)
        graph, _, _ = build_graph(training)
        ours = variable_shapes(graph)
    expected = _reference(reference)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}


def test_model_zoo_npz_with_random_values_loads_with_nothing_missing_or_unused(tmp_path):
    from maskplus.engine.checkpoint import CheckpointInit
    expected = _reference("tensorpack_r50fpn_mask_variables.json")
    rng = np.random.RandomState(0)
    arrays = {k + ":0": rng.standard_normal(v).astype(np.float32) for k, v in expected.items()}
    path = str(tmp_path / "random_r50fpn.npz")
    np.savez(path, **arrays)
    with config_snapshot():
        configure({}, class_names=COCO_80, training=False, tiny=False)
        graph, _, _ = build_graph(False)
        with graph.as_default():
            init = CheckpointInit(path)
            init._setup_graph()
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                init._run_init(sess)
                conv = sess.run(graph.get_tensor_by_name("group3/block2/conv3/W:0"))
                ema = sess.run(graph.get_tensor_by_name("conv0/bn/mean/EMA:0"))
    assert init.report.missing == [] and init.report.unused == []
    assert len(init.report.restored) == len(expected) == 307
    np.testing.assert_array_equal(conv, arrays["group3/block2/conv3/W:0"])
    np.testing.assert_array_equal(ema, arrays["conv0/bn/mean/EMA:0"])
