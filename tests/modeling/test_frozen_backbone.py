"""``BACKBONE.FREEZE_AT``: which backbone variables train, and which one step of training moves.

The example's rule (Tensorpack examples/FasterRCNN, modeling/backbone.py and config.py): the
values are 0, 1 and 2 (the config refuses anything else); FREEZE_AT > 0 freezes the stem
(``conv0``), FREEZE_AT > 1 also freezes ``group0``. A frozen variable is not trainable and is not
moved by a training step; every other backbone variable that would train with FREEZE_AT=0 still
trains. The expected lists below are that rule applied to names, so a stage frozen too few or too
many, or a frozen variable still moved by the optimiser, gives a different list.

The model is the tiny one with the default norm (FreezeBN: its moving statistics never train),
one step of the model's own optimiser (no gradient accumulation, so the step applies) on a
non-square synthetic image.
"""
import numpy as np
import pytest

from config import ConfigError
from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tfv1

BACKBONE_SCOPES = ("conv0/", "group0/", "group1/", "group2/", "group3/")
#: FREEZE_AT -> the scopes the example freezes
FROZEN_BY_THE_EXAMPLE = {0: (), 1: ("conv0/",), 2: ("conv0/", "group0/")}


def _one_step(freeze_at):
    """(every backbone variable, the trainable ones, the ones one training step changed) by name."""
    with config_snapshot():
        configure({"BACKBONE.FREEZE_AT": freeze_at, "BACKBONE.NORM": "FreezeBN",
                   "TRAIN.GRADIENT_ACCUMULATION": False})
        graph, placeholders, model = build_graph(True, seed=5)
        with graph.as_default():
            # the model's variables, before the optimiser adds its momentum slots
            variables = {v.op.name: v for v in tfv1.global_variables() if v.op.name.startswith(BACKBONE_SCOPES)}
            trainable = {v.op.name for v in tfv1.trainable_variables() if v.op.name.startswith(BACKBONE_SCOPES)}
            cost = graph.get_tensor_by_name("total_cost:0")
            train_op = model.optimizer().minimize(cost)
            feed = {placeholders[k]: v for k, v in synthetic_datapoint(h=80, w=112).items()}
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                # every scale off its initial 0 or 1, as in a trained checkpoint: a zero-initialised
                # gamma closing a residual branch would leave the branch's other norms without gradient
                rng = np.random.RandomState(0)
                for name, v in variables.items():
                    if name.endswith("/gamma"):
                        v.load(rng.uniform(0.5, 1.5, v.shape.as_list()).astype(np.float32), sess)
                before = sess.run(variables)
                assert np.isfinite(sess.run([cost, train_op], feed)[0])
                after = sess.run(variables)
    changed = {name for name in variables if not np.array_equal(before[name], after[name])}
    return set(variables), trainable, changed


@pytest.fixture(scope="module")
def steps():
    return {freeze_at: _one_step(freeze_at) for freeze_at in FROZEN_BY_THE_EXAMPLE}


@pytest.mark.slow  # the fixture: three tiny training graphs, one step each (~20 s on 2 cores)
def test_with_nothing_frozen_every_kernel_and_affine_of_the_backbone_trains(steps):
    names, trainable, changed = steps[0]
    # by hand, one bottleneck per group: conv0 (W, gamma, beta) + per group conv1-3 and the
    # shortcut, 4 x 3; the moving mean and variance of each FreezeBN never train
    assert len(trainable) == 3 + 4 * 12, sorted(trainable)
    assert trainable == {n for n in names if not n.endswith("/EMA")}
    assert changed == trainable, sorted(changed ^ trainable)


@pytest.mark.slow
@pytest.mark.parametrize("freeze_at", [2, 1])
def test_freeze_at_freezes_the_examples_stages_and_the_step_moves_only_the_rest(steps, freeze_at):
    names, trainable, changed = steps[freeze_at]
    assert names == steps[0][0]  # the same variables (checkpoints load whatever the setting)
    frozen = FROZEN_BY_THE_EXAMPLE[freeze_at]
    expected = {n for n in steps[0][1] if not n.startswith(frozen)}
    assert {n.split("/")[0] for n in steps[0][1] - expected} == {s.rstrip("/") for s in frozen}
    assert trainable == expected, (sorted(trainable - expected), sorted(expected - trainable))
    assert changed == expected, (sorted(changed - expected), sorted(expected - changed))


@pytest.mark.parametrize("value", [3, -1])
def test_a_freeze_at_the_example_does_not_have_is_a_config_error(value):
    with config_snapshot(), pytest.raises(ConfigError, match=rf"BACKBONE.FREEZE_AT={value}: must be 0, 1 or 2"):
        configure({"BACKBONE.FREEZE_AT": value})
