"""Gradient accumulation: sum the gradients of ``niter`` steps, apply them once every niter-th step.

Why not Tensorpack's ``AccumGradOptimizer``: it decides whether to apply by reading its step
counter in an op that nothing orders after the counter's increment, so TensorFlow reads the old
or the new count depending on scheduling. Under TF 2.21, 10 of 30 runs of 16 steps with
``niter=8`` skipped an update, applied one twice or applied one after a single step (and the
replicated towers, each with its own counter, could disagree). Here the decision uses the value
the increment returns. Variable names are Tensorpack's (``<var>/AccumGrad``,
``AccumGrad/counter``), so its checkpoints resume unchanged.
"""
from tensorpack.tfutils.optimizer import ProxyOptimizer

from maskplus.compat import tf, tfv1
from maskplus.modeling.float32_island import float32_boundary

NAME = "AccumGrad"


class AccumulatingOptimizer(ProxyOptimizer):
    """Wraps ``opt``: every step adds the gradients to per-variable sums; on every ``niter``-th
    step ``opt`` applies the sums (not their mean) and the sums are reset."""

    def __init__(self, opt, niter):
        super().__init__(opt, NAME)
        self._niter = int(niter)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        variables = [v for _, v in grads_and_vars]
        with tf.control_dependencies(None):
            sums = [self._zeros_slot(v, "accum", self._name) for v in variables]
            with tfv1.variable_scope(self._name), tf.device("/cpu:0"):
                counter = tfv1.Variable(0, name="counter", trainable=False, dtype=tf.int32)
        with tf.name_scope("AccumulatingOptimizer"):
            added = [s.assign_add(float32_boundary(g)) for s, (g, _) in zip(sums, grads_and_vars)]
            with tf.control_dependencies(added):
                count = tfv1.assign_add(counter, 1, name="update_counter")  # the incremented value

            def apply_and_reset():
                update = self._opt.apply_gradients(list(zip(sums, variables)))
                with tf.control_dependencies([update]):
                    return tf.group(*[tfv1.assign(s, tf.zeros_like(s)) for s in sums], name="update_grad")

            with tf.control_dependencies([count]):
                op = tf.cond(tf.equal(tf.math.floormod(count, self._niter), 0), apply_and_reset, tf.no_op,
                             name=name or "cond_update_grad")
            if global_step is not None:
                with tf.control_dependencies([op]):
                    op = tfv1.assign_add(global_step, 1)
        return op
