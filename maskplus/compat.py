"""The one place for version shims between Tensorpack 0.11 and today's stack.

Imported before TensorFlow by every module that imports TensorFlow or Tensorpack (``modeling/`` and
``techniques/`` through their ``__init__``) and by every entry point; ``import maskplus`` alone loads
nothing (tests/test_import_layers.py).

Why each shim exists:

* ``TF_USE_LEGACY_KERAS=1``: Tensorpack's layers wrap ``tf.keras`` layers written for Keras 2;
  with Keras 3 they fail with "'Conv2D' is not available with Keras 3". The variable must be
  set before TensorFlow is imported, hence at the top of this module.
* ``disable_v2_behavior()``: Tensorpack builds TF1 graphs. Control-flow v2 breaks the
  ``tf.cond`` in ``AccumGradOptimizer``, and resource variables fail Tensorpack's
  ``isinstance`` checks, which silently drops BN moving averages from ``MODEL_VARIABLES``
  (and so from exported ``.npz`` files).
* TF1 names on the ``tf`` module: parts of Tensorpack 0.11 (the Horovod trainer, distributed
  and profiling helpers) call e.g. ``tf.global_variables()`` on the TF2 module, where those
  names no longer exist. They are aliased to their ``tf.compat.v1`` versions, never replaced.
* ``TF_ENABLE_ONEDNN_OPTS=1``: TensorFlow's stock CPU kernels only support NHWC pooling and
  convolution; the NCHW layout that Tensorpack's models use (and GPUs prefer) runs on CPU only
  through oneDNN. TensorFlow turns oneDNN on by default only on CPUs with AVX-512 VNNI/BF16/AMX
  (so on a Xeon but not on an AVX2-only AMD EPYC, where every model fails with "Default
  MaxPoolingOp only supports NHWC on device type CPU"), so we turn it on explicitly.
* NCHW ``Conv2D`` computed in NHWC on CPUs without AVX-512: there oneDNN has no fast forward
  kernel for NCHW data with TensorFlow's HWIO filters and falls back to its reference loop
  ("ref:any"), orders of magnitude slower. Its backward kernels are fast. So on CPU-only hosts lacking AVX-512, the ``Conv2D``
  op that ``tf.nn.convolution`` and Keras emit is wrapped in transposes to NHWC and back. The
  variables, their shapes and the results are unchanged; only the graph's op layout differs.
  ``MASKPLUS_CPU_CONV_LAYOUT=NHWC`` or ``=NCHW`` overrides the automatic choice;
  ``use_conv_layout`` switches it for the graphs built next (tests build both machines' graphs).
* TensorFlow's C++ log level defaults to quiet unless the user set it.
* ``logging.raiseExceptions = False``: when training stops on an error, Tensorpack 0.11 logs
  "Training failed at global_step=" with a malformed format string, which makes Python's logging
  print a confusing traceback of its own right before our one-line error message.
"""
import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
logging.raiseExceptions = False
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
if os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0":
    # NCHW convolutions/pooling only run on CPU through oneDNN.
    raise RuntimeError(
        "TF_ENABLE_ONEDNN_OPTS=0 disables the oneDNN kernels that NCHW convolutions need on CPU; "
        "unset it to run MaskPlus.")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_v2_behavior()

#: The TF1 API, used everywhere in the package instead of ``tf.compat.v1``.
tfv1 = tf.compat.v1

_TF1_NAMES_USED_BY_TENSORPACK = (
    "ConfigProto", "GraphKeys", "RunOptions", "RunMetadata", "Session", "FIFOQueue", "QueueBase",
    "add_to_collection", "get_default_graph", "get_default_session", "get_variable", "get_variable_scope",
    "global_variables", "global_variables_initializer", "local_variables", "local_variables_initializer",
    "model_variables", "placeholder", "report_uninitialized_variables", "trainable_variables",
    "variable_scope", "is_finite", "log")
for _name in _TF1_NAMES_USED_BY_TENSORPACK:
    if not hasattr(tf, _name) and hasattr(tfv1, _name):
        setattr(tf, _name, getattr(tfv1, _name))



def _cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:  # not Linux: no x86 oneDNN fast path to rely on either
        return False


def nchw_conv2d_via_nhwc(conv2d):
    """``conv2d`` (the raw Conv2D op wrapper) with NCHW calls computed as NHWC between transposes."""
    def to_nhwc(values):
        return [values[0], values[2], values[3], values[1]]

    def wrapped(input, filter, strides, padding, use_cudnn_on_gpu=True, explicit_paddings=(),
                data_format="NHWC", dilations=(1, 1, 1, 1), name=None):
        if data_format != "NCHW":
            return conv2d(input, filter, strides, padding, use_cudnn_on_gpu=use_cudnn_on_gpu,
                          explicit_paddings=list(explicit_paddings), data_format=data_format,
                          dilations=list(dilations), name=name)
        pads = list(explicit_paddings)
        if pads:  # one (before, after) pair per dimension, in the data's order
            pads = sum(to_nhwc([pads[i:i + 2] for i in range(0, 8, 2)]), [])
        out = conv2d(tf.transpose(input, [0, 2, 3, 1]), filter, to_nhwc(list(strides)), padding,
                     use_cudnn_on_gpu=use_cudnn_on_gpu, explicit_paddings=pads, data_format="NHWC",
                     dilations=to_nhwc(list(dilations)), name=name)
        return tf.transpose(out, [0, 3, 1, 2])

    wrapped.nchw_via_nhwc = True
    wrapped.original = conv2d
    return wrapped


def cpu_conv_layout():
    """The layout NCHW convolutions run in: NCHW where fast kernels exist (GPU, AVX-512 CPU), else NHWC."""
    forced = os.environ.get("MASKPLUS_CPU_CONV_LAYOUT", "").upper()
    if forced in ("NHWC", "NCHW"):
        return forced
    if forced:
        raise RuntimeError(f"MASKPLUS_CPU_CONV_LAYOUT must be NHWC or NCHW, got '{forced}'.")
    if tf.config.list_physical_devices("GPU") or _cpu_has_avx512():
        return "NCHW"
    return "NHWC"


from tensorflow.python.ops import gen_nn_ops  # noqa: E402  (nn_ops looks its ops up at call time)

_CONV2D = getattr(gen_nn_ops.conv2d, "original", gen_nn_ops.conv2d)


def use_conv_layout(layout):
    """Makes graphs built from now on run NCHW convolutions in ``layout`` ('NCHW' or 'NHWC');
    returns the layout used before. Tests build the graph of the other kind of machine with it."""
    before = "NHWC" if hasattr(gen_nn_ops.conv2d, "nchw_via_nhwc") else "NCHW"
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got '{layout}'.")
    gen_nn_ops.conv2d = _CONV2D if layout == "NCHW" else nchw_conv2d_via_nhwc(_CONV2D)
    return before


use_conv_layout(cpu_conv_layout())

__all__ = ["tf", "tfv1", "np"]
