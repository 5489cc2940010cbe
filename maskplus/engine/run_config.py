"""The config a model was trained with, for predict.py: a run directory answers for itself.

``--load`` naming a run directory, or a checkpoint (or .npz) inside one, i.e. with the ``run.json``
train.py writes beside its checkpoints, starts from that run's config: every key its run.json
records except :data:`MACHINE_KEYS`. ``--preset`` and ``--config`` on the command line apply on
top, and :func:`describe` names them in one console line. Keys of :data:`EVALUATION_KEYS` given on
the command line are this evaluation's settings (where the data is, which split, test-time
options), named as such; any other key given is a change of the run's model, named with both values.

The functions here are pure, apart from :func:`find_run` and :func:`read_run` (files) and
:func:`configure` (the config it is given).
"""
import json
import math
import os

from maskplus.engine.run_dir import RUN_INFO, LogdirError, read_run_info

#: Keys that describe the machine a run trained on, not its model: never taken from run.json.
#: This machine's defaults apply unless the command line gives them.
MACHINE_KEYS = ("TRAINER", "TRAIN.NUM_GPUS", "TRAIN.INTRA_OP_THREADS", "TRAIN.PRECISION", "DATA.NUM_WORKERS")
#: Keys (or prefixes ending in ".") that describe an evaluation rather than a model: run.json's
#: values are the defaults (the run's own test protocol, e.g. its test image size), and values
#: given on the command line are named as this evaluation's settings.
EVALUATION_KEYS = ("DATA.BASEDIR", "DATA.VAL", "DATA.CUSTOM", "DATA.VALIDATE", "TEST.",
                   "PREPROC.TEST_SHORT_EDGE_SIZE", "PREPROC.MAX_SIZE", "RPN.TEST_", "MRCNN.ACCURATE_PASTE",
                   "TRAIN.BOUNDARY_AP")
#: Keys the config's finalisation derives from others (not settable).
DERIVED_KEYS = ("DATA.NUM_CLASS", "RPN.NUM_ANCHOR", "FPN.RESOLUTION_REQUIREMENT")
#: Keys this version removed (config.REMOVED_KEYS) that older run.json files record; they never
#: changed the model, so they are passed over without a note.
REMOVED_KEYS = ("TRAIN.STARTING_EPOCH",)


class RunConfigError(ValueError):
    """A run.json that cannot give the run's config; the message names the file."""


def _matches(key, keys):
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in keys)


def is_evaluation_key(key):
    """A key naming this evaluation or this machine, not the model."""
    return _matches(key, EVALUATION_KEYS) or _matches(key, MACHINE_KEYS)


def find_run(load):
    """The run directory whose run.json describes ``load`` (a directory holding run.json, or a
    checkpoint prefix, ``.index``/``.data`` file, ``checkpoint`` file or .npz beside one), else None."""
    if not load:
        return None
    path = os.path.normpath(os.path.expanduser(load))  # as the user wrote it, for the messages
    directory = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
    return directory if os.path.isfile(os.path.join(directory, RUN_INFO)) else None


def _run_record(directory):
    """A run directory's run.json as a dict holding the run's config, or the RunConfigError naming it."""
    path = os.path.join(directory, RUN_INFO)
    try:
        info = read_run_info(directory)
    except LogdirError:
        info = None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise RunConfigError(f"{path} is not a readable run record (JSON with the run's config), so the model "
                             f"trained in {directory} is unknown. Restore the file, or copy the checkpoint out of "
                             f"the directory and give its config: --preset/--config.")
    return info


def read_run(directory):
    """``(preset, recorded config tree)`` of a run directory's run.json."""
    info = _run_record(directory)
    return info.get("preset"), info["config"]


def recorded_plugins(load):
    """``(plug-in modules, run.json path)`` recorded by the run ``load`` belongs to (none for a
    run without plug-ins, a run recorded before they were, or a checkpoint outside a run)."""
    run = find_run(load)
    if not run:
        return [], None
    return list(_run_record(run).get("plugins", [])), os.path.join(run, RUN_INFO)


def _plain(value):
    """JSON's view of a value (tuples are lists), so recorded and current values compare equal."""
    return json.loads(json.dumps(value, default=str))


def flatten(tree, leaves, prefix=""):
    """``{dotted key: value}`` of a nested dict; a dict at a key of ``leaves`` (e.g. DATA.CUSTOM)
    is one value."""
    out = {}
    for key, value in tree.items():
        dotted = prefix + key
        if isinstance(value, dict) and dotted not in leaves:
            out.update(flatten(value, leaves, dotted + "."))
        else:
            out[dotted] = value
    return out


def _as_default_type(value, default):
    # finalisation turns some ints into floats (PREPROC.MAX_SIZE, rounded up to the padding)
    if (isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float)
            and math.isfinite(value) and value.is_integer()):
        return int(value)
    return value


def run_overrides(recorded, defaults):
    """The ``KEY=VALUE`` overrides that turn ``defaults`` (``{key: value}``, the unfinalised
    config) into the run's config, from ``recorded`` (run.json's nested config): every recorded
    key that differs from its default, except :data:`MACHINE_KEYS`, :data:`DERIVED_KEYS` and
    :data:`REMOVED_KEYS`.
    Returns (overrides, keys run.json records that this version does not know)."""
    overrides, unknown = [], []
    for key, value in flatten(recorded, set(defaults)).items():
        if _matches(key, MACHINE_KEYS) or key in DERIVED_KEYS or key in REMOVED_KEYS:
            continue
        if key not in defaults:
            unknown.append(key)
            continue
        value = _as_default_type(value, defaults[key])
        if _plain(value) != _plain(defaults[key]):
            overrides.append(f"{key}={value!r}")
    return overrides, unknown


def changes(before, after):
    """``[(key, before value, after value)]`` of the keys whose values differ, in ``after``'s order."""
    return [(k, before.get(k), v) for k, v in after.items() if _plain(before.get(k)) != _plain(v)]


def describe(load, run, preset, run_preset, applied, unknown, given):
    """The console line naming the model and where its config comes from.

    ``run``: the run directory or None; ``applied``: the overrides taken from its run.json;
    ``unknown``: run.json keys this version does not know; ``preset``: --preset;
    ``given``: :func:`changes` made by the command line (its --preset and --config)."""
    if run:
        head = (f"Model: the run in {run} (preset {run_preset or 'none'}, {len(applied)} config "
                f"change{'s' if len(applied) != 1 else ''} recorded in its {RUN_INFO})")
    else:
        head = f"Model: {load} (no {RUN_INFO} beside it: the default config"
        head += f", --preset {preset}" if preset else ""
        head += ")" if not given else ""
        if given:
            head += f" with {len(given)} change{'s' if len(given) != 1 else ''} from the command line)"
    parts = [head]
    model = [(k, a, b) for k, a, b in given if not is_evaluation_key(k)]
    evaluation = [(k, b) for k, _, b in given if is_evaluation_key(k)]
    if run and preset:
        parts.append(f"--preset {preset} on top")
    if run and model:
        parts.append("changed on the command line: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in model))
    elif not run and model:
        parts.append("model: " + ", ".join(f"{k}={b!r}" for k, _, b in model))
    if evaluation:
        parts.append("this evaluation: " + ", ".join(f"{k}={b!r}" for k, b in evaluation))
    if unknown:
        parts.append(f"{RUN_INFO} keys this version does not know, ignored: {', '.join(unknown)}")
    return "; ".join(parts) + "."


def configure(c, load, preset_overrides, preset, overrides):
    """Apply to the (unfrozen) config ``c``: the config of the run ``load`` belongs to (if any),
    then ``--preset`` (``preset_overrides(name)`` gives its list) and the ``--config`` overrides.
    Returns the :func:`describe` line. Raises ConfigError for a bad override, RunConfigError for
    an unreadable run.json."""
    defaults = dict(c.items_flat())
    run = find_run(load)
    applied, unknown, run_preset = [], [], None
    if run:
        run_preset, recorded = read_run(run)
        applied, unknown = run_overrides(recorded, defaults)
        c.update_args(applied)
    before = dict(c.items_flat())
    if preset:
        c.update_args(preset_overrides(preset))
    c.update_args(overrides)
    given = changes(before, dict(c.items_flat()))
    return describe(load, run, preset, run_preset, applied, unknown, given)
