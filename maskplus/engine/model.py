"""The model the config describes, its mask branch composed from the registered techniques.

The one place that puts the two together, and the one place the model's parameters are read from
the config: the model (``maskplus/modeling``) never imports the config nor the techniques
(``maskplus/techniques``); it gets its :class:`~maskplus.modeling.generalized_rcnn.RCNNParams`
and the built techniques as arguments.
"""
from config import config as cfg
from maskplus.modeling.generalized_rcnn import RCNNParams, model_for
from maskplus.techniques import registry


def mask_techniques():
    """The techniques ``cfg`` switches on, built from it, in the mask branch's order."""
    return registry.build(cfg)


def model_params():
    """The model's parameters, as ``cfg`` gives them."""
    return RCNNParams.from_config(cfg)


def build_model():
    """:class:`~maskplus.modeling.generalized_rcnn.ResNetFPNModel` or ``ResNetC4Model`` with the
    configured parameters and techniques."""
    return model_for(model_params(), mask_techniques())
