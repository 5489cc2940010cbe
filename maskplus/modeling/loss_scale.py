"""Dynamic loss scaling for float16 training: small gradients survive float16's narrow range.

The loss is multiplied by a scale before the backward pass and the gradients divided by it after,
in float32. When any gradient is not finite (a float16 overflow somewhere in the scaled backward
pass) the update is skipped and the scale halved; after ``growth_interval`` finite updates in a
row it is doubled. Its state, ``LossScale/scale`` and ``LossScale/good_steps``, are variables, so
checkpoints keep it and a resumed run goes on with the same scale; they are training state, never
part of a model file (maskplus/engine/checkpoint.py).

How it combines with the rest of training:
* gradient accumulation wraps this optimizer (``AccumulatingOptimizer(LossScalingOptimizer(...))``):
  the parts of a batch are summed unscaled and the sum is checked once, so a batch with a
  non-finite part is skipped as a whole and the scale changes only between batches;
* replicated towers (and Horovod ranks) call ``apply_gradients`` with the same all-reduced sums,
  in which one tower's overflow is everyone's (inf or nan propagates through the sum): all skip
  together. The scale is one variable, updated by the first ``apply_gradients`` call only.
"""
from tensorpack.tfutils.optimizer import ProxyOptimizer

from maskplus.compat import tf, tfv1
from maskplus.modeling.float32_island import float32_boundary

NAME = "LossScale"


class LossScalingOptimizer(ProxyOptimizer):
    """Wraps ``opt`` with dynamic loss scaling (initial scale 2^15, x2 after ``growth_interval``
    finite steps, /2 on a non-finite one, never below ``min_scale``): the scheme and defaults of
    TensorFlow's own v1 loss-scale optimizer."""

    def __init__(self, opt, initial_scale=2.0 ** 15, growth_interval=2000, factor=2.0, min_scale=1.0):
        super().__init__(opt, NAME)
        self._growth_interval = int(growth_interval)
        self._factor = float(factor)
        self._min_scale = float(min_scale)
        self._state_update_built = False
        # outside any tower's control flow; on the CPU, where the replicated trainer's towers and
        # the loss-scale update all find it
        with tf.control_dependencies(None), tfv1.variable_scope(NAME), tf.device("/cpu:0"):
            self.scale = tfv1.get_variable("scale", initializer=float(initial_scale), trainable=False)
            self.good_steps = tfv1.get_variable("good_steps", initializer=0, dtype=tf.int32, trainable=False)

    def compute_gradients(self, loss, var_list=None, **kwargs):
        scale = tf.identity(self.scale, name="loss_scale")  # one read for scaling and unscaling
        grads = self._opt.compute_gradients(loss * scale, var_list=var_list, **kwargs)
        inverse = 1.0 / scale
        return [(None if g is None else _multiply(float32_boundary(g), inverse), v) for g, v in grads]

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = [(g, v) for g, v in grads_and_vars if g is not None]
        with tf.name_scope("LossScalingOptimizer"):
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(_values(g))) for g, _ in grads_and_vars],
                                   name="all_gradients_finite")
            update = tf.cond(finite, lambda: tf.group(self._opt.apply_gradients(grads_and_vars)), tf.no_op,
                             name=name or "apply_if_finite")
            ops = [update]
            if not self._state_update_built:  # other towers apply the same sums: one update of the scale
                self._state_update_built = True
                ops.append(self._update_scale(finite))
            op = tf.group(*ops)
            if global_step is not None:
                with tf.control_dependencies([op]):
                    op = tfv1.assign_add(global_step, 1)
        return op

    def _update_scale(self, finite):
        def count_or_grow():
            count = self.good_steps + 1
            grow = count >= self._growth_interval
            grown = self.scale * self._factor
            # a scale that would overflow float32 stays where it is
            new_scale = tf.where(tf.logical_and(grow, tf.math.is_finite(grown)), grown, self.scale)
            return tf.group(tfv1.assign(self.scale, new_scale),
                            tfv1.assign(self.good_steps, tf.where(grow, 0, count)))

        def shrink():
            return tf.group(tfv1.assign(self.scale, tf.maximum(self.scale / self._factor, self._min_scale)),
                            tfv1.assign(self.good_steps, 0))

        return tf.cond(finite, count_or_grow, shrink, name="update_loss_scale")


def _values(grad):
    return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def _multiply(grad, factor):
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * tf.cast(factor, grad.dtype), grad.indices, grad.dense_shape)
    return grad * tf.cast(factor, grad.dtype)
