"""MaskPlus: Mask R-CNN (ResNet-FPN) on Tensorpack with the mask-branch techniques of Xu, Lan & Zhu."""
from maskplus import compat  # noqa: F401  (must run before anything imports TensorFlow)

__version__ = "0.1.0"
