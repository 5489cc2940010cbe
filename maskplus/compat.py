"""The one place for version shims between Tensorpack 0.11 and today's stack.

Imported first by the package and by every entry point, before anything touches TensorFlow.
Why each shim exists:

* ``TF_USE_LEGACY_KERAS=1``: Tensorpack's layers wrap ``tf.keras`` layers written for Keras 2;
  with Keras 3 they fail with "'Conv2D' is not available with Keras 3". The variable must be
  set before TensorFlow is imported, hence at the top of this module.
* ``disable_v2_behavior()``: Tensorpack builds TF1 graphs. Control-flow v2 breaks the
  ``tf.cond`` in ``AccumGradOptimizer``, and resource variables fail Tensorpack's
  ``isinstance`` checks, which silently drops BN moving averages from ``MODEL_VARIABLES``
  (and so from exported ``.npz`` files).
* TensorFlow's C++ log level defaults to quiet unless the user set it.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
    # NCHW convolutions/pooling only run on CPU through oneDNN.
    raise RuntimeError(
        "TF_ENABLE_ONEDNN_OPTS=0 disables the oneDNN kernels that NCHW convolutions need on CPU; "
        "unset it to run MaskPlus.")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_v2_behavior()

#: The TF1 API, used everywhere in the package instead of ``tf.compat.v1``.
tfv1 = tf.compat.v1

__all__ = ["tf", "tfv1", "np"]
