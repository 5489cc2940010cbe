"""Layers Tensorpack does not ship: GroupNorm, the norm choice shared by backbone and heads, and
the convolution initializer of the heads. Config-free: the techniques use it too."""
from tensorpack.models import BatchNorm, layer_register

from maskplus.architecture import GN_GROUPS
from maskplus.compat import tf, tfv1


def msra_fan_out():
    """He et al.'s initializer over the fan-out, from a normal distribution (the example's heads)."""
    return tfv1.variance_scaling_initializer(scale=2.0, mode="fan_out", distribution="untruncated_normal")


@layer_register(log_shape=True)
def GroupNorm(x, group=GN_GROUPS, gamma_initializer=tf.ones_initializer()):
    """Group normalisation (Wu & He, 2018) of an NCHW tensor.

    ``group``: ``GN_GROUPS`` (maskplus/architecture.py) everywhere, as in the example; config.py
    refuses the widths it does not divide before a graph is built.

    Variables ``beta`` and ``gamma`` of shape [C], as the model-zoo GN checkpoints store them.
    ``gamma_initializer=None`` leaves gamma to the variable scope's default (glorot-uniform).
    """
    chan = x.shape.as_list()[1]
    if chan % group:
        raise ValueError(f"GroupNorm: {chan} channels are not divisible into {group} groups.")
    dyn = tf.shape(x)
    grouped = tf.reshape(x, tf.stack([-1, group, chan // group, dyn[2], dyn[3]]))
    mean, var = tf.nn.moments(grouped, [2, 3, 4], keepdims=True)
    beta = tfv1.get_variable("beta", [chan], initializer=tf.zeros_initializer())
    gamma = tfv1.get_variable("gamma", [chan], initializer=gamma_initializer)
    affine_shape = [1, group, chan // group, 1, 1]
    out = tf.nn.batch_normalization(grouped, mean, var, tf.reshape(beta, affine_shape),
                                    tf.reshape(gamma, affine_shape), 1e-5)
    return tf.reshape(out, dyn, name="output")


def norm_layer(kind, zero_init=False, unit_gamma=False):
    """A one-argument function normalising its input with ``kind`` (FreezeBN/SyncBN/GN/None).

    It runs inside the calling layer's variable scope, so a conv named ``conv1`` gets
    ``conv1/bn/...`` or ``conv1/gn/...`` variables, the model-zoo names. ``zero_init`` starts the
    scale at zero (last norm of a residual branch). Otherwise the scale starts at one with
    ``unit_gamma``, and else, as the example's ``get_norm`` (which passes no initializer), at
    TensorFlow's default glorot-uniform draw.
    """
    if kind == "None":
        return tf.identity
    if zero_init:
        gamma_init = tf.zeros_initializer()
    else:
        gamma_init = tf.ones_initializer() if unit_gamma else None
    if kind == "GN":
        return lambda x: GroupNorm("gn", x, gamma_initializer=gamma_init)
    return lambda x: BatchNorm("bn", x, gamma_initializer=gamma_init)
