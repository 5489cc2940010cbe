"""Each technique's builder on its own: explicit arguments, no config.

Every test here runs with the global config made unreadable (``config_unreadable``): any module
that reads it through its module-level ``cfg``/``config`` name fails the test. The expected values
come from the arguments (variable shapes) or from NumPy (the loss).
"""
import sys

import numpy as np
import pytest
from tensorpack.tfutils.tower import TowerContext

from config import config as _global_config
from maskplus.compat import tf, tfv1
from maskplus.modeling.mask_ops import MaskTargets
from maskplus.techniques import (biased_training, boundary_refinement, context_fusion, deconv_pyramid,
                                 quasi_multitask)


class _Unreadable:
    def __getattr__(self, name):
        raise AssertionError(f"the global config was read (.{name}) by a builder that takes arguments")


@pytest.fixture(autouse=True)
def config_unreadable(monkeypatch):
    """Replace the global config, wherever a loaded module holds it, by an object that fails on access."""
    # compared with `real`, never with the global name: this module's own `_global_config` is
    # replaced too, and modules listed after it in sys.modules (those first imported by an earlier
    # test module's tests, after this one was collected) would be compared with the stand-in
    real = _global_config
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if value is real:
                monkeypatch.setattr(module, name, _Unreadable())
    yield
    # a module first imported during the test took the unreadable stand-in from the config module
    # (`from config import config`) and monkeypatch does not know it: give it the real config
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if isinstance(value, _Unreadable):
                setattr(module, name, real)


def test_the_unreadable_config_fixture_catches_a_read():
    from maskplus.engine import model  # a reader of the global config (the model's from_config)
    with pytest.raises(AssertionError, match="global config was read"):
        model.cfg.MASKPLUS


def _shapes(prefix=""):
    return {v.op.name: v.shape.as_list() for v in tfv1.global_variables() if v.op.name.startswith(prefix)}


def _run(fetches):
    with tfv1.Session() as sess:
        sess.run(tfv1.global_variables_initializer())
        return sess.run(fetches)


def test_contextual_fusion_pools_the_real_image_at_the_given_stride():
    """An 8 x 16 map at stride 4 whose columns 7+ are non-zero; the real image is 32 high and 24 wide,
    i.e. map columns 0-6, all zero: with zero conv biases the context is exactly zero. The whole
    64-wide image (or stride 2, or h and w swapped: columns 0-8) reaches the non-zero columns."""
    fmap = np.zeros((1, 5, 8, 16), np.float32)
    fmap[:, :, :, 7:] = np.random.RandomState(0).uniform(1, 2, (1, 5, 8, 9))
    roi = np.random.RandomState(1).standard_normal((2, 8, 14, 14)).astype(np.float32)
    outs = {}
    with tf.Graph().as_default():
        for image, stride in (((32, 24), 4), ((32, 64), 4)):
            with tfv1.variable_scope(tfv1.get_variable_scope(), reuse=tfv1.AUTO_REUSE):
                outs[image] = context_fusion.fuse_context(tf.constant(roi), tf.constant(fmap), stride,
                                                          tf.constant(image), [6, 8])
        assert _shapes() == {"context_fusion/conv0/W": [3, 3, 5, 6], "context_fusion/conv0/b": [6],
                             "context_fusion/conv1/W": [3, 3, 6, 8], "context_fusion/conv1/b": [8]}
        narrow, wide = _run([outs[(32, 24)], outs[(32, 64)]])
    np.testing.assert_array_equal(narrow, roi)
    context = wide - roi
    assert np.abs(context).max() > 1e-3
    np.testing.assert_allclose(context[0], context[1], atol=1e-6)  # one context, added to every RoI


def test_deconv_pyramid_has_the_given_width_and_keeps_the_input_shape():
    x = np.random.RandomState(0).standard_normal((2, 6, 7, 7)).astype(np.float32)
    with tf.Graph().as_default():
        y = deconv_pyramid.deconv_pyramid_module(tf.constant(x), 5)
        assert {k: v for k, v in _shapes().items() if k.endswith("/W")} == {
            "deconv_pyramid/up0/W": [2, 2, 5, 6], "deconv_pyramid/up1/W": [2, 2, 5, 5],
            "deconv_pyramid/down0/W": [3, 3, 5, 5], "deconv_pyramid/down1/W": [3, 3, 5, 6]}
        assert _run(y).shape == x.shape


def test_improved_boundary_refinement_has_the_given_modules_and_growth():
    k = 3
    s = np.random.RandomState(0).standard_normal((2, k, 12, 12)).astype(np.float32)
    with tf.Graph().as_default(), TowerContext("", is_training=False):
        out = boundary_refinement.refine_boundary(tf.constant(s), "improved", 2, [5, 3])
        kernels = {n: v for n, v in _shapes("boundary_refinement/").items() if n.endswith("/W")}
        assert kernels == {"boundary_refinement/module0/conv0/W": [1, 1, k, 5],
                           "boundary_refinement/module0/conv1/W": [3, 3, 5, 3],
                           "boundary_refinement/module1/conv0/W": [1, 1, k + 3, 5],
                           "boundary_refinement/module1/conv1/W": [3, 3, 5, 3],
                           "boundary_refinement/fuse/W": [1, 1, k + 6, k]}
        assert _run(out).shape == s.shape


def test_boundary_refinement_refuses_an_unknown_mode():
    with tf.Graph().as_default(), pytest.raises(ValueError, match="'original' or 'improved', got 'better'"):
        boundary_refinement.refine_boundary(tf.zeros([1, 3, 8, 8]), "better", 4, [16, 4])


def _sigmoid_ce(logits, labels):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def test_quasi_multitask_losses_are_the_weighted_own_class_cross_entropy():
    """Each scale's loss = weight x mean CE of channel (label - 1) against the targets, by NumPy."""
    rng = np.random.RandomState(0)
    roi = rng.standard_normal((3, 4, 6, 6)).astype(np.float32)
    gt_masks = (rng.uniform(size=(2, 40, 50)) > 0.5).astype(np.uint8)
    boxes = np.array([[2, 3, 30, 35], [10.5, 0, 49, 22], [0, 5, 20, 40]], np.float32)
    labels = np.array([3, 1, 2], np.int64)  # K = 3: every channel is someone's own
    with tf.Graph().as_default() as graph:
        targets = MaskTargets(tf.constant(labels), tf.constant(gt_masks), tf.constant([1, 0, 1], tf.int64))
        losses = quasi_multitask.quasi_multitask_losses(tf.constant(roi), targets, tf.constant(boxes), 3,
                                                        ["0.5x", "2x"], 7, 0.7)
        assert _shapes("quasi_multitask/fcn0/W") == {"quasi_multitask/fcn0/W": [3, 3, 4, 7]}
        assert _shapes("quasi_multitask/double/conv/W") == {"quasi_multitask/double/conv/W": [1, 1, 7, 3]}
        fetch = [losses, [graph.get_tensor_by_name(n) for n in ("quasi_multitask/half/conv/output:0",
                                                                  "quasi_multitask/double/conv/output:0",
                                                                  "quasi_multitask_loss_6/mask_targets_6:0",
                                                                  "quasi_multitask_loss_24/mask_targets_24:0")]]
        (half, double), (lh, ld, th, td) = _run(fetch)
    assert lh.shape == (3, 3, 6, 6) and ld.shape == (3, 3, 24, 24)
    own = np.arange(3), labels - 1
    assert half == pytest.approx(0.7 * _sigmoid_ce(lh[own], th).mean(), rel=1e-5)
    assert double == pytest.approx(0.7 * _sigmoid_ce(ld[own], td).mean(), rel=1e-5)
    assert half > 0.1 and double > 0.1


def test_biased_training_starts_alpha_at_the_given_value():
    with tf.Graph().as_default():
        weighted = biased_training.weight_mask_loss(tf.constant(0.8), 1.7)
        (alpha,) = [v for v in tfv1.global_variables() if v.op.name == "mask_loss_alpha"]
        assert not alpha.trainable
        w, a = _run([weighted, alpha])
    assert a == pytest.approx(1.7) and w == pytest.approx(0.8 * 1.7, rel=1e-6)
