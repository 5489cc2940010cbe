"""Gradients applied only once all of them are computed (TensorFlow's "gate the graph").

The variables are TF1 reference variables: a layer's weights read in the forward pass alias the
variable's buffer, and the backward pass reads them again to pass gradients on to the layers
below. An update depends only on its own variable's gradient, so it may run while a lower layer's
gradient is still being computed from the weights it overwrites: which value that computation
reads depends on scheduling. Two runs of one seeded command without gradient accumulation
(an update every step) differed in most weights after six steps; accumulation hides it, as its
update waits for the sums of all gradients. ``TRAIN.DETERMINISTIC`` wraps the optimizer in this.
"""
from tensorpack.tfutils.optimizer import ProxyOptimizer

from maskplus.compat import tf


class GatedOptimizer(ProxyOptimizer):
    """Wraps ``opt``: its update of any variable waits for every gradient of the step."""

    def __init__(self, opt):
        super().__init__(opt, "Gated")

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        pairs = [(g, v) for g, v in grads_and_vars if g is not None]
        gated = tf.tuple([g for g, _ in pairs])  # each available only once all are computed
        return self._opt.apply_gradients(list(zip(gated, [v for _, v in pairs])), global_step=global_step, name=name)
