"""The weight decay of a trained model: the example's ``regularize_cost('.*/W', l2_regularizer(wd))``,
i.e. wd * sum(W ** 2) / 2 over the trainable kernels only.

At initialisation every bias and every norm's beta is 0, so a decay that also reached them would
add nothing there; here every bias, gamma and beta is given a non-zero value first (as in a loaded
checkpoint), the stem and group0 are frozen (the default ``BACKBONE.FREEZE_AT=2``) and the decay
is not the default 1e-4, so decaying the biases or the norms, decaying the frozen kernels or
ignoring ``TRAIN.WEIGHT_DECAY`` each changes the cost by more than the tolerance.
"""
import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure
from maskplus.compat import tfv1

WEIGHT_DECAY = 3.7e-4
FROZEN = ("conv0/", "group0/")  # BACKBONE.FREEZE_AT=2: the stem and group0


@pytest.fixture(scope="module")
def trained_like():
    """(wd_cost, {name: value} of every model variable) with the biases and norms made non-zero."""
    with config_snapshot():
        configure({"BACKBONE.FREEZE_AT": 2, "TRAIN.WEIGHT_DECAY": WEIGHT_DECAY})
        graph, _, _ = build_graph(True, seed=2)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            rng = np.random.RandomState(1)
            variables = {v.op.name: v for v in tfv1.global_variables()}
            for name, v in variables.items():
                if name.endswith(("/b", "/gamma", "/beta")):
                    v.load(rng.choice([-1, 1], v.shape.as_list()) * rng.uniform(0.2, 0.6, v.shape.as_list()), sess)
            wd_cost = sess.run(graph.get_tensor_by_name("wd_cost:0"))
            values = sess.run(variables)
    return float(wd_cost), values


def _half_sum_of_squares(values, keep):
    return sum(float(np.sum(np.square(v, dtype=np.float64))) for n, v in values.items() if keep(n)) / 2


def test_the_weight_decay_is_the_l2_of_the_trainable_kernels_alone(trained_like):
    wd_cost, values = trained_like
    kernels = _half_sum_of_squares(values, lambda n: n.endswith("/W") and not n.startswith(FROZEN))
    expected = WEIGHT_DECAY * kernels
    # what each wrong rule would add: the biases and norms (all non-zero now), the frozen kernels
    others = WEIGHT_DECAY * _half_sum_of_squares(values, lambda n: n.endswith(("/b", "/gamma", "/beta")))
    frozen = WEIGHT_DECAY * _half_sum_of_squares(values, lambda n: n.endswith("/W") and n.startswith(FROZEN))
    assert min(others, frozen) > 1e-3 * expected, (expected, others, frozen)
    assert wd_cost == pytest.approx(expected, rel=1e-5), (wd_cost, expected, others, frozen)
