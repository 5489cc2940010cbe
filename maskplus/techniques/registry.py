"""The technique registry: every mask-branch technique registers itself here, and the model is built
from the registered techniques the config switches on.

A technique is a class with

* ``name``: its registry name (the module's name by convention);
* ``keys``: the config keys it owns, ``{"MASKPLUS.KEY": default}``. The five paper techniques' keys
  also stand in config.py (which must load without TensorFlow); :func:`add_config` adds a plug-in's;
* ``enable``: the overrides ``{"MASKPLUS.KEY": value}`` that switch it on (its default form);
* ``check(cfg)`` (optional): the list of errors its settings have, beyond config.py's own checks;
* ``from_config(cfg)``: the built technique with its arguments taken from ``cfg``, or ``None`` when
  the config leaves it off; its constructor takes the same arguments explicitly;
* one or more of the hooks below, which the mask branch
  (:func:`maskplus.modeling.model_mrcnn.build_mask_branch`) calls in this order:

  ``roi_features(x, inputs)``   the mask head's RoI features, before its first convolution
  ``before_upsample(x)``        the head's features just before its 2x up-sampling deconvolution
  ``logits(x)``                 the mask logits of all classes, after the head
  ``mask_loss(loss)``           the mask loss (training)
  ``extra_losses(inputs)``      further losses, a list (training)
  ``schedules()``               {graph variable: [[step at batch 8, value], ...]}, set while training

  ``inputs`` is a :class:`~maskplus.modeling.model_mrcnn.MaskBranchInputs`.

* ``order``: a number; techniques that fill the same hook are applied in ascending order (the
  paper's section number for the five: 3.1 contextual fusion ... 3.5 biased training).
* ``variables`` (optional): who owns which of the model's variables, for the messages of a refused
  checkpoint (:mod:`maskplus.engine.strict_load`): ``[(regex of their names, what, the switch
  "KEY=VALUE" that adds them, the keys that set their shapes, whether the training graph alone has
  them)]``. Without it, the technique's variables are those under a scope named ``name``.

Every module of ``maskplus/techniques`` is imported (so registered) the first time the registry is
read; a technique elsewhere (a plug-in) registers when its module is imported.
"""
import importlib
import pkgutil
import re

HOOKS = ("roi_features", "before_upsample", "logits", "mask_loss", "extra_losses", "schedules")

_REGISTRY = {}


def register(technique):
    """Class decorator: add ``technique`` to the registry (its name must be new)."""
    hooks = [h for h in HOOKS if callable(getattr(technique, h, None))]
    if not hooks:
        raise ValueError(f"Technique '{technique.name}' fills none of the hooks {', '.join(HOOKS)}.")
    if technique.name in _REGISTRY and _REGISTRY[technique.name] is not technique:
        raise ValueError(f"A technique named '{technique.name}' is already registered "
                         f"({_REGISTRY[technique.name].__module__}).")
    _REGISTRY[technique.name] = technique
    return technique


def unregister(name):
    """Remove a technique (a test's plug-in, when the test is over)."""
    _REGISTRY.pop(name, None)


def registered():
    """The registered technique classes, in the mask branch's order (``order``, then ``name``)."""
    _import_package_techniques()
    return sorted(_REGISTRY.values(), key=lambda t: (t.order, t.name))


def _import_package_techniques():
    package = importlib.import_module("maskplus.techniques")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "registry":
            importlib.import_module(f"maskplus.techniques.{module.name}")


def plugin_modules():
    """The modules outside this package that registered techniques, sorted: what a run records, so
    that its evaluation imports them again."""
    return sorted({t.__module__ for t in registered() if not t.__module__.startswith(f"{__package__}.")})


def hooks_of(technique):
    """The hooks ``technique`` fills, in the mask branch's order."""
    return [h for h in HOOKS if callable(getattr(technique, h, None))]


def add_config(cfg):
    """Add every registered technique's keys that ``cfg`` lacks, at their defaults (a plug-in's
    section, as Detectron2's add_*_config). Call it before the config is overridden and frozen."""
    for technique in registered():
        for key, default in technique.keys.items():
            if not _has(cfg, key):
                *parents, leaf = key.split(".")
                node = cfg
                for part in parents:
                    node = getattr(node, part)  # an unfrozen config creates a missing section
                setattr(node, leaf, default)


def _has(cfg, key):
    try:
        cfg.get(key)
    except ValueError:  # config.ConfigError: an unknown key
        return False
    return True


def variable_owners():
    """Every registered technique's ``variables`` entries, in the mask branch's order; a technique
    without them owns the variables under a scope named after it."""
    out = []
    for t in registered():
        if hasattr(t, "variables"):
            out += t.variables
        else:
            switch = " ".join(f"{k}={v}" for k, v in t.enable.items())
            sizes = ", ".join(k for k in t.keys if k not in t.enable) or "-"
            out.append((rf"(^|/){re.escape(t.name)}/", f"the technique {t.name} ({t.__module__})", switch, sizes, False))
    return out


def config_errors(cfg):
    """The errors the registered techniques' own checks find in ``cfg``."""
    return [e for t in registered() if hasattr(t, "check") for e in t.check(cfg)]


def build(cfg):
    """The techniques ``cfg`` switches on, built, in the mask branch's order. Raises ValueError with the
    registered techniques' config errors."""
    errors = config_errors(cfg)
    if errors:
        raise ValueError(" ".join(errors))
    built = [t.from_config(cfg) for t in registered()]
    return [t for t in built if t is not None]


def training_schedules(techniques):
    """{graph variable: [[step at batch 8, value], ...]} of the built ``techniques``."""
    out = {}
    for t in techniques:
        if callable(getattr(t, "schedules", None)):
            out.update(t.schedules())
    return out
