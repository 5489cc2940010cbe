"""The checkpoint-compatibility contract: with every MaskPlus option off, the graph holds exactly
the variables of a Tensorpack model-zoo file of the same configuration (R50-FPN, GN, R101, Faster
R-CNN without masks, R50-C4, Cascade), and such a file loads fully (predict.py draws with one:
test_model_zoo_predict.py)."""
import json
import os

import numpy as np
import pytest

from config import config as cfg
from tests.conftest import ROOT
from tests.helpers import build_graph, config_snapshot, configure, restore_into_tiny_graph, variable_shapes
from maskplus.presets import ZOO_PRESETS, preset_overrides

DATA = os.path.join(ROOT, "tests", "fixtures", "reference")
COCO_80 = [f"class{i}" for i in range(80)]


def _reference(name):
    with open(os.path.join(DATA, name)) as f:
        return {k[:-2]: v for k, v in json.load(f).items()}


#: Each list in tests/fixtures/reference (dumped from Tensorpack's example) and the overrides that describe it:
#: the preset of the model-zoo file it is the list of (README), or plain overrides.
ZOO_CONFIGS = [
    ("tensorpack_r50fpn_mask_variables.json", preset_overrides("zoo-r50fpn-2x")),
    ("tensorpack_r50fpn_gn_mask_variables.json", preset_overrides("zoo-r50fpn-gn-2x")),
    ("tensorpack_r101fpn_mask_variables.json", preset_overrides("zoo-r101fpn-1x")),
    ("tensorpack_r50fpn_nomask_variables.json", ["MODE_MASK=False"]),
    ("tensorpack_r50c4_mask_variables.json", preset_overrides("zoo-r50c4-1x")),
    ("tensorpack_r50fpn_cascade_mask_variables.json", preset_overrides("zoo-r50fpn-cascade-1x")),
]


def _configure(args, training):
    cfg.update_args(args)
    configure({}, class_names=COCO_80, training=training, tiny=False)


def test_every_reference_list_is_tested():
    listed = sorted(f for f in os.listdir(DATA) if f.startswith("tensorpack_") and f.endswith("_variables.json"))
    assert listed == sorted(name for name, _ in ZOO_CONFIGS)


@pytest.mark.parametrize("name", sorted(ZOO_PRESETS))
def test_every_model_zoo_preset_finalises(name):
    with config_snapshot():
        _configure(preset_overrides(name), training=True)
        assert cfg.MODE_FPN == ("c4" not in name) and cfg.FPN.CASCADE == ("cascade" in name)
        assert (cfg.BACKBONE.RESNET_NUM_BLOCKS[2] == 23) == ("r101" in name)


@pytest.mark.parametrize("reference, overrides", ZOO_CONFIGS)
@pytest.mark.parametrize("training", [True, False])
def test_graph_has_exactly_the_model_zoo_variables(reference, overrides, training):
    with config_snapshot():
        _configure(overrides, training)
        graph, _, _ = build_graph(training)
        ours = variable_shapes(graph)
    expected = _reference(reference)
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: v for k, v in ours.items() if v != expected[k]} == {}


@pytest.mark.slow
@pytest.mark.parametrize("reference, overrides, count, probe", [
    ("tensorpack_r50fpn_mask_variables.json", [], 307, "group3/block2/conv3/W"),
    ("tensorpack_r50c4_mask_variables.json", ["MODE_FPN=False"], 279, "maskrcnn/deconv/W"),
    ("tensorpack_r50fpn_cascade_mask_variables.json", ["FPN.CASCADE=True"], 323,
     "cascade_rcnn_stage3/outputs/box/W"),
])
def test_model_zoo_npz_with_random_values_loads_with_nothing_missing_or_unused(tmp_path, reference, overrides,
                                                                               count, probe):
    from maskplus.engine.checkpoint import CheckpointInit
    expected = _reference(reference)
    rng = np.random.default_rng(0)
    arrays = {k + ":0": rng.standard_normal(v, dtype=np.float32) for k, v in expected.items()}
    path = str(tmp_path / "random_model.npz")
    np.savez(path, **arrays)
    with config_snapshot():
        _configure(overrides, training=False)
        init, values = restore_into_tiny_graph(lambda: CheckpointInit(path))
        conv, ema = values[probe], values["conv0/bn/mean/EMA"]
    assert init.report.missing == [] and init.report.unused == []
    assert len(init.report.restored) == len(expected) == count
    np.testing.assert_array_equal(conv, arrays[probe + ":0"])
    np.testing.assert_array_equal(ema, arrays["conv0/bn/mean/EMA:0"])
