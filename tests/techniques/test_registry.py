"""The technique registry: what each registered technique declares, the order the mask branch
applies them in, the checks every registered technique gets (its variables only add to the
baseline's, the gradient reaches them, they survive a checkpoint round trip), and a plug-in
technique defined in this file alone that registers itself and trains, leaves the model zoo's graph
as it is while off, and is named when a checkpoint lacks its variables."""
import ast
import os

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tf, tfv1
from maskplus.techniques import registry

PAPER_ORDER = ["context_fusion", "deconv_pyramid", "boundary_refinement", "quasi_multitask", "biased_training"]
HOOKS = {"context_fusion": ["roi_features"], "deconv_pyramid": ["before_upsample"], "boundary_refinement": ["logits"],
         "quasi_multitask": ["extra_losses"], "biased_training": ["mask_loss", "schedules"]}
REGISTERED = [t.name for t in registry.registered()]


def _config_py_maskplus_defaults():
    """{"MASKPLUS.KEY": default} as written in config.py (read from its source, not the live config)."""
    tree = ast.parse(open(os.path.join(ROOT, "config.py")).read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            dotted = ast.unparse(node.targets[0])
            if dotted.startswith("_C.MASKPLUS."):
                out[dotted[3:]] = ast.literal_eval(node.value)
    return out


def test_the_five_techniques_are_registered_in_the_papers_order_with_their_hooks():
    assert REGISTERED == PAPER_ORDER
    assert {t.name: registry.hooks_of(t) for t in registry.registered()} == HOOKS


def test_every_maskplus_key_of_config_py_is_owned_by_one_technique_with_the_same_default():
    owned = [key for t in registry.registered() for key in t.keys]
    assert len(owned) == len(set(owned)), owned
    assert {k: v for t in registry.registered() for k, v in t.keys.items()} == _config_py_maskplus_defaults()


def test_with_every_technique_off_none_is_built():
    with config_snapshot():
        configure()
        assert registry.build(__import__("config").config) == []


def test_each_technique_built_from_the_config_has_the_configs_arguments():
    from config import config as cfg
    overrides = {"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_LEVEL": 4,
                 "MASKPLUS.CONTEXT_FUSION_DIMS": [32, 64], "MASKPLUS.DECONV_PYRAMID": True,
                 "MASKPLUS.DECONV_PYRAMID_DIM": 48, "MASKPLUS.BOUNDARY_REFINEMENT": "original",
                 "MASKPLUS.BOUNDARY_REFINEMENT_MODULES": 3, "MASKPLUS.BOUNDARY_REFINEMENT_GROWTH": [8, 2],
                 "MASKPLUS.QUASI_MULTITASK": ["2x"], "MASKPLUS.QUASI_MULTITASK_WEIGHT": 0.7,
                 "MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.25], [300, 1.0]]}
    with config_snapshot():
        configure(overrides)
        built = {type(t).name: vars(t) for t in registry.build(cfg)}
    assert built == {
        "context_fusion": {"level": 4, "stride": 16, "dims": [32, 64]},  # P4: stride 16
        "deconv_pyramid": {"width": 48},
        "boundary_refinement": {"mode": "original", "num_modules": 3, "growth": [8, 2]},
        "quasi_multitask": {"scales": ["2x"], "head_dim": 64, "weight": 0.7},  # TINY's MRCNN.HEAD_DIM
        "biased_training": {"alpha_schedule": [[0, 1.25], [300, 1.0]]}}


@pytest.mark.parametrize("towers, expected", [(1, ((0, 1.25), (2400, 1.0))), (2, ((0, 1.25), (1200, 1.0)))])
def test_the_alpha_schedule_comes_from_biased_training_in_real_steps(towers, expected):
    from config import config as cfg
    from maskplus.engine.schedules import Schedule, technique_schedules
    with config_snapshot():
        configure({"MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.25], [300, 1.0]],
                   "TRAIN.NUM_GPUS": towers})
        assert technique_schedules(cfg) == {"mask_loss_alpha": [[0, 1.25], [300, 1.0]]}
        assert Schedule.from_config(cfg).alpha == expected
        assert [Schedule.from_config(cfg).alpha_at(s) for s in (0, expected[1][0] - 1, expected[1][0])] == [1.25, 1.25, 1.0]
    with config_snapshot():
        configure({"MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.25], [300, 1.0]]})  # biased training off: alpha stays 1
        assert technique_schedules(cfg) == {}
        assert Schedule.from_config(cfg).alpha == ((0, 1.0),)


# --------------------------------------------------------------- the checks every technique gets
_GRAPHS = {}


def _training_graph(name):
    """(graph, placeholders, model, {variable name: variable}) of the tiny FPN model with the
    registered technique ``name`` switched on (None: the baseline), built once per test session."""
    if name not in _GRAPHS:
        enable = {} if name is None else registry_technique(name).enable
        with config_snapshot():
            configure(dict(enable))
            graph, placeholders, model = build_graph(training=True, seed=3)
        with graph.as_default():
            variables = {v.op.name: v for v in tfv1.global_variables()}
        _GRAPHS[name] = graph, placeholders, model, variables
    return _GRAPHS[name]


def registry_technique(name):
    (technique,) = [t for t in registry.registered() if t.name == name]
    return technique


def _new_variables(name):
    baseline = _training_graph(None)[3]
    variables = _training_graph(name)[3]
    return {n: v for n, v in variables.items() if n not in baseline}


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_a_techniques_variables_only_add_to_the_baselines(name):
    baseline = _training_graph(None)[3]
    variables = _training_graph(name)[3]
    for n, v in baseline.items():
        assert n in variables, f"{name} removed or renamed {n}"
        assert variables[n].shape.as_list() == v.shape.as_list(), f"{name} changed the shape of {n}"
    assert _new_variables(name), f"{name} added no variable"


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_the_gradient_of_the_total_cost_reaches_a_techniques_variables(name):
    graph, placeholders, _, _ = _training_graph(name)
    new = _new_variables(name)
    trainable_names = {v.op.name for v in graph.get_collection(tfv1.GraphKeys.TRAINABLE_VARIABLES)}
    trainable = [v for n, v in sorted(new.items()) if n in trainable_names]
    if not trainable:  # biased training: its one variable, alpha, is set by its schedule
        assert sorted(new) == ["mask_loss_alpha"], sorted(new)
        return
    with graph.as_default():
        grads = tf.gradients(graph.get_tensor_by_name("total_cost:0"), trainable)
        feed = {placeholders[k]: v for k, v in synthetic_datapoint().items()}
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            norms = sess.run([tf.norm(g) for g in grads], feed)
    no_gradient = [v.op.name for v, g, n in zip(trainable, grads, norms) if g is None or not n > 0]
    assert not no_gradient, f"{name}: no gradient reaches {no_gradient}"


@pytest.mark.slow
@pytest.mark.parametrize("name", REGISTERED)
def test_a_techniques_variables_survive_a_checkpoint_round_trip(name, tmp_path):
    graph, _, _, variables = _training_graph(name)
    new = sorted(_new_variables(name))
    prefix = str(tmp_path / "model")
    with graph.as_default():
        saver = tfv1.train.Saver(list(variables.values()))
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            for n in new:  # values no initialiser gives
                v = variables[n]
                v.load(np.random.RandomState(len(n)).uniform(2, 3, v.shape.as_list()).astype(np.float32), sess)
            saved = sess.run([variables[n] for n in new])
            saver.save(sess, prefix)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            saver.restore(sess, prefix)
            restored = sess.run([variables[n] for n in new])
    for n, a, b in zip(new, saved, restored):
        np.testing.assert_array_equal(a, b, err_msg=n)


# --------------------------------------------------------------- a plug-in defined here alone
class LogitGain:
    """A toy technique: mask logits times a learnt per-class gain, initialised to ``MASKPLUS.TOY_GAIN``."""
    name = "toy_logit_gain"
    order = 3.35  # after boundary refinement (3.3), on the same hook
    enable = {"MASKPLUS.TOY": True}
    keys = {"MASKPLUS.TOY": False, "MASKPLUS.TOY_GAIN": 1.5}

    def __init__(self, gain):
        self.gain = gain

    @staticmethod
    def check(cfg):
        gain = cfg.MASKPLUS.TOY_GAIN
        return [] if gain > 0 else [f"MASKPLUS.TOY_GAIN must be > 0, got {gain}."]

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.MASKPLUS.TOY_GAIN) if cfg.MASKPLUS.TOY else None

    def logits(self, x):
        channels = x.shape.as_list()[1]
        gain = tfv1.get_variable("toy_logit_gain/gain", [1, channels, 1, 1],
                                 initializer=tfv1.constant_initializer(self.gain))
        return tf.multiply(x, gain, name="toy_gained_logits")


@pytest.fixture
def toy_registered():
    from config import config as cfg
    with config_snapshot():
        registry.register(LogitGain)
        try:
            registry.add_config(cfg)
            yield cfg
        finally:
            registry.unregister(LogitGain.name)


def test_the_benchmark_times_a_plug_in_that_no_paper_row_switches_on(toy_registered):
    from scripts.benchmark import technique_rows
    from tests.helpers import TINY
    rows = technique_rows(TINY)
    assert list(rows)[-1] == "+toy_logit_gain" and rows["+toy_logit_gain"] == {"MASKPLUS.TOY": True}
    assert [r for r in rows if r.startswith("+")] == ["+toy_logit_gain"]  # the paper's rows cover the five
    assert rows["context-fusion-720-512-512-256"]["MASKPLUS.CONTEXT_FUSION_DIMS"] == [180, 128, 128, 64]  # at 64 channels


def test_a_plug_in_is_ordered_by_its_order_and_its_config_checked(toy_registered):
    cfg = toy_registered
    assert [t.name for t in registry.registered()] == PAPER_ORDER[:3] + ["toy_logit_gain"] + PAPER_ORDER[3:]
    configure({"MASKPLUS.TOY": True, "MASKPLUS.TOY_GAIN": -1.0})
    with pytest.raises(ValueError, match=r"MASKPLUS.TOY_GAIN must be > 0, got -1.0"):
        registry.build(cfg)


@pytest.mark.slow
def test_a_plug_in_defined_in_a_test_file_registers_itself_and_trains_two_steps(toy_registered):
    """No package file knows LogitGain: registered and its config added, the model built from the
    config applies it after boundary refinement (same hook, higher order) and two SGD steps of the
    total cost move its gain."""
    configure({"MASKPLUS.TOY": True, "MASKPLUS.TOY_GAIN": 1.25, "MASKPLUS.BOUNDARY_REFINEMENT": "original"})
    graph, placeholders, model = build_graph(training=True, seed=3)
    assert [type(t).name for t in model.mask_techniques] == ["boundary_refinement", "toy_logit_gain"]
    with graph.as_default():
        (gained,) = [op for op in graph.get_operations() if op.name.endswith("toy_gained_logits")]
        assert gained.inputs[0].op.name.endswith("refined_mask_logits")
        (gain,) = [v for v in tfv1.trainable_variables() if v.op.name == "toy_logit_gain/gain"]
        assert gain.shape.as_list() == [1, 3, 1, 1]  # one mask per category of the 3
        cost = graph.get_tensor_by_name("total_cost:0")
        train_op = tfv1.train.GradientDescentOptimizer(0.1).minimize(cost)
        feed = {placeholders[k]: v for k, v in synthetic_datapoint().items()}
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            before = sess.run(gain)
            costs = [sess.run([cost, train_op], feed)[0] for _ in range(2)]
            after = sess.run(gain)
    np.testing.assert_allclose(before, 1.25)
    assert all(np.isfinite(costs))
    assert np.abs(after - before).max() > 1e-6, "the gradient of the total cost does not reach the plug-in"


def test_a_refused_checkpoint_names_a_plug_ins_variables_and_its_switch(toy_registered):
    """No package file knows LogitGain, yet the strict load names its variable (under a scope named
    after it), the switch that adds it and what to pass, as it does for the paper's five."""
    from maskplus.engine.checkpoint import LoadReport
    from maskplus.engine.strict_load import CheckpointRefused, check_complete, owner_of, technique_switches
    toy = owner_of("toy_logit_gain/gain")
    assert (toy.what, toy.config, toy.sizes) == (f"the technique toy_logit_gain ({__name__})", "MASKPLUS.TOY=True",
                                                 "MASKPLUS.TOY_GAIN")
    assert technique_switches({"MASKPLUS.TOY": True, "MASKPLUS.CONTEXT_FUSION": True}) == {
        "MASKPLUS.TOY=True", "MASKPLUS.CONTEXT_FUSION=True"}
    with pytest.raises(CheckpointRefused) as e:
        check_complete(LoadReport("/runs/x/model-6", ["conv0/W"], ["toy_logit_gain/gain"], [], []), {"MASKPLUS.TOY=True"})
    assert (f"    toy_logit_gain/: 1 variable of the technique toy_logit_gain ({__name__}): this config has "
            f"MASKPLUS.TOY=True, which the checkpoint was not trained with\n") in str(e.value)
    assert "(here --config MASKPLUS.TOY=False" in str(e.value)


@pytest.mark.slow
def test_with_a_plug_in_registered_and_off_the_graph_is_still_the_model_zoos(toy_registered):
    """The zoo load with it off: registering a technique and adding its config section leave the
    R50-FPN graph with exactly the model zoo's variables (tests/fixtures/reference), shapes and all."""
    from maskplus.presets import preset_overrides
    from tests.helpers import variable_shapes
    from tests.modeling.test_model_zoo_compat import _configure, _reference
    _configure(preset_overrides("zoo-r50fpn-2x"), training=True)
    assert toy_registered.MASKPLUS.TOY is False and "toy_logit_gain" in [t.name for t in registry.registered()]
    assert variable_shapes(build_graph(True)[0]) == _reference("tensorpack_r50fpn_mask_variables.json")
