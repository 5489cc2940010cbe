"""Strict loads for inference and export (maskplus/engine/strict_load.py): the map from variable
scopes to the techniques and heads that add them covers every variable each technique adds (its
graphs built), a checkpoint of another model is refused with the variables grouped by what adds
them and what to pass, training state is not the model's, and zoo-layout files still load."""
import json

import numpy as np
import pytest

from maskplus.engine.checkpoint import LoadReport
from maskplus.engine.strict_load import (UNKNOWN_OWNER, CheckpointRefused, check_complete, checkpoint_init,
                                         owner_of, owners, technique_switches)
from maskplus.presets import PRESETS, preset_overrides
from tests.helpers import (build_graph, config_snapshot, configure, restore_into_tiny_graph, variable_shapes,
                           write_random_model)
from tests.modeling.test_model_zoo_compat import _configure as configure_zoo, _reference
from tests.techniques.test_techniques import TECHNIQUES_OFF, tiny_preset


def _switches_of_presets():
    """Every distinct MASKPLUS.* switch the presets use that adds or removes variables, as the
    tiny overrides that turn it on: {"MASKPLUS.KEY=VALUE": {key: value}}."""
    out = {}
    for name in PRESETS:
        tiny = tiny_preset(name)
        for arg in preset_overrides(name):
            key, value = arg.split("=", 1)
            if key.startswith("MASKPLUS.") and key in TECHNIQUES_OFF and tiny.get(key) != TECHNIQUES_OFF[key]:
                extra = {k: v for k, v in tiny.items() if not k.startswith(tuple(TECHNIQUES_OFF))}
                out[f"{key}={value}"] = dict(extra, **{key: tiny[key]})
    return out


@pytest.mark.slow
def test_every_variable_a_technique_adds_has_its_entry_in_the_map():
    """For each technique switch any preset uses (so a new technique's preset is checked too), the
    training graph (which holds the inference graph's variables too) is built; every model variable
    it adds to the tiny baseline belongs to that switch's entry, and exactly the variables absent
    from the inference graphs (built with every switch on, boundary refinement in either mode)
    belong to training-only entries."""
    switches = _switches_of_presets()
    assert {"MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.DECONV_PYRAMID=True", "MASKPLUS.BOUNDARY_REFINEMENT=original",
            "MASKPLUS.BOUNDARY_REFINEMENT=improved", "MASKPLUS.QUASI_MULTITASK=['0.5x']",
            "MASKPLUS.QUASI_MULTITASK=['2x']", "MASKPLUS.BIASED_TRAINING=True"} <= set(switches)
    with config_snapshot():
        configure(TECHNIQUES_OFF, training=True)
        base = set(variable_shapes(build_graph(True)[0]))
    at_inference = set()
    for mode in ("original", "improved"):
        with config_snapshot():
            every = {k: v for o in switches.values() for k, v in o.items()}
            configure(dict(every, **{"MASKPLUS.BOUNDARY_REFINEMENT": mode,
                                     "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"]}), training=False)
            at_inference |= set(variable_shapes(build_graph(False)[0]))
    owners_seen = {}
    for switch, overrides in sorted(switches.items()):
        with config_snapshot():
            configure(dict(TECHNIQUES_OFF, **overrides), training=True)
            added = set(variable_shapes(build_graph(True)[0])) - base
        key = switch.split("=")[0]
        found = {owner_of(n) for n in added}
        assert UNKNOWN_OWNER not in found, (switch, sorted(n for n in added if owner_of(n) is UNKNOWN_OWNER))
        assert all(o.config.split("=")[0] == key for o in found), (switch, {o.what for o in found})
        assert all(owner_of(n).training_only == (n not in at_inference) for n in added), switch
        owners_seen[switch] = found
    # the five techniques with variables each have their own entry; biased training adds none (alpha is training state)
    assert owners_seen["MASKPLUS.BIASED_TRAINING=True"] == set()
    technique_entries = {o for o in owners() if o.config.startswith("MASKPLUS.")}
    assert set().union(*owners_seen.values()) == technique_entries
    assert len(owners_seen["MASKPLUS.BOUNDARY_REFINEMENT=original"]
               | owners_seen["MASKPLUS.BOUNDARY_REFINEMENT=improved"]) == 2


@pytest.mark.parametrize("more, less, owners", [
    ("tensorpack_r50fpn_cascade_mask_variables.json", "tensorpack_r50fpn_mask_variables.json",
     {"the Cascade R-CNN box heads"}),
    ("tensorpack_r50fpn_mask_variables.json", "tensorpack_r50fpn_cascade_mask_variables.json",
     {"the 2fc box head", "the FPN box head's outputs"}),
    ("tensorpack_r101fpn_mask_variables.json", "tensorpack_r50fpn_mask_variables.json", {"the ResNet backbone"}),
    ("tensorpack_r50c4_mask_variables.json", "tensorpack_r50fpn_mask_variables.json", {"the C4 box head's outputs"}),
    ("tensorpack_r50fpn_mask_variables.json", "tensorpack_r50c4_mask_variables.json",
     {"the 2fc box head", "the FPN box head's outputs", "the FPN mask head's convolutions", "the FPN"}),
    ("tensorpack_r50fpn_mask_variables.json", "tensorpack_r50fpn_nomask_variables.json",
     {"the FPN mask head's convolutions", "the mask head"}),
    ("tensorpack_r50fpn_gn_mask_variables.json", "tensorpack_r50fpn_mask_variables.json",
     {"the ResNet backbone", "a 4conv1fc box head", "the GroupNorm mask head", "the FPN's GroupNorm"}),
])
def test_the_model_zoos_heads_are_named_by_what_adds_them(more, less, owners):
    extra = set(_reference(more)) - set(_reference(less))
    assert extra and {owner_of(n).what for n in extra} == owners


def _report(unused=(), missing=(), skipped=()):
    return LoadReport("/runs/x/model-6", ["conv0/W"], sorted(missing), sorted(unused), skipped)


BR_IMPROVED = [f"boundary_refinement/module{i}/conv{j}/{p}" for i in range(4) for j in range(2) for p in "Wb"] + [
    "boundary_refinement/fuse/W", "boundary_refinement/fuse/b"]


def test_a_techniques_variables_in_the_file_only_are_refused_with_what_to_pass():
    with pytest.raises(CheckpointRefused) as e:
        check_complete(_report(unused=BR_IMPROVED + ["global_step", "conv0/W/Momentum"]), set())
    text = str(e.value)
    assert text.startswith("The checkpoint '/runs/x/model-6' does not hold the model this config builds")
    assert ("\n  in the checkpoint, not in this model:\n    boundary_refinement/: 18 variables of boundary "
            "refinement, improved (paper 3.3): this checkpoint was trained with MASKPLUS.BOUNDARY_REFINEMENT=improved\n"
            in text)
    assert "global_step" not in text and "Momentum" not in text  # training state is not the model's
    assert ("(here --config MASKPLUS.BOUNDARY_REFINEMENT=improved; presets with these techniques: "
            "boundary-refinement-improved)") in text
    assert "Load its run directory (--load RUN_DIR" in text and "--allow-partial-load" in text


def test_a_technique_the_file_lacks_and_shapes_that_differ_are_refused_and_named():
    missing = ["context_fusion/conv0/W", "context_fusion/conv0/b"]
    skipped = [("maskrcnn/deconv_pyramid/up0/W", (2, 2, 64, 64), (2, 2, 64, 32))]
    with pytest.raises(CheckpointRefused) as e:
        check_complete(_report(missing=missing, skipped=skipped), {"MASKPLUS.CONTEXT_FUSION=True"})
    text = str(e.value)
    assert ("  in this model, not in the checkpoint:\n    context_fusion/: 2 variables of contextual fusion "
            "(paper 3.1): this config has MASKPLUS.CONTEXT_FUSION=True, which the checkpoint was not trained "
            "with\n") in text
    assert ("  of another shape:\n    maskrcnn/deconv_pyramid/: 1 variable of the deconvolutional pyramid "
            "(paper 3.2) (e.g. maskrcnn/deconv_pyramid/up0/W: checkpoint [2, 2, 64, 64], this model [2, 2, 64, 32]); "
            "their shapes are set by MASKPLUS.DECONV_PYRAMID_DIM") in text
    assert "(here --config MASKPLUS.CONTEXT_FUSION=False; presets with these techniques: baseline" in text


def test_training_state_and_training_only_branches_are_not_the_models():
    unused = ["global_step", "learning_rate", "mask_loss_alpha", "apply_gradients/AccumGrad/counter",
              "conv0/W/AccumGrad", "fpn/posthoc_3x3_p2/W/Momentum", "LossScale/loss_scale", "tower1/conv0/W",
              "quasi_multitask/fcn0/W", "quasi_multitask/half/conv/b"]
    check_complete(_report(unused=unused), set())  # nothing raised


def test_technique_switches_read_config_values_and_preset_overrides_alike():
    assert technique_switches({"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.DECONV_PYRAMID": False,
                               "MASKPLUS.BOUNDARY_REFINEMENT": "none"}) == {"MASKPLUS.CONTEXT_FUSION=True"}
    assert technique_switches(dict(o.split("=", 1) for o in preset_overrides("maskplus-all"))) == {
        "MASKPLUS.CONTEXT_FUSION=True", "MASKPLUS.DECONV_PYRAMID=True", "MASKPLUS.BOUNDARY_REFINEMENT=improved"}


def test_a_switch_of_several_keys_is_on_when_all_are(monkeypatch):
    from maskplus.techniques import registry
    monkeypatch.setattr(registry, "variable_owners", lambda: [
        (r"^two_keys/", "a technique of two keys", "MASKPLUS.TWO=True MASKPLUS.TWO_SIZES=[1, 2]", "-", False)])
    assert technique_switches({"MASKPLUS.TWO": True, "MASKPLUS.TWO_SIZES": [1, 2]}) == {
        "MASKPLUS.TWO=True MASKPLUS.TWO_SIZES=[1, 2]"}
    assert technique_switches({"MASKPLUS.TWO": True, "MASKPLUS.TWO_SIZES": [1, 3]}) == set()


def _strict_load(path, strict=True):
    from config import config as cfg
    init, values = restore_into_tiny_graph(
        lambda: checkpoint_init(path, strict, model_switches=technique_switches(dict(cfg.items_flat()))))
    return init.report, values


@pytest.fixture(scope="module")
def technique_npz(tmp_path_factory):
    """A zoo-layout .npz of the tiny model with improved boundary refinement (random weights)."""
    path = str(tmp_path_factory.mktemp("npz") / "technique.npz")
    with config_snapshot():
        configure({"MASKPLUS.BOUNDARY_REFINEMENT": "improved"}, training=False)
        write_random_model(path, seed=3)
    return path


def test_a_technique_checkpoint_into_the_baseline_graph_is_refused_and_loads_with_the_flag(technique_npz):
    with config_snapshot(), pytest.raises(CheckpointRefused, match="this checkpoint was trained with "
                                                                   "MASKPLUS.BOUNDARY_REFINEMENT=improved"):
        configure({}, training=False)
        _strict_load(technique_npz)
    with config_snapshot():  # --allow-partial-load: today's report
        configure({}, training=False)
        report, _ = _strict_load(technique_npz, strict=False)
    assert report.missing == [] and len(report.unused) == 58
    assert all(n.startswith("boundary_refinement/") for n in report.unused)


def test_a_zoo_layout_npz_loads_into_its_model_with_nothing_missing(technique_npz):
    with config_snapshot():
        configure({"MASKPLUS.BOUNDARY_REFINEMENT": "improved"}, training=False)
        report, values = _strict_load(technique_npz)
    with np.load(technique_npz) as f:
        stored = {k[:-2]: f[k] for k in f.files}
    assert report.missing == [] and report.unused == [] and len(report.restored) == len(stored)
    np.testing.assert_array_equal(values["boundary_refinement/fuse/W"], stored["boundary_refinement/fuse/W"])


@pytest.mark.slow
def test_the_model_zoos_r50_fpn_file_loads_strictly_into_the_baseline_preset(tmp_path):
    reference = _reference("tensorpack_r50fpn_mask_variables.json")
    rng = np.random.default_rng(0)
    path = str(tmp_path / "COCO-MaskRCNN-R50FPN2x.npz")
    np.savez(path, **{k + ":0": rng.standard_normal(v, dtype=np.float32) for k, v in reference.items()})
    with config_snapshot():
        configure_zoo(preset_overrides("baseline"), training=False)
        report, _ = _strict_load(path)
    assert report.missing == [] and report.unused == [] and len(report.restored) == len(reference) == 307
    assert json.dumps(report.skipped) == "[]"
