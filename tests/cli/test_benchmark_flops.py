"""The benchmark's FLOP count against hand-computed counts of a small graph with dynamic shapes."""
import numpy as np

from maskplus.compat import tf, tfv1
from scripts.benchmark import network_flops


def test_flops_of_conv_deconv_and_matmul_from_run_time_shapes():
    graph = tf.Graph()
    with graph.as_default():
        x = tfv1.placeholder(tf.float32, [None, None, None, 3])  # shapes known only at run time
        conv = tf.nn.conv2d(x, tf.ones([3, 3, 3, 8]), strides=2, padding="SAME")  # -> N x 5 x 6 x 8
        up = tf.nn.conv2d_transpose(conv, tf.ones([2, 2, 4, 8]), tf.stack([tf.shape(x)[0], 10, 12, 4]), strides=2)
        flat = tf.reshape(up, [-1, 4])
        tf.matmul(flat, tf.ones([4, 7]))
        tf.matmul(tf.ones([5, 2]), tf.ones([5, 3]), transpose_a=True)
    feed = {x: np.zeros((2, 10, 12, 3), np.float32)}
    expected = (2 * (2 * 5 * 6 * 8) * (3 * 3 * 3)    # conv: outputs x kernel taps x input channels
                + 2 * (2 * 5 * 6 * 8) * (2 * 2 * 4)  # deconv: small-side inputs x taps x output channels
                + 2 * (2 * 10 * 12 * 7) * 4         # matmul [240, 4] x [4, 7]
                + 2 * (2 * 3) * 5)                  # matmul [5, 2]^T x [5, 3]
    assert network_flops(graph, feed) == expected


def test_the_matmul_rate_times_the_product_of_inputs_made_once(monkeypatch):
    from scripts import benchmark
    runs = []

    def twice(fn, repeats, warmup=1):
        runs.extend([fn(), fn()])
        return 1.0

    monkeypatch.setattr(benchmark, "median_time", twice)
    for precision in ("fp32", "bf16"):
        runs.clear()
        assert benchmark.matmul_gflops(precision, n=64) == 2 * 64 ** 3 / 1e9
        # inputs drawn anew in each timed run would give another product each time
        assert runs[0] == runs[1] and runs[0] != 0
