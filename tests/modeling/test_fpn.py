"""The feature pyramid and the RPN head by value, with weights set by hand.

The example's FPN: lateral 1x1 convs on C2-C5; top-down, P5 = lateral(C5) and each finer merged
level adds the 2x nearest-neighbour up-sampled coarser one; a 3x3 conv on each merged level gives
P2-P5; P6 takes every second pixel of P5. With identity laterals and identity 3x3 convs (the
centre tap) the pyramid is plain arithmetic on the inputs.
"""
import numpy as np

from tests.helpers import config_snapshot, configure
from maskplus.compat import tf, tfv1

C = 4  # channels of the inputs and of the pyramid


def _nearest_up(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def test_the_pyramid_adds_each_up_sampled_coarser_level_and_p6_subsamples_p5():
    from maskplus.modeling.model_fpn import fpn_model
    rng = np.random.RandomState(0)
    # a 64 x 96 padded image: C2..C5 at strides 4..32, values that differ everywhere
    feats = [rng.uniform(-1, 1, (1, C, 64 // s, 96 // s)).astype(np.float32) for s in (4, 8, 16, 32)]
    with config_snapshot():
        configure({"FPN.NUM_CHANNEL": C, "FPN.NORM": "None", "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_head"})
        with tf.Graph().as_default(), tfv1.Session() as sess:
            outputs = fpn_model("fpn", [tf.constant(f) for f in feats], C, "None")
            sess.run(tfv1.global_variables_initializer())
            identity3 = np.zeros((3, 3, C, C), np.float32)
            identity3[1, 1] = np.eye(C)
            for v in tfv1.global_variables():
                if v.op.name.endswith("/b"):
                    v.load(np.zeros(v.shape.as_list()), sess)
                elif "lateral_1x1" in v.op.name:
                    v.load(np.eye(C)[None, None], sess)
                elif "posthoc_3x3" in v.op.name:
                    v.load(identity3, sess)
            p2, p3, p4, p5, p6 = sess.run(outputs)
    c2, c3, c4, c5 = [f.astype(np.float64) for f in feats]
    m5 = c5
    m4 = c4 + _nearest_up(m5)
    m3 = c3 + _nearest_up(m4)
    m2 = c2 + _nearest_up(m3)
    for got, expected in zip((p2, p3, p4, p5, p6), (m2, m3, m4, m5, m5[:, :, ::2, ::2])):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_rpn_head_lays_out_anchor_a_coordinate_k_at_channel_4a_plus_k():
    """The model zoo's RPN layout: objectness channel a is anchor a; box channel 4a + k is anchor
    a's k-th delta (dx, dy, dw, dh). Constant outputs (kernels zero, biases set) show the order."""
    from maskplus.modeling.model_rpn import rpn_head
    with tf.Graph().as_default(), tfv1.Session() as sess:
        labels, boxes = rpn_head("rpn", tf.ones([1, 8, 5, 7]), 8, 3)
        sess.run(tfv1.global_variables_initializer())
        for v in tfv1.global_variables():
            if v.op.name in ("rpn/class/W", "rpn/box/W"):
                v.load(np.zeros(v.shape.as_list()), sess)
            elif v.op.name == "rpn/class/b":
                v.load([10.0, 11.0, 12.0], sess)
            elif v.op.name == "rpn/box/b":
                v.load(np.arange(12.0), sess)
        labels, boxes = sess.run([labels, boxes])
    assert labels.shape == (5, 7, 3) and boxes.shape == (5, 7, 3, 4)
    np.testing.assert_array_equal(labels[2, 6], [10, 11, 12])
    np.testing.assert_array_equal(boxes[4, 0], [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
