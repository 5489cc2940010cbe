"""GroupNorm (Wu & He, 2018) against its definition in NumPy: each image's channels split into
groups of C / G consecutive channels, normalised by the group's mean and variance over its
channels and pixels (epsilon 1e-5), then scaled and shifted per channel."""
import numpy as np

from maskplus.compat import tf, tfv1


def test_group_norm_normalises_each_group_of_channels_over_its_pixels():
    from maskplus.modeling.layers import GroupNorm
    rng = np.random.RandomState(0)
    # 2 images, 8 channels in 4 groups of 2, 5 x 7 pixels; channels of very different scales
    x = (rng.standard_normal((2, 8, 5, 7)) * np.arange(1, 9)[None, :, None, None] + 3).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 8).astype(np.float32), rng.uniform(-1, 1, 8).astype(np.float32)
    with tf.Graph().as_default(), tfv1.Session() as sess:
        out = GroupNorm("gn", tf.constant(x), group=4)
        sess.run(tfv1.global_variables_initializer())
        for v in tfv1.global_variables():
            v.load({"gn/gamma": gamma, "gn/beta": beta}[v.op.name], sess)
        got = sess.run(out)
    expected = np.empty_like(x, dtype=np.float64)
    for n in range(2):
        for g in range(4):
            block = x[n, 2 * g:2 * g + 2].astype(np.float64)
            expected[n, 2 * g:2 * g + 2] = (block - block.mean()) / np.sqrt(block.var() + 1e-5)
    expected = expected * gamma[None, :, None, None] + beta[None, :, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
