"""Every loss reaches ``total_cost`` with its weight, and every technique's variables learn.

The expected derivatives come from the README's loss definition, not from the graph:
``total = rpn (label + box, summed over levels) + fastrcnn (label + box) + alpha * L_mask
+ QUASI_MULTITASK_WEIGHT * (each quasi-multitask CE) + wd_cost``, so d total / d loss is 1 for
each plain loss, alpha for the raw mask loss, the weight for each quasi-multitask CE, and
d total / d alpha is the raw mask loss itself.
"""
import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure, synthetic_datapoint
from maskplus.compat import tf, tfv1

ALPHA = 1.5
QM_WEIGHT = 0.7  # not 1, so a dropped or doubled weight shows
ALL_TECHNIQUES = {
    "MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_DIMS": [32, 64],
    "MASKPLUS.DECONV_PYRAMID": True, "MASKPLUS.BOUNDARY_REFINEMENT": "improved",
    "MASKPLUS.QUASI_MULTITASK": ["0.5x", "2x"], "MASKPLUS.QUASI_MULTITASK_WEIGHT": QM_WEIGHT,
    "MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, ALPHA], [10, 1.0]],
}
#: scope of each technique's trainable variables (biased training has none)
TECHNIQUE_SCOPES = ["context_fusion/", "maskrcnn/deconv_pyramid/", "boundary_refinement/", "quasi_multitask/"]


def _raw_quasi_multitask_ce(graph, size):
    """The unweighted mean CE of a quasi-multitask scale: the non-constant input of its weighting op."""
    op = graph.get_operation_by_name(f"quasi_multitask_loss_{size}/quasi_multitask_loss_{size}")
    inputs = [t for t in op.inputs if t.op.type != "Const"]
    assert len(inputs) == 1, [t.name for t in op.inputs]
    return inputs[0]


@pytest.fixture(scope="module")
def evaluated():
    """{name: (value, d total / d value)} for every loss, plus the technique variables' gradients."""
    with config_snapshot():
        configure(ALL_TECHNIQUES, training=True)
        graph, ph, _ = build_graph(True)
        with graph.as_default():
            tfv1.set_random_seed(3)
            total = graph.get_tensor_by_name("total_cost:0")
            losses = {name: graph.get_tensor_by_name(name + ":0") for name in
                      [f"rpn_losses/level{lvl}/{kind}" for lvl in range(2, 7) for kind in ("label_loss", "box_loss")]
                      + ["fastrcnn_losses/label_loss", "fastrcnn_losses/box_loss",
                         "maskrcnn_loss/maskrcnn_loss", "weighted_maskrcnn_loss", "wd_cost"]}
            for size in (14, 56):
                losses[f"qm{size}_raw"] = _raw_quasi_multitask_ce(graph, size)
            alpha = [v for v in tfv1.global_variables() if v.op.name == "mask_loss_alpha"]
            assert len(alpha) == 1
            names = sorted(losses)
            grads = tf.gradients(total, [losses[n] for n in names] + alpha)
            assert all(g is not None for g in grads), [n for n, g in zip(names + ["alpha"], grads) if g is None]
            tech_vars = [v for v in tfv1.trainable_variables() if v.op.name.startswith(tuple(TECHNIQUE_SCOPES))]
            var_grads = tf.gradients(total, tech_vars)
            # the weight decay's variables: every trainable kernel, by its name ".../W"
            kernels = [v for v in tfv1.trainable_variables() if v.op.name.endswith("/W")]
            feed = {ph[k]: v for k, v in synthetic_datapoint().items()}
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                values, dvalues, dalpha, dvars, kernel_values = sess.run(
                    [[losses[n] for n in names], grads[:-1], grads[-1], var_grads, kernels], feed)
    out = {n: (v, d) for n, v, d in zip(names, values, dvalues)}
    out["sum of squared kernels"] = (sum(float(np.sum(np.square(k, dtype=np.float64))) for k in kernel_values), None)
    return out, dalpha, {v.op.name: g for v, g in zip(tech_vars, dvars)}


PLAIN = ([f"rpn_losses/level{lvl}/{kind}" for lvl in range(2, 7) for kind in ("label_loss", "box_loss")]
         + ["fastrcnn_losses/label_loss", "fastrcnn_losses/box_loss", "weighted_maskrcnn_loss", "wd_cost"])


@pytest.mark.parametrize("name", PLAIN)
def test_each_loss_enters_the_total_once_with_weight_one(evaluated, name):
    losses, _, _ = evaluated
    assert losses[name][1] == pytest.approx(1.0, abs=1e-6)


def test_the_weight_decay_is_the_examples_l2_of_every_trainable_kernel(evaluated):
    """The example's wd_cost: 1e-4 * sum(W^2) / 2 over the trainable variables named .../W."""
    losses, _, _ = evaluated
    squares = losses["sum of squared kernels"][0]
    assert squares > 100  # hundreds of kernels at their initial scale
    assert losses["wd_cost"][0] == pytest.approx(1e-4 * squares / 2, rel=1e-5)


def test_the_raw_mask_loss_enters_the_total_times_alpha(evaluated):
    losses, _, _ = evaluated
    assert losses["maskrcnn_loss/maskrcnn_loss"][1] == pytest.approx(ALPHA, abs=1e-6)
    value = losses["maskrcnn_loss/maskrcnn_loss"][0]
    assert losses["weighted_maskrcnn_loss"][0] == pytest.approx(ALPHA * value, rel=1e-6)


def test_d_total_d_alpha_is_the_raw_mask_loss(evaluated):
    losses, dalpha, _ = evaluated
    raw = losses["maskrcnn_loss/maskrcnn_loss"][0]
    assert raw > 0.1  # a real loss (about ln 2 at initialisation), not a vacuous zero
    assert dalpha == pytest.approx(raw, rel=1e-5)


@pytest.mark.parametrize("size", [14, 56])
def test_each_quasi_multitask_loss_enters_the_total_with_its_weight(evaluated, size):
    losses, _, _ = evaluated
    value, grad = losses[f"qm{size}_raw"]
    assert value > 0.1 and grad == pytest.approx(QM_WEIGHT, abs=1e-6)


@pytest.mark.parametrize("scope", TECHNIQUE_SCOPES)
def test_every_variable_of_each_technique_gets_a_nonzero_gradient(evaluated, scope):
    _, _, var_grads = evaluated
    mine = {n: g for n, g in var_grads.items() if n.startswith(scope)}
    assert len(mine) >= 4, sorted(var_grads)
    no_grad = [n for n, g in mine.items() if g is None or not np.any(g != 0) or not np.all(np.isfinite(g))]
    assert no_grad == [], no_grad


def test_the_alpha_schedule_is_rescaled_for_two_towers():
    """README: schedule steps count batch-8 steps; with 2 towers a batch-8 step is 4 real steps."""
    from maskplus.engine import trainer
    from maskplus.engine.schedules import StepScheduleSetter
    with config_snapshot():
        configure({"MASKPLUS.BIASED_TRAINING": True, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.5], [3, 1.0]],
                   "TRAIN.NUM_GPUS": 2, "TRAIN.EVAL_PERIOD": 0}, training=True)
        setters = [c for c in trainer.make_callbacks("/nonexistent")
                   if isinstance(c, StepScheduleSetter) and c.var_name == "mask_loss_alpha"]
        assert len(setters) == 1
        values = [setters[0].value_at(step) for step in (0, 11, 12, 100)]
    assert values == [1.5, 1.5, 1.0, 1.0]
