"""``TRAIN.DETERMINISTIC``: two runs of the same command train bit-identical weights.

What makes two runs of one seeded command (``DATA.SEED``) differ, and what this mode does:

* kernels that may sum in a varying order (multi-threaded scatter-adds, e.g. the gradient of
  ``crop_and_resize`` under RoIAlign): TensorFlow's op determinism picks deterministic kernels, and
  raises ``UnimplementedError`` where it has none (on GPUs: crop_and_resize's gradient, fused
  batch norm's backprop when frozen, ...), which :func:`determinism_failure` turns into a message
  naming the op and the option;
* weight updates racing the backward pass (reference variables: a layer's update may overwrite
  the weights a lower layer's gradient is still being computed from): updates wait for every
  gradient (``maskplus/modeling/gated_optimizer.py``);
* the order in which loader processes return datapoints: kept (``maskplus/data/pipeline.py``);
* random seeds: the graph's seed (``DATA.SEED``, set by the trainer; every random op's seed derives
  from it and the op's place in the graph), the data's (the same), the loader processes' (each
  datapoint's from the source, whichever process maps it);
* concurrent towers: two runs of two CPU towers differed in the last bits of a few weights with
  op determinism on (with and without loader processes, and with one intra-op thread), so the
  mode trains one tower (config.py refuses more).
"""
import contextlib

from maskplus.compat import tf  # first: its shims precede Tensorpack's TensorFlow


class DeterminismError(RuntimeError):
    """TensorFlow has no deterministic kernel for an op of the model on this device."""


def enable_op_determinism():
    """TensorFlow's op determinism for this process (it cannot be turned off again); random ops then
    need a seed, which the graph's seed gives them (``tfv1.set_random_seed``)."""
    tf.config.experimental.enable_op_determinism()


def determinism_failure(error):
    """The :class:`DeterminismError` of a TensorFlow error raised because op determinism is on and
    an op has no deterministic kernel here, else None."""
    message = getattr(error, "message", "") or ""
    if not isinstance(error, tf.errors.UnimplementedError) or "eterministic" not in message:
        return None
    node = getattr(error, "node_def", None)
    op = getattr(error, "op", None)
    op_type = (node.op if node is not None and node.op else None) or (op.type if op is not None else "?")
    name = (node.name if node is not None and node.name else None) or (op.name if op is not None else "?")
    device = (node.device if node is not None else "") or (op.device if op is not None else "")
    reason = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return DeterminismError(
        f"TRAIN.DETERMINISTIC=True, but TensorFlow has no deterministic kernel for op {op_type} ('{name}'"
        f"{', on ' + device if device else ''}): {reason} Train with TRAIN.DETERMINISTIC=False, or on the CPU "
        f"(CUDA_VISIBLE_DEVICES=''), where every op of this model has one.")


@contextlib.contextmanager
def ops_without_deterministic_kernels_named(enabled):
    """Inside, with ``enabled`` (``TRAIN.DETERMINISTIC``), the error of an op without a
    deterministic kernel becomes a :class:`DeterminismError` naming it; other errors pass."""
    try:
        yield
    except tf.errors.UnimplementedError as e:
        failure = determinism_failure(e) if enabled else None
        if failure is None:
            raise
        raise failure from None
