"""The compat module must make a fresh interpreter ready for Tensorpack on any x86 CPU.

Each check runs in a new process with the relevant variables removed from the environment,
as a user's shell would have them, because the shims only act before TensorFlow is imported.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

NCHW_OPS = """
import maskplus.compat as c
from maskplus.compat import tf
x = tf.zeros([1, 3, 8, 8])
pool = tf.nn.max_pool2d(x, 2, 2, "SAME", data_format="NCHW")
conv = tf.nn.conv2d(x, tf.zeros([3, 3, 3, 4]), 1, "SAME", data_format="NCHW")
with tf.compat.v1.Session() as s:
    print(s.run(pool).shape, s.run(conv).shape, tf.executing_eagerly())
"""


SHIM_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "TF_USE_LEGACY_KERAS", "MASKPLUS_CPU_CONV_LAYOUT")


def run_clean(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in SHIM_VARIABLES}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.cli
def test_nchw_pooling_and_convolution_run_on_cpu_without_user_settings():
    # TensorFlow enables oneDNN by itself only on CPUs with AVX-512 VNNI and friends; on others
    # (e.g. AVX2-only AMD EPYC) NCHW max-pooling fails unless compat turns oneDNN on.
    proc = run_clean(NCHW_OPS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == "(1, 3, 4, 4) (1, 4, 8, 8) False"


@pytest.mark.cli
def test_disabling_onednn_is_refused_with_a_clear_message():
    proc = run_clean("import maskplus.compat", TF_ENABLE_ONEDNN_OPTS="0")
    assert proc.returncode != 0
    assert "TF_ENABLE_ONEDNN_OPTS=0 disables the oneDNN kernels" in proc.stderr


@pytest.mark.cli
def test_keras_2_is_selected_for_tensorpack_layers():
    proc = run_clean("import maskplus.compat, os; from maskplus.compat import tf; "
                     "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Conv2D.__module__.split('.')[0])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "tf_keras"]


def test_nchw_conv_computed_via_nhwc_equals_the_native_nchw_op():
    from tensorflow.python.ops import gen_nn_ops
    from maskplus.compat import nchw_conv2d_via_nhwc, tf, tfv1
    native = getattr(gen_nn_ops.conv2d, "original", gen_nn_ops.conv2d)
    via_nhwc = nchw_conv2d_via_nhwc(native)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 9, 11).astype("float32")
    w = rng.randn(3, 3, 3, 5).astype("float32")
    cases = [dict(strides=[1, 1, 1, 1], padding="SAME"),
             dict(strides=[1, 1, 2, 2], padding="VALID"),
             dict(strides=[1, 1, 2, 1], padding="EXPLICIT", explicit_paddings=[0, 0, 0, 0, 1, 2, 0, 1]),
             dict(strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 1, 2, 2])]
    with tf.Graph().as_default(), tfv1.Session() as sess:
        for case in cases:
            ours, reference = sess.run([via_nhwc(x, w, data_format="NCHW", **case),
                                        native(x, w, data_format="NCHW", **case)])
            assert ours.shape == reference.shape, case
            np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4, err_msg=str(case))
        nhwc = via_nhwc(x.transpose(0, 2, 3, 1), w, [1, 2, 2, 1], "SAME")  # NHWC calls pass through
        assert sess.run(nhwc).shape == (2, 5, 6, 5)


@pytest.mark.slow
@pytest.mark.cli
def test_cpu_conv_layout_can_be_forced_and_rejects_nonsense():
    probe = ("import maskplus.compat as c; from tensorflow.python.ops import gen_nn_ops; "
             "print(c.cpu_conv_layout(), hasattr(gen_nn_ops.conv2d, 'nchw_via_nhwc'))")
    assert run_clean(probe, MASKPLUS_CPU_CONV_LAYOUT="NHWC").stdout.split() == ["NHWC", "True"]
    assert run_clean(probe, MASKPLUS_CPU_CONV_LAYOUT="nchw").stdout.split() == ["NCHW", "False"]
    bad = run_clean("import maskplus.compat", MASKPLUS_CPU_CONV_LAYOUT="NWHC")
    assert bad.returncode != 0 and "MASKPLUS_CPU_CONV_LAYOUT must be NHWC or NCHW, got 'NWHC'" in bad.stderr
