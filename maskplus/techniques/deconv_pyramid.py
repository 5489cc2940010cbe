"""Deconvolutional pyramid module -- MaskPlus section 3.2 (ablation: section 4.4, Table 2).

The paper: "a set of deconvolutional layers (stride = 2) followed by the equal numbers of
convolutional layers (stride = 2) ... our module up-samples first and then down-samples" and
(4.4) "two deconvolutional layers are followed by two convolutional layers ... They have strides
of 2 and filter size of 256. The features are added instead of concatenated."

Data flow (Figure 2, as we read it): x14 -> up28 -> up56 -> down28 (+ up28) -> down14 (+ x14).

Our interpretations, where the paper is vague:
* Placement: inside the mask head, after its four 3x3 convolutions and before its final 2x
  up-sampling deconvolution, so the head's output stays 28 x 28 and its baseline variables are
  untouched.
* "Filter size of 256" is the number of filters (``width``, ``MASKPLUS.DECONV_PYRAMID_DIM``); kernels are
  2x2 for the deconvolutions (like the mask head's own) and 3x3 for the stride-2 convolutions.
* Every layer is followed by ReLU; each skip sum is taken after the down-sampling layer's ReLU.
  The last convolution has the input's width so the final skip sum is defined.

Variables: ``maskrcnn/deconv_pyramid/{up0,up1,down0,down1}/{W,b}``.
"""
from tensorpack.models import Conv2D, Conv2DTranspose
from tensorpack.tfutils import argscope

from maskplus.compat import tf, tfv1
from maskplus.modeling.layers import msra_fan_out
from maskplus.techniques.registry import register

SCOPE = "deconv_pyramid"


def deconv_pyramid_module(x, width):
    """N x C x s x s -> N x C x s x s through a 4s-resolution detour (``width`` filters) with additive skips."""
    channels = x.shape.as_list()[1]
    with tfv1.variable_scope(SCOPE), \
            argscope([Conv2D, Conv2DTranspose], data_format="channels_first", activation=tf.nn.relu,
                     kernel_initializer=msra_fan_out()):
        up28 = Conv2DTranspose("up0", x, width, 2, strides=2)
        up56 = Conv2DTranspose("up1", up28, width, 2, strides=2)
        down28 = tf.add(Conv2D("down0", up56, width, 3, strides=2), up28, name="skip28")
        down14 = tf.add(Conv2D("down1", down28, channels, 3, strides=2), x, name="skip14")
    return tf.identity(down14, name="deconv_pyramid_output")


@register
class DeconvPyramid:
    """Hook ``before_upsample``: the pyramid module between the head's convolutions and its deconvolution."""
    name = "deconv_pyramid"
    order = 3.2  # paper section
    enable = {"MASKPLUS.DECONV_PYRAMID": True}  # switches it on
    keys = {"MASKPLUS.DECONV_PYRAMID": False, "MASKPLUS.DECONV_PYRAMID_DIM": 256}
    # inside the mask head's scope
    variables = [(rf"^maskrcnn/{SCOPE}/", "the deconvolutional pyramid (paper 3.2)", "MASKPLUS.DECONV_PYRAMID=True",
                  "MASKPLUS.DECONV_PYRAMID_DIM", False)]

    def __init__(self, width):
        self.width = width

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.MASKPLUS.DECONV_PYRAMID_DIM) if cfg.MASKPLUS.DECONV_PYRAMID else None

    def before_upsample(self, x):
        return deconv_pyramid_module(x, self.width)
