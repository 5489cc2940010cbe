"""Float32 islands: the parts of the graph that the bf16 and fp16 rewrites must leave in float32.

Losses, box coding and clipping, proposal ranking and NMS, sampling and IoU, RoIAlign's box
coordinates and the gradient sums take their float32 inputs through :func:`float32_boundary`, a
``Cast`` from float32 to float32. maskplus/precision.py says why that op holds the island.
Config-free: a model primitive.
"""
import functools

from maskplus.compat import tf


def float32_boundary(value):
    """``value`` through a float32 -> float32 ``Cast`` (numerically the identity): for a tensor, an
    ``IndexedSlices`` (its values) or a list/tuple of them. Other dtypes and non-tensors pass as they are."""
    if isinstance(value, (list, tuple)):
        values = [float32_boundary(v) for v in value]
        return type(value)(*values) if hasattr(value, "_fields") else type(value)(values)
    if isinstance(value, tf.IndexedSlices):
        return tf.IndexedSlices(float32_boundary(value.values), value.indices, value.dense_shape)
    if isinstance(value, tf.Tensor) and value.dtype == tf.float32:
        # tf.cast returns a float32 tensor unchanged, without a node: the raw op makes one
        return tf.raw_ops.Cast(x=value, DstT=tf.float32, name="float32_boundary")
    return value


def float32_island(func):
    """``func`` with every float32 tensor argument and result passed through :func:`float32_boundary`.

    Put it below ``under_name_scope`` so that the boundary ops sit in the function's scope."""
    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        args = [float32_boundary(a) for a in args]
        kwargs = {k: float32_boundary(v) for k, v in kwargs.items()}
        return float32_boundary(func(*args, **kwargs))
    return wrapped
