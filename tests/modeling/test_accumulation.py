"""Gradient accumulation applies the summed gradients exactly once every ``niter`` steps.

Expected values by hand: for loss = sum(c * w) the gradient is c whatever w is, so after each
group of ``niter`` steps plain SGD moves w by -lr * niter * c, and not at all in between.
Tensorpack's AccumGradOptimizer read its counter unordered with the increment, which made some
of these runs skip, double or shift an update (maskplus/modeling/accumulation.py).
"""
import numpy as np

from maskplus.compat import tf, tfv1
from maskplus.modeling.accumulation import AccumulatingOptimizer

LR, NITER, STEPS = 0.5, 4, 12


def _trajectory(seed):
    c = np.random.RandomState(seed).uniform(-1, 1, 500).astype(np.float32)
    with tf.Graph().as_default():
        w = tfv1.get_variable("w", initializer=tf.zeros([500]))
        loss = tf.reduce_sum(w * c)
        # more ops, so the scheduler has room to reorder the counter's read and increment
        for i in range(20):
            loss = loss + 0.0 * tf.reduce_sum(tf.sin(w * float(i)))
        step = AccumulatingOptimizer(tfv1.train.GradientDescentOptimizer(LR), NITER).minimize(loss)
        with tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            values = []
            for _ in range(STEPS):
                sess.run(step)
                values.append(sess.run(w))
    return c, np.array(values)


def test_the_summed_gradient_is_applied_once_every_niter_steps():
    for seed in range(10):  # a race shows only in some runs
        c, values = _trajectory(seed)
        for k, got in enumerate(values, start=1):
            expected = -LR * NITER * c * (k // NITER)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}, step {k}")
