"""The five MaskPlus techniques (paper sections 3.1-3.5), one module each.

Each module is a set of graph builders that take everything they need as arguments: they import
TensorFlow, Tensorpack and the config-free modeling primitives (``maskplus.modeling.layers``,
``model_box``, ``mask_ops``), never the config or the model. The mask-branch builder
(``maskplus.modeling.model_mrcnn``) reads ``cfg.MASKPLUS`` and hands each technique its arguments.
"""
from maskplus import compat  # noqa: F401  (its shims before any module here imports TensorFlow)
