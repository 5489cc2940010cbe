"""Strict loads for inference and export: the checkpoint must hold exactly the model's variables.

A checkpoint trained with another configuration loads only in part into the graph of this one:
the variables of a technique it was trained with go unused, or those this graph has keep their
random initialisation, and the AP measured is that of a model nobody trained. Inference and export
therefore refuse such a checkpoint before any image is read, naming the variables by scope, the
technique or head they belong to (:func:`owners`, the one map from variable scopes to techniques,
heads and config keys) and what to pass. Training state (optimizer slots, step, learning rate,
loss scale, other towers' copies) and the variables of training-only branches are not the model's.
``predict.py --allow-partial-load`` loads what fits instead, with the load report of training's
``--load``.
"""
import re
from collections import namedtuple

from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.utils import logger

from maskplus.engine.checkpoint import _LOSS_SCALE, _TOWER, _TRAINING_STATE, CheckpointError, CheckpointInit
from maskplus.techniques import registry

class CheckpointRefused(CheckpointError):
    """A readable checkpoint that does not hold exactly the model the config builds."""


#: Who adds the variables whose names match ``pattern``: ``what`` (a technique or head), ``config``
#: (the ``KEY=VALUE`` that adds them), ``sizes`` (the keys that set their shapes), and whether they
#: exist in the training graph only. The first match wins.
Owner = namedtuple("Owner", ["pattern", "what", "config", "sizes", "training_only"])

#: The heads and the backbone; the techniques' entries come first, from the registry (:func:`owners`).
HEAD_OWNERS = [Owner(re.compile(p), *rest) for p, *rest in [
    # the heads and the backbone (tests/fixtures/reference: the model zoo's variable lists)
    (r"^cascade_rcnn_stage\d/", "the Cascade R-CNN box heads", "FPN.CASCADE=True", "FPN.FRCNN_FC_HEAD_DIM", False),
    (r"^fastrcnn/fc[67]/", "the 2fc box head", "FPN.FRCNN_HEAD_FUNC=fastrcnn_2fc_head", "FPN.FRCNN_FC_HEAD_DIM",
     False),
    (r"^fastrcnn/(conv\d+|gn\d+|fc)/", "a 4conv1fc box head",
     "FPN.FRCNN_HEAD_FUNC=fastrcnn_4conv1fc_head (or fastrcnn_4conv1fc_gn_head)",
     "FPN.FRCNN_CONV_HEAD_DIM, FPN.FRCNN_FC_HEAD_DIM", False),
    (r"^fastrcnn/outputs/", "the FPN box head's outputs", "MODE_FPN=True FPN.CASCADE=False",
     "the number of classes", False),
    (r"^fastrcnn/(box|class)/", "the C4 box head's outputs", "MODE_FPN=False", "the number of classes", False),
    (r"^maskrcnn/gn\d+/", "the GroupNorm mask head", "FPN.MRCNN_HEAD_FUNC=maskrcnn_up4conv_gn_head",
     "MRCNN.HEAD_DIM", False),
    (r"^maskrcnn/fcn\d+/", "the FPN mask head's convolutions", "MODE_FPN=True", "MRCNN.HEAD_DIM", False),
    (r"^maskrcnn/", "the mask head", "MODE_MASK=True", "MRCNN.HEAD_DIM and the number of classes", False),
    (r"^fpn/gn_", "the FPN's GroupNorm", "FPN.NORM=GN", "FPN.NUM_CHANNEL", False),
    (r"^fpn/", "the FPN", "MODE_FPN=True", "FPN.NUM_CHANNEL", False),
    (r"^rpn/", "the RPN", "MODE_FPN (C4 and FPN RPNs differ)", "RPN.HEAD_DIM or FPN.NUM_CHANNEL, RPN.ANCHOR_*",
     False),
    (r"^(conv0|group\d+)/", "the ResNet backbone", "BACKBONE.RESNET_NUM_BLOCKS and BACKBONE.NORM",
     "BACKBONE.RESNET_NUM_BLOCKS", False),
]]
UNKNOWN_OWNER = Owner(None, "no technique or head of this version", "?", "?", False)


def owners():
    """Every :class:`Owner`, in the order they are tried: each registered technique's
    (:func:`~maskplus.techniques.registry.variable_owners`; the deconvolutional pyramid's lie inside
    the mask head's scope), then the heads' and the backbone's."""
    return [Owner(re.compile(p), *rest) for p, *rest in registry.variable_owners()] + HEAD_OWNERS


def owner_of(name, candidates=None):
    """The :class:`Owner` entry of a variable name (no ``:0``), among ``candidates`` (default :func:`owners`)."""
    return next((o for o in candidates or owners() if o.pattern.search(name)), UNKNOWN_OWNER)


def is_training_state(name):
    """Optimizer slots, step, learning rate, alpha, loss scale, other towers' copies."""
    return bool(_TRAINING_STATE.search(name) or _LOSS_SCALE.match(name) or _TOWER.match(name))


def _scope(owner, names):
    """The scope that names a group: the common part of what its owner's pattern matched."""
    matched = [owner.pattern.search(n).group(0) if owner.pattern else n for n in names]
    parts = [m.split("/")[:-1] for m in matched]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common) + "/" if common else "(several scopes)"


def group_by_owner(names):
    """``[(owner, [names])]`` in :func:`owners` order (unknown owners last)."""
    candidates = owners()
    groups = {}
    for name in sorted(names):
        groups.setdefault(owner_of(name, candidates), []).append(name)
    order = {o: i for i, o in enumerate(candidates)}
    return sorted(groups.items(), key=lambda g: order.get(g[0], len(candidates)))


def _count(names):
    return f"{len(names)} variable{'s' if len(names) != 1 else ''}"


def _switch_configs():
    """The ``KEY=VALUE`` switches of the techniques whose variables the inference graph holds."""
    return {o.config for o in owners() if o.config.startswith("MASKPLUS.") and not o.training_only}


def technique_switches(values):
    """The switches of :func:`_switch_configs` on in ``values`` ({key: value}, e.g. a config's
    ``items_flat()`` or a preset's overrides)."""
    return {c for c in _switch_configs()
            if all(str(values.get(k, "")) == v for k, v in (pair.split("=", 1) for pair in _SWITCH_PAIRS.split(c)))}


_SWITCH_PAIRS = re.compile(r"\s+(?=[A-Z][A-Z_0-9]*(?:\.[A-Z_0-9]+)+=)")  # "A.B=1 A.C=[1, 2]": two switches


def presets_with(switches):
    """The paper presets whose inference-visible techniques are exactly ``switches``."""
    from maskplus.presets import PRESETS
    found = []
    for name, overrides in PRESETS.items():
        values = dict(o.split("=", 1) for o in overrides)
        if technique_switches(values) == set(switches):
            found.append(name)
    return found


def refusal_message(path, extra, missing, skipped, model_switches):
    """What is wrong with loading ``path`` into this model and what to pass instead.

    ``extra``: the checkpoint's model variables this graph lacks; ``missing``: this graph's
    variables the checkpoint lacks; ``skipped``: ``(name, file shape, graph shape)`` of the others;
    ``model_switches``: :func:`technique_switches` of this model's config."""
    lines = [f"The checkpoint '{path}' does not hold the model this config builds, so it is not loaded "
             f"(what fits would give the AP of a model nobody trained):"]
    trained_with, lacking = set(), set()
    if extra:
        lines.append("  in the checkpoint, not in this model:")
        for owner, names in group_by_owner(extra):
            lines.append(f"    {_scope(owner, names)}: {_count(names)} of {owner.what}: this checkpoint was "
                         f"trained with {owner.config}")
            trained_with.add(owner.config)
    if missing:
        lines.append("  in this model, not in the checkpoint:")
        for owner, names in group_by_owner(missing):
            lines.append(f"    {_scope(owner, names)}: {_count(names)} of {owner.what}: this config has "
                         f"{owner.config}, which the checkpoint was not trained with")
            lacking.add(owner.config)
    if skipped:
        lines.append("  of another shape:")
        for owner, names in group_by_owner([s[0] for s in skipped]):
            name, got, want = next(s for s in skipped if s[0] == names[0])
            lines.append(f"    {_scope(owner, names)}: {_count(names)} of {owner.what} (e.g. {name}: checkpoint "
                         f"{list(got)}, this model {list(want)}); their shapes are set by {owner.sizes}")
    switch_configs = _switch_configs()
    to_pass = sorted(c for c in trained_with if c in switch_configs) + sorted(
        _off(c) for c in lacking if c in switch_configs and c not in trained_with)
    hint = ""
    if to_pass:
        switches = (set(model_switches) - lacking) | (trained_with & switch_configs)
        presets = presets_with(switches)
        hint = f" (here --config {' '.join(to_pass)}" + (
            f"; presets with these techniques: {', '.join(presets[:4])})" if presets else ")")
    lines.append(f"Load its run directory (--load RUN_DIR: the run.json there gives the config it was trained with), "
                 f"or pass that config with --preset/--config{hint}. --allow-partial-load loads what fits and "
                 f"leaves the rest at its fresh initialisation.")
    return "\n".join(lines)


def _off(switch):
    key, value = switch.split("=", 1)
    return f"{key}={'False' if value == 'True' else 'none'}"


def check_complete(report, model_switches=()):
    """Raise :class:`CheckpointError` unless the load of :class:`LoadReport` ``report`` restored
    every variable of the graph and used every model variable of the file (training state and
    training-only branches aside), each with the graph's shape."""
    extra = [n for n in report.unused if not is_training_state(n) and not owner_of(n).training_only]
    if extra or report.missing or report.skipped:
        raise CheckpointRefused(refusal_message(report.path, extra, report.missing, report.skipped, model_switches))


def checkpoint_init(path, strict=True, *, model_switches):
    """The session initialiser of inference and export: strict (:func:`check_complete`; variables
    of another shape are gathered into its message, which names ``model_switches``, the
    :func:`technique_switches` of the model's config), or with ``strict=False`` the plain load
    that reports what was missing or unused."""
    if not strict:
        return CheckpointInit(path)
    switches = set(model_switches)

    def check(report):
        check_complete(report, switches)
        # complete: what the file holds besides the model is training state, not worth listing
        if report.unused:
            logger.info(f"'{path}' also holds {len(report.unused)} entries of training state or training-only "
                        f"branches (optimizer slots, step, ...), which inference does not use.")
            report.unused = []
    return CheckpointInit(path, ignore_mismatch=True, check=check)
