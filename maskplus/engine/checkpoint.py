"""Loading and exporting weights: Tensorpack ``.npz`` files (model zoo or ours) and TF checkpoints.

Every load prints a report: how many variables were restored, which graph variables the file
lacks (they keep their fresh initialisation), which file entries were unused, and, for a variable
whose shape differs, either a clear error or (``ignore_mismatch``, as the example's ``--load``
for fine-tuning) a skip listed with both shapes. Exports write model-zoo style ``.npz`` files: the model's
variables only (BN moving averages included), keys with the ``:0`` suffix, written atomically.
"""
import os
import re

import numpy as np
from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.tfutils.sessinit import SessionInit
from tensorpack.utils import logger

from maskplus import atomic
from maskplus.console import one_line
from maskplus.engine import checkpoint_integrity as integrity


# Variables that only a training checkpoint has; never part of a model file.
_TRAINING_STATE = re.compile(r"(^|/)(global_step|learning_rate|mask_loss_alpha)$|/(Momentum|AccumGrad)(_\d+)?$"
                             r"|^AccumGrad/|(^|/)counter$")
# The loss scale of float16 training (maskplus/modeling/loss_scale.py): training state, but not in
# _TRAINING_STATE so that a load lacking it (an fp32 checkpoint into an fp16 run) lists it as fresh.
_LOSS_SCALE = re.compile(r"^LossScale/")
_TOWER = re.compile(r"^tower\d+/")
# Variables whose shape depends on the number of classes.
_CLASS_DEPENDENT = ("fastrcnn/outputs/class/", "fastrcnn/outputs/box/", "maskrcnn/conv/")


class CheckpointError(ValueError):
    """A weights file is missing, unreadable, or does not fit the graph; the message says which."""


def _strip(name):
    return name[:-2] if name.endswith(":0") else name


def resolve_checkpoint(path):
    """A user path -> ('npz', file) or ('tf', prefix). Accepts a directory holding a TF checkpoint."""
    if not path:
        raise CheckpointError("No checkpoint path given.")
    path = os.path.expanduser(path)
    if path.endswith(".npz"):
        if not os.path.isfile(path):
            raise CheckpointError(f"Checkpoint file '{path}' does not exist.")
        return "npz", path
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(_no_latest_checkpoint(path))
        return "tf", latest
    if os.path.basename(path) == "checkpoint" and os.path.isfile(path):
        return resolve_checkpoint(os.path.dirname(path) or ".")
    prefix = path[:-len(".index")] if path.endswith(".index") else path
    prefix = re.sub(r"\.data-\d+-of-\d+$", "", prefix)
    if os.path.isfile(prefix + ".index"):
        return "tf", prefix
    if integrity.data_files(prefix):
        raise CheckpointError(_damaged(prefix, integrity.tf_checkpoint_damage(prefix)))
    if os.path.exists(path):
        raise CheckpointError(f"'{path}' is neither a .npz file nor a TensorFlow checkpoint.")
    raise CheckpointError(f"Checkpoint '{path}' does not exist.")


def verify_checkpoint(path):
    """:func:`resolve_checkpoint`, and the file checked complete and readable (cheaply: a TF
    checkpoint's index and file sizes, a .npz file's zip directory and array headers); a
    damaged file is a CheckpointError naming it and what is wrong."""
    kind, resolved = resolve_checkpoint(path)
    if kind == "npz":
        damage = integrity.npz_damage(resolved)
        if damage:
            raise CheckpointError(f"'{resolved}' is not a readable .npz weights file: {damage}.")
    else:
        damage = integrity.tf_checkpoint_damage(resolved)
        if damage:
            raise CheckpointError(_damaged(resolved, damage))
    return kind, resolved


def _damaged(prefix, damage):
    """The message for the damaged TF checkpoint ``prefix``, naming the newest intact one beside it."""
    intact = integrity.newest_intact(os.path.dirname(os.path.abspath(prefix)), besides=prefix)
    other = f" The newest intact checkpoint beside it is {intact}." if intact else ""
    return f"Checkpoint '{prefix}' is damaged: {damage}.{other}"


def _no_latest_checkpoint(directory):
    """Why a directory gives no latest checkpoint: no state file, or one naming a gone file."""
    named, unreadable = integrity.state_file_latest(directory)
    found = sorted(integrity.checkpoints_in(directory).items(), reverse=True)
    there = f" It holds {', '.join(os.path.basename(p) for _, p in found[:5])}: give one as --load " \
            f"{found[0][1]}." if found else ""
    if unreadable:
        return f"Directory '{directory}': {unreadable}.{there}"
    if named:
        return f"Directory '{directory}': its checkpoint state file names {named}, which is gone.{there}"
    return f"Directory '{directory}' holds no TensorFlow checkpoint (no 'checkpoint' index file).{there}"


def read_checkpoint(path):
    """{variable name (no ':0'): numpy array} of a ``.npz`` or TF checkpoint."""
    kind, resolved = verify_checkpoint(path)
    try:
        if kind == "npz":
            return {_strip(k): v for k, v in integrity.read_npz_arrays(resolved).items()}
        return integrity.read_tf_arrays(resolved)
    except ValueError as e:
        what = ".npz weights file" if kind == "npz" else "TensorFlow checkpoint"
        raise CheckpointError(f"'{resolved}' is not a readable {what}: {e}.") from None


def checkpoint_global_step(path):
    """The ``global_step`` stored in a TF checkpoint (0 for ``.npz`` files or when absent)."""
    kind, resolved = verify_checkpoint(path)
    if kind != "tf":
        return 0
    reader = tfv1.train.NewCheckpointReader(resolved)
    if not reader.has_tensor("global_step"):
        return 0
    try:
        return int(reader.get_tensor("global_step"))
    except Exception as e:  # noqa: BLE001  (a checksum mismatch)
        raise CheckpointError(f"'{resolved}' is not a readable TensorFlow checkpoint: corrupt: its global_step "
                              f"cannot be read ({one_line(e)}).") from None


class LoadReport:
    """What a load did; ``str()`` is the human-readable report (counts, and at most
    ``MAX_NAMES`` names per category), :meth:`text` with every name. ``skipped`` holds
    ``(name, file shape, graph shape)`` of the variables left fresh for a shape mismatch."""

    MAX_NAMES = 10

    def __init__(self, path, restored, missing, unused, skipped=()):
        self.path, self.restored, self.missing, self.unused = path, restored, missing, unused
        self.skipped = list(skipped)

    def text(self, max_names=None, full_list=None):
        def names(items):
            shown = items if max_names is None else items[:max_names]
            more = len(items) - len(shown)
            tail = [f"... and {more} more" + (f" (all in {full_list})" if full_list else "")] if more else []
            return "\n    " + "\n    ".join(shown + tail)

        lines = [f"Loaded {len(self.restored)} variables from '{self.path}'."]
        if self.skipped:
            lines.append(f"{len(self.skipped)} variables have another shape in the file and keep their fresh "
                         f"initialisation:" + names([f"{name}: file {list(got)} vs graph {list(want)}"
                                                     for name, got, want in self.skipped]))
        if self.missing:
            lines.append(f"{len(self.missing)} graph variables are not in the file and keep their fresh "
                         f"initialisation:" + names(self.missing))
        if self.unused:
            lines.append(f"{len(self.unused)} file entries are not used by this graph:" + names(self.unused))
        return "\n".join(lines)

    def __str__(self):
        return self.text(self.MAX_NAMES)

    def log(self):
        """Log the short report; with a log directory, the full one goes to load_report.txt there.
        When scripts/demo.py sends this output to its log (a quiet console), the log gets it all."""
        from maskplus import console
        directory = logger.get_logger_dir()
        if console.stream() is not None and not directory:
            logger.info(self.text())
        elif directory and max(len(self.missing), len(self.unused), len(self.skipped)) > self.MAX_NAMES:
            full_list = os.path.join(directory, "load_report.txt")
            with open(full_list, "a") as f:
                f.write(self.text() + "\n")
            logger.info(self.text(self.MAX_NAMES, full_list))
        else:
            logger.info(str(self))


def _graph_variables():
    """Variables worth restoring, by name: all global variables except other towers' copies."""
    return {v.op.name: v for v in tfv1.global_variables() if not _TOWER.match(v.op.name)}


def match_checkpoint(values, variables, path, ignore_mismatch=False):
    """Pair file entries with graph variables by name.

    A value with the variable's number of elements but another shape is reshaped (as Tensorpack
    does); any other shape mismatch raises, or with ``ignore_mismatch`` is skipped and reported.
    Returns (pairs [(variable, value)], LoadReport).
    """
    pairs, mismatched = [], []
    for name, var in sorted(variables.items()):
        if name in values:
            want = tuple(var.shape.as_list())
            value = values[name]
            got = tuple(np.shape(value))
            if want == got:
                pairs.append((var, value))
            elif np.prod(want) == np.prod(got):
                pairs.append((var, np.reshape(value, want)))
            else:
                mismatched.append((name, got, want))
    if mismatched and not ignore_mismatch:
        raise CheckpointError(_mismatch_message(path, mismatched))
    missing = sorted(n for n in variables if n not in values and not _TRAINING_STATE.search(n))
    unused = sorted(n for n in values if n not in variables)
    return pairs, LoadReport(path, [v.op.name for v, _ in pairs], missing, unused, mismatched)


def _mismatch_message(path, mismatched):
    lines = [f"Shape mismatch between '{path}' and the graph for {len(mismatched)} variable(s):"]
    lines += [f"  {name}: file {list(got)} vs graph {list(want)}" for name, got, want in mismatched]
    if all(name.startswith(_CLASS_DEPENDENT) for name, _, _ in mismatched):
        counts = {name: (got[-1], want[-1]) for name, got, want in mismatched}
        if "fastrcnn/outputs/class/W" in counts:  # K + 1 classes, background included
            file_k, graph_k = (n - 1 for n in counts["fastrcnn/outputs/class/W"])
        else:
            file_k, graph_k = counts.get("maskrcnn/conv/W", (None, None))
        detail = f" (the file predicts {file_k} categories, this model {graph_k})" if file_k else ""
        lines.append(f"The checkpoint was trained for a different number of classes{detail}. To fine-tune "
                     f"from it, pass it as --load {path}: --load leaves variables of another shape at "
                     f"their fresh initialisation and lists them.")
    return "\n".join(lines)


def refuse_other_dtypes(pairs, path):
    """A CheckpointError when a value of ``path`` cannot take its variable's dtype (an integer
    array for float weights); floats of another width are cast, as Tensorpack does."""
    wrong = integrity.dtype_mismatches(pairs)
    if wrong:
        shown = "; ".join(f"{name}: file {got} vs graph {want}" for name, got, want in wrong[:5])
        raise CheckpointError(f"'{path}' holds {len(wrong)} array(s) of another dtype than the graph's variables "
                              f"({shown}{'; ...' if len(wrong) > 5 else ''}): it is not a weights file of this model.")


class CheckpointInit(SessionInit):
    """Tensorpack session initialiser that restores by exact name and logs a :class:`LoadReport`.

    ``ignore_mismatch`` skips (and reports) variables whose shape differs instead of failing.
    ``check``, if given, is called with the :class:`LoadReport` before anything is restored or
    logged, and refuses the load by raising (maskplus/engine/strict_load.py).
    """

    def __init__(self, path, ignore_mismatch=False, check=None):
        self.path = path
        self.ignore_mismatch = ignore_mismatch
        self.check = check
        self.values = read_checkpoint(path)
        self.report = None
        self._pairs = []

    def _setup_graph(self):
        self._pairs, self.report = match_checkpoint(self.values, _graph_variables(), self.path, self.ignore_mismatch)
        refuse_other_dtypes(self._pairs, self.path)
        if self.check is not None:
            self.check(self.report)
        self.report.log()

    def _run_init(self, sess):
        # One run for every variable: a run per variable (Variable.load) prunes the whole graph
        # each time, which made resuming a large graph take minutes (BENCHMARKS.md, "loading a
        # checkpoint into a training session").
        feed = {var.initial_value: value for var, value in self._pairs}
        assert len(feed) == len(self._pairs), "two variables share one initial value"
        sess.run([var.initializer for var, _ in self._pairs], feed_dict=feed)
        self.values = None  # free the arrays once they live in the session


def model_variables():
    """The variables a model file holds: every global variable except other towers' copies and
    training state (optimizer slots, step, learning rate). Works for training and inference
    graphs alike (an inference tower does not keep MODEL_VARIABLES, so global variables it is).
    """
    return {v.op.name: v for v in tfv1.global_variables()
            if not _TOWER.match(v.op.name) and not _TRAINING_STATE.search(v.op.name)
            and not _LOSS_SCALE.match(v.op.name)}


def save_npz(path, arrays):
    """Write ``{name: array}`` as a model-zoo style ``.npz`` (keys with ':0'), atomically."""
    with atomic.writing(path, binary=True) as f:
        np.savez_compressed(f, **{(k if k.endswith(":0") else k + ":0"): np.asarray(v) for k, v in arrays.items()})


def export_npz(sess, path):
    """Save the session's model variables to ``path``; returns the number of arrays written."""
    variables = model_variables()
    values = sess.run(variables)
    save_npz(path, values)
    logger.info(f"Exported {len(values)} variables to '{path}'.")
    return len(values)
