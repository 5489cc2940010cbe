"""The model the config describes, its mask branch composed from the registered techniques.

The one place that puts the two together: the model (``maskplus/modeling``) never imports the
techniques (``maskplus/techniques``); it gets them built, as an argument.
"""
from config import config as cfg
from maskplus.modeling.generalized_rcnn import model_for_config
from maskplus.techniques import registry


def mask_techniques():
    """The techniques ``cfg`` switches on, built from it, in the mask branch's order."""
    return registry.build(cfg)


def build_model():
    """:class:`~maskplus.modeling.generalized_rcnn.ResNetFPNModel` or ``ResNetC4Model`` with the
    configured techniques."""
    return model_for_config(mask_techniques())
