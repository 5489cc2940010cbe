"""The image the backbone sees: the example's per-channel normalisation of a BGR image."""
import math

import numpy as np
import pytest

from tests.helpers import build_graph, config_snapshot, configure
from maskplus.compat import tf, tfv1

# the example's statistics, in RGB order (Tensorpack examples/FasterRCNN/config.py)
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


def _by_hand(bgr):
    """(value - mean) / std of each channel; channel 0 is blue, so it takes the last RGB statistic."""
    b, g, r = bgr
    return [(b - MEAN_RGB[2]) / STD_RGB[2], (g - MEAN_RGB[1]) / STD_RGB[1], (r - MEAN_RGB[0]) / STD_RGB[0]]


PIXELS = [(10.0, 120.0, 250.0), (200.0, 50.0, 0.0), (103.53, 116.28, 123.675)]


def test_image_preprocess_normalises_each_bgr_channel_by_its_own_mean_and_std():
    from config import config as cfg
    from maskplus.modeling.backbone import BackboneParams, image_preprocess
    image = np.array([PIXELS], np.float32)  # 1 x 3 x 3, channels last, BGR
    with config_snapshot():
        configure({})
        with tf.Graph().as_default(), tfv1.Session() as sess:
            backbone = BackboneParams.from_config(cfg)
            got = sess.run(image_preprocess(tf.constant(image), backbone.pixel_mean, backbone.pixel_std))
    np.testing.assert_allclose(got[0], [_by_hand(p) for p in PIXELS], rtol=1e-5, atol=1e-6)
    assert got[0, 2] == pytest.approx([0, 0, 0], abs=1e-5)  # the mean colour, BGR, becomes 0


def test_the_model_feeds_the_normalised_image_to_its_first_convolution():
    """In the inference graph the normalised image (still BGR, channels last) is what conv0 reads."""
    image = np.zeros((64, 96, 3), np.float32)
    image[:] = PIXELS[0]
    image[10:30, 20:50] = PIXELS[1]
    with config_snapshot():
        configure({}, training=False)
        graph, ph, _ = build_graph(False)
    normalised = graph.get_tensor_by_name("image_preprocess/mul:0")
    upstream, todo = set(), [graph.get_operation_by_name("conv0/output")]
    while todo:  # every op conv0's output depends on
        op = todo.pop()
        if op.name not in upstream:
            upstream.add(op.name)
            todo.extend(t.op for t in op.inputs)
    assert normalised.op.name in upstream and ph["image"].op.name in upstream
    with graph.as_default(), tfv1.Session() as sess:
        got = sess.run(normalised, {ph["image"]: image})
    np.testing.assert_allclose(got[0, 0, 0], _by_hand(PIXELS[0]), rtol=1e-5)
    np.testing.assert_allclose(got[0, 15, 30], _by_hand(PIXELS[1]), rtol=1e-5)


# -------------------- the Tensorpack example's rule (faithfulness): initialisation of norms
def _initial_gammas(norm_init, *names):
    with config_snapshot():
        configure({"BACKBONE.NORM_INIT": norm_init})
        graph, _, _ = build_graph(False)
        with graph.as_default(), tfv1.Session() as sess:
            sess.run(tfv1.global_variables_initializer())
            return sess.run([graph.get_tensor_by_name(f"{n}/gamma:0") for n in names])


@pytest.mark.faithfulness
def test_backbone_norms_start_as_the_examples_get_norm():
    """Last norm of a residual branch at 0; every other with no initializer, i.e. TF's
    glorot-uniform on a [C] vector: uniform in +-sqrt(6 / (C + C))."""
    final, inner, fpn = _initial_gammas("example", "group1/block0/conv3/gn", "group1/block0/conv1/gn",  # 128 ch
                                        "fpn/gn_c2")
    np.testing.assert_array_equal(final, 0)
    limit = math.sqrt(6 / (128 + 128))
    assert np.all(np.abs(inner) <= limit) and inner.std() > 0.5 * limit / math.sqrt(3)
    np.testing.assert_array_equal(fpn, 1)  # the FPN's and heads' GN keep gamma 1, as in the example


@pytest.mark.faithfulness
def test_unit_norm_init_starts_every_other_gamma_at_one():
    inner, = _initial_gammas("unit", "group1/block0/conv1/gn")
    np.testing.assert_array_equal(inner, 1)
