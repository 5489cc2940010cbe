"""The model's optimiser against hand-computed updates (README: BASE_LR is for a total batch of 8
images; gradients are summed over towers and, with fewer than 8 towers, accumulated up to 8
images before one momentum-0.9 update; without accumulation a step moves proportionally less).

A toy variable W with loss sum(c_k * W) at step k has gradient c_k, whatever W is, so by hand:
with momentum 0.9 and learning rate lr / 8, an update applying the gradient sum G_u moves W by
-lr / 8 * v_u, where v_1 = G_1 and v_u = 0.9 * v_(u-1) + G_u.
"""
import numpy as np
import pytest

from tests.helpers import config_snapshot, configure
from maskplus.compat import tf, tfv1

LR = 0.02


def _trajectory(towers, accumulation, steps, grads):
    """W after each of ``steps`` steps of the model's optimiser, the learning rate set to LR."""
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": towers, "TRAIN.GRADIENT_ACCUMULATION": accumulation})
        with tf.Graph().as_default():
            opt = ResNetFPNModel(model_params()).optimizer()
            w = tfv1.get_variable("toy/W", initializer=tf.zeros([grads.shape[1]]))
            c = tfv1.placeholder(tf.float32, [grads.shape[1]])
            train_op = opt.minimize(tf.reduce_sum(w * c))
            lr = [v for v in tfv1.global_variables() if v.op.name == "learning_rate"]
            assert len(lr) == 1
            with tfv1.Session() as sess:
                sess.run(tfv1.global_variables_initializer())
                lr[0].load(LR, sess)
                values = []
                for k in range(steps):
                    sess.run(train_op, {c: grads[k]})
                    values.append(sess.run(w))
    return np.array(values)


def _by_hand(groups, grads, steps):
    """W after each step when the steps of each group (a list of step indices) make one update,
    applied at the group's last step."""
    expected, w, v, done = np.zeros((steps, grads.shape[1])), np.zeros(grads.shape[1]), None, 0
    for group in groups:
        total = grads[group].sum(axis=0)
        v = total if v is None else 0.9 * v + total
        expected[done:group[-1]] = w
        w = w - LR / 8 * v
        done = group[-1]
        expected[done] = w
        done += 1
    expected[done:] = w
    return expected


GRADS = np.random.RandomState(0).uniform(-1, 1, (16, 5)).astype(np.float32)


@pytest.mark.parametrize("towers, per_update", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_updates_apply_lr_over_8_times_the_gradients_of_8_images_with_momentum(towers, per_update):
    """Each step's gradient stands for the sum over the towers' images; an update sums the steps
    up to 8 images: 8 steps of 1 tower, 4 of 2, 2 of 4, every step of 8 towers."""
    got = _trajectory(towers, True, 16, GRADS)
    groups = [list(range(k, k + per_update)) for k in range(0, 16, per_update)]
    np.testing.assert_allclose(got, _by_hand(groups, GRADS, 16), rtol=1e-5, atol=1e-7)


def test_without_accumulation_one_tower_updates_every_step_at_lr_over_8():
    got = _trajectory(1, False, 4, GRADS)
    np.testing.assert_allclose(got, _by_hand([[0], [1], [2], [3]], GRADS, 4), rtol=1e-5, atol=1e-7)
