"""The MaskPlus techniques (paper sections 3.1-3.5), one module each, each registering itself in
:mod:`maskplus.techniques.registry` (which imports every module of this package when first asked).

Each module is a set of graph builders that take everything they need as arguments, plus the
registered class that reads them from the config (``from_config(cfg)``, ``cfg`` an argument) and
fills its hooks of the mask branch. The modules import TensorFlow, Tensorpack and the config-free
modeling primitives (``maskplus.modeling.layers``, ``model_box``, ``mask_ops``), never the config or
the model: the model gets the built techniques as an argument (:mod:`maskplus.engine.model`).
"""
from maskplus import compat  # noqa: F401  (its shims before any module here imports TensorFlow)
