"""Contextual fusion -- MaskPlus section 3.1 (ablation: section 4.3, Table 1).

The paper: "we take the features that come from the last layer of FPN backbone and apply only
one full-image-size RoI to these features at a newly created RoIAlign layer. After several
convolutional layers, the outcomes on this new branch will be added to the RoIAlign features
from the original mask branch. The newly created RoIAlign layer and the old one have the same
configuration and size of feature outputs."

Our interpretations, where the paper is vague:
* "The last layer of FPN backbone" has two readings. (a) P2 -- our default: the last output of
  the top-down path, and the finest level. (b) P5: the top level, and the one where the mask
  branch's own level rule (``4 + log2(sqrt(area) / 224)``, clamped to 2-5) puts a full-image box
  of any COCO-sized image. ``MASKPLUS.CONTEXT_FUSION_LEVEL`` picks the level (2-5); the presets
  ``context-fusion-*-p5`` run Table 1 with reading (b). The mask-branch builder hands this module
  that level's feature map and stride.
* The full-image RoI is ``[0, 0, w, h]`` of the real image, not of the padding added to reach a
  multiple of 32, pooled at 14 x 14 like the mask branch's RoIAlign.
* "Several convolutional layers" are 3x3 convolutions, each followed by ReLU, with the widths of
  ``MASKPLUS.CONTEXT_FUSION_DIMS`` (Table 1: ``256-256``, ``256-256-256``, ``720-512-512-256``).
  The last width equals the RoI feature width so the sum is defined.
* The 1 x C x 14 x 14 context is added to every RoI's features (broadcast over RoIs), before the
  mask head's first convolution, in training and inference alike.

Variables: ``context_fusion/conv{i}/{W,b}``. Names: the module, its variable scope and the config
keys ``MASKPLUS.CONTEXT_FUSION*`` share one spelling, the one checkpoints and command lines carry;
"contextual fusion" is the paper's name for the technique.
"""
from tensorpack.models import Conv2D
from tensorpack.tfutils import argscope

from maskplus.compat import tf, tfv1
from maskplus.modeling.layers import msra_fan_out
from maskplus.modeling.model_box import roi_align
from maskplus.techniques.registry import register

SCOPE = "context_fusion"


def global_context(featuremap, stride, image_shape2d, dims, resolution):
    """The full-image RoI of one FPN level (NCHW ``featuremap`` at ``stride`` pixels), through the
    3x3 conv + ReLU stack of widths ``dims``: 1 x dims[-1] x resolution x resolution."""
    hw = tf.cast(image_shape2d, tf.float32)
    full_image_box = tf.stack([[0.0, 0.0, hw[1], hw[0]]]) * (1.0 / stride)
    with tfv1.variable_scope(SCOPE), tf.name_scope(SCOPE):
        x = roi_align(featuremap, full_image_box, resolution)
        with argscope(Conv2D, data_format="channels_first", activation=tf.nn.relu, kernel_initializer=msra_fan_out()):
            for i, width in enumerate(dims):
                x = Conv2D(f"conv{i}", x, width, 3)
    return x


def fuse_context(roi_features, featuremap, stride, image_shape2d, dims):
    """RoI features N x C x s x s plus the global context of ``featuremap`` (broadcast over the N RoIs).

    Args:
        roi_features: the mask head's input, N x C x s x s (C = ``dims[-1]``).
        featuremap, stride: the FPN level the full-image RoI is pooled from, and its stride.
        image_shape2d: [h, w] of the real (unpadded) image.
        dims: widths of the 3x3 convolutions.
    """
    context = global_context(featuremap, stride, image_shape2d, dims, resolution=roi_features.shape.as_list()[-1])
    return tf.add(roi_features, context, name="context_fused_roi_features")


@register
class ContextFusion:
    """Hook ``roi_features``: the global context of one FPN level added to every RoI's features."""
    name = "context_fusion"
    order = 3.1  # paper section
    enable = {"MASKPLUS.CONTEXT_FUSION": True}  # switches it on
    keys = {"MASKPLUS.CONTEXT_FUSION": False, "MASKPLUS.CONTEXT_FUSION_LEVEL": 2,
            "MASKPLUS.CONTEXT_FUSION_DIMS": [256, 256]}
    variables = [(rf"^{SCOPE}/", "contextual fusion (paper 3.1)", "MASKPLUS.CONTEXT_FUSION=True",
                  "MASKPLUS.CONTEXT_FUSION_DIMS", False)]

    def __init__(self, level, stride, dims):
        """``level``: the FPN level k of Pk (2-5), ``stride`` its stride, ``dims`` the conv widths."""
        self.level, self.stride, self.dims = level, stride, list(dims)

    @classmethod
    def from_config(cls, cfg):
        mp = cfg.MASKPLUS
        if not mp.CONTEXT_FUSION:
            return None
        return cls(mp.CONTEXT_FUSION_LEVEL, cfg.FPN.ANCHOR_STRIDES[mp.CONTEXT_FUSION_LEVEL - 2], mp.CONTEXT_FUSION_DIMS)

    def roi_features(self, x, inputs):
        return fuse_context(x, inputs.features[self.level - 2], self.stride, inputs.image_shape2d, self.dims)
