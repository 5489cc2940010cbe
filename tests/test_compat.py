"""The compat module must make a fresh interpreter ready for Tensorpack on any x86 CPU.

Each check runs in a new process with the relevant variables removed from the environment,
as a user's shell would have them, because the shims only act before TensorFlow is imported.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NCHW_OPS = """
import maskplus.compat as c
from maskplus.compat import tf
x = tf.zeros([1, 3, 8, 8])
pool = tf.nn.max_pool2d(x, 2, 2, "SAME", data_format="NCHW")
conv = tf.nn.conv2d(x, tf.zeros([3, 3, 3, 4]), 1, "SAME", data_format="NCHW")
with tf.compat.v1.Session() as s:
    print(s.run(pool).shape, s.run(conv).shape, tf.executing_eagerly())
"""


def run_clean(code, **env_overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_USE_LEGACY_KERAS")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_nchw_pooling_and_convolution_run_on_cpu_without_user_settings():
    # TensorFlow enables oneDNN by itself only on CPUs with AVX-512 VNNI and friends; on others
    # (e.g. AVX2-only AMD EPYC) NCHW max-pooling fails unless compat turns oneDNN on.
    proc = run_clean(NCHW_OPS)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[0] == "(1, 3, 4, 4) (1, 4, 8, 8) False"


def test_disabling_onednn_is_refused_with_a_clear_message():
    proc = run_clean("import maskplus.compat", TF_ENABLE_ONEDNN_OPTS="0")
    assert proc.returncode != 0
    assert "TF_ENABLE_ONEDNN_OPTS=0 disables the oneDNN kernels" in proc.stderr


def test_keras_2_is_selected_for_tensorpack_layers():
    proc = run_clean("import maskplus.compat, os; from maskplus.compat import tf; "
                     "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Conv2D.__module__.split('.')[0])")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "tf_keras"]
