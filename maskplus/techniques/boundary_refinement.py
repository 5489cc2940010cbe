"""Improved boundary refinement -- MaskPlus section 3.3 (ablation: section 4.5, Table 3).

Both variants refine the mask logits S as a residual, S + R(S) (Peng et al., "Large Kernel
Matters", 2017, the paper's reference [22]).

* ``original``: Peng et al.'s boundary-refinement block, R = conv3x3 -> ReLU -> conv3x3.
* ``improved`` (4.5): "each convolutional module consists of six layers in order: BatchNorm,
  PReLU, Conv (filters = 16), BatchNorm, PReLU, and Conv (filters = 4). The later modules will
  concatenate the input features from all previous modules as its own input features. The
  concatenation will be repeated for 4 modules."

Our interpretations, where the paper is vague:
* R acts on the 28 x 28 logits of all K classes (the mask head's output), before a class is
  selected; its output has K channels again.
* Kernel sizes: the 16-then-4 pattern is DenseNet-BC's bottleneck with growth rate 4, so the
  first conv of a module is 1x1 (16 filters) and the second 3x3 (4 filters). The original block
  uses 3x3 kernels with K filters, as in Peng et al.
* Dense connectivity as in DenseNet: module i sees concat(S, out_1, ..., out_{i-1}); a final
  1x1 conv maps concat(S, out_1..out_4) back to K channels to form R(S).
* BatchNorm is ordinary training BN over the RoIs of a tower (moving averages at inference);
  PReLU has one learnt slope per layer (Tensorpack's PReLU).
* Module count and widths: ``num_modules`` (``MASKPLUS.BOUNDARY_REFINEMENT_MODULES``, 4) and
  ``growth`` (``MASKPLUS.BOUNDARY_REFINEMENT_GROWTH``, [16, 4]).

Variables: ``boundary_refinement/...``.
"""
from tensorpack.models import BatchNorm, Conv2D, PReLU
from tensorpack.tfutils import argscope

from maskplus.compat import tf, tfv1
from maskplus.modeling.layers import msra_fan_out
from maskplus.techniques.registry import register

SCOPE = "boundary_refinement"


def _original_residual(logits):
    channels = logits.shape.as_list()[1]
    x = Conv2D("conv0", logits, channels, 3, activation=tf.nn.relu)
    return Conv2D("conv1", x, channels, 3)


def _dense_module(x, widths):
    for j, (width, kernel) in enumerate(zip(widths, (1, 3))):
        x = BatchNorm(f"bn{j}", x)
        x = PReLU(f"prelu{j}", x, init=0.25)
        x = Conv2D(f"conv{j}", x, width, kernel)
    return x


def _improved_residual(logits, num_modules, growth):
    channels = logits.shape.as_list()[1]
    features = [logits]
    for i in range(num_modules):
        with tfv1.variable_scope(f"module{i}"):
            features.append(_dense_module(tf.concat(features, axis=1), growth))
    return Conv2D("fuse", tf.concat(features, axis=1), channels, 1)


def boundary_residual(logits, mode, num_modules, growth):
    """R(S) for logits S (N x K x h x w); ``num_modules`` and ``growth`` shape the improved block."""
    if mode not in ("original", "improved"):
        raise ValueError(f"Boundary refinement mode must be 'original' or 'improved', got '{mode}'.")
    with tfv1.variable_scope(SCOPE), \
            argscope([Conv2D, BatchNorm], data_format="channels_first"), \
            argscope(Conv2D, kernel_initializer=msra_fan_out()):
        if mode == "original":
            return _original_residual(logits)
        return _improved_residual(logits, num_modules, growth)


def refine_boundary(logits, mode, num_modules, growth):
    """S + R(S).

    Args:
        logits: S, the mask logits N x K x h x w of all K classes.
        mode: "original" (Peng et al.'s block) or "improved" (the paper's dense modules).
        num_modules: dense modules of the improved block.
        growth: the two conv widths of a dense module (the improved block's [16, 4]).
    """
    return tf.add(logits, boundary_residual(logits, mode, num_modules, growth), name="refined_mask_logits")


@register
class BoundaryRefinement:
    """Hook ``logits``: S + R(S) on the mask logits of all classes."""
    name = "boundary_refinement"
    order = 3.3  # paper section
    enable = {"MASKPLUS.BOUNDARY_REFINEMENT": "improved"}  # switches it on
    keys = {"MASKPLUS.BOUNDARY_REFINEMENT": "none", "MASKPLUS.BOUNDARY_REFINEMENT_MODULES": 4,
            "MASKPLUS.BOUNDARY_REFINEMENT_GROWTH": [16, 4]}
    variables = [(rf"^{SCOPE}/conv\d+/", "boundary refinement, original (paper 3.3)",
                  "MASKPLUS.BOUNDARY_REFINEMENT=original", "the number of classes", False),
                 (rf"^{SCOPE}/(module\d+|fuse)/", "boundary refinement, improved (paper 3.3)",
                  "MASKPLUS.BOUNDARY_REFINEMENT=improved",
                  "MASKPLUS.BOUNDARY_REFINEMENT_MODULES, MASKPLUS.BOUNDARY_REFINEMENT_GROWTH", False)]

    def __init__(self, mode, num_modules, growth):
        self.mode, self.num_modules, self.growth = mode, num_modules, list(growth)

    @classmethod
    def from_config(cls, cfg):
        mp = cfg.MASKPLUS
        if mp.BOUNDARY_REFINEMENT == "none":
            return None
        return cls(mp.BOUNDARY_REFINEMENT, mp.BOUNDARY_REFINEMENT_MODULES, mp.BOUNDARY_REFINEMENT_GROWTH)

    def logits(self, x):
        return refine_boundary(x, self.mode, self.num_modules, self.growth)
