"""The config-free mask operations shared by the mask head and the techniques, against NumPy."""
import numpy as np
import pytest
from tensorpack.models import Conv2D
from tensorpack.tfutils import argscope

from maskplus.compat import tf, tfv1
from maskplus.modeling import mask_ops


def _run(fetches):
    with tfv1.Session() as sess:
        sess.run(tfv1.global_variables_initializer())
        return sess.run(fetches)


def test_own_class_loss_is_the_mean_sigmoid_cross_entropy_of_channel_label_minus_one():
    rng = np.random.RandomState(0)
    logits = rng.standard_normal((3, 4, 5, 7)).astype(np.float32)  # K = 4, non-square masks
    labels = np.array([4, 1, 2], np.int64)
    targets = rng.uniform(size=(3, 5, 7)).astype(np.float32)
    with tf.Graph().as_default():
        loss, own = _run(mask_ops.own_class_loss(tf.constant(logits), tf.constant(labels), tf.constant(targets)))
    expected_own = np.stack([logits[0, 3], logits[1, 0], logits[2, 1]])
    np.testing.assert_array_equal(own, expected_own)
    ce = np.maximum(expected_own, 0) - expected_own * targets + np.log1p(np.exp(-np.abs(expected_own)))
    assert loss == pytest.approx(ce.mean(), rel=1e-6)


def test_the_class_wise_predictor_is_linear_even_under_a_relu_argscope():
    x = np.random.RandomState(0).standard_normal((2, 16, 3, 3)).astype(np.float32)
    with tf.Graph().as_default():
        with argscope(Conv2D, activation=tf.nn.relu):
            y = mask_ops.class_wise_predictor("conv", tf.constant(x), 5)
        (w,) = [v for v in tfv1.global_variables() if v.op.name == "conv/W"]
        out, weights = _run([y, w])
    assert weights.shape == (1, 1, 16, 5) and 0.0005 < weights.std() < 0.002
    np.testing.assert_allclose(out, np.einsum("nchw,ck->nkhw", x, weights[0, 0]), atol=1e-6)
    assert (out < 0).any()  # no ReLU


def test_unpackbits_masks_inverts_numpy_packbits():
    masks = (np.random.RandomState(0).uniform(size=(2, 3, 13)) > 0.5).astype(np.uint8)
    with tf.Graph().as_default():
        got = _run(mask_ops.unpackbits_masks(tf.constant(np.packbits(masks, axis=-1))))
    assert got.shape == (2, 3, 16)
    np.testing.assert_array_equal(got[:, :, :13], masks.astype(bool))
    assert not got[:, :, 13:].any()
