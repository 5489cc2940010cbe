"""A log directory is one experiment: what train.py may do with an existing one, the record of
what its run is (``run.json``) and the lock that keeps a second live run out.

A run is *identified* by everything that changes what it trains: the model, the data, the
schedule, the initialisation and the preset (its table row). A directory holding a run is
resumed only by a command with the same identity; otherwise nothing is written and the
differences are named. ``--logdir-action`` offers Tensorpack's choices for an existing
directory (``logger.set_logger_dir``'s keep/backup/delete/new), keep being "resume if it agrees".
"""
import datetime
import fcntl
import glob
import hashlib
import json
import os
import shutil
import socket
import time

RUN_INFO = "run.json"
LOCK = "train.lock"
ACTIONS = ("resume", "backup", "delete", "new")

#: Keys (or prefixes ending in ".") that do not change what a run trains: a run may be resumed
#: with other values (they only affect loading speed, evaluation and checkpoint bookkeeping);
#: run.json then records the latest ones.
HARMLESS_KEYS = (
    "DATA.NUM_WORKERS", "DATA.VAL", "DATA.VALIDATE", "DATA.LOADER_MAX_SKIPPED",
    "TRAIN.EVAL_PERIOD", "TRAIN.CHECKPOINT_PERIOD", "TRAIN.MAX_CHECKPOINTS", "TRAIN.INTRA_OP_THREADS",
    "TRAIN.BOUNDARY_AP", "TRAIN.STARTING_EPOCH",  # the last one removed, but older run.json files record it
    "TEST.", "PREPROC.TEST_SHORT_EDGE_SIZE", "RPN.TEST_", "MRCNN.ACCURATE_PASTE",
)
#: Paths, compared by what they hold instead: the training data by its annotation files' content
#: (so a dataset moved to another folder resumes, another dataset under the same name does not)
PATH_KEYS = ("DATA.BASEDIR", "DATA.CUSTOM")
#: Weights files, compared by file name (a moved file resumes)
FILE_KEYS = ("BACKBONE.WEIGHTS",)
#: how many differences the refusal lists
SHOWN_DIFFERENCES = 8


class LogdirError(ValueError):
    """The log directory cannot be used as asked; nothing was written."""


def _harmless(key):
    return any(key == h or (h.endswith(".") and key.startswith(h)) for h in HARMLESS_KEYS)


def _plain(value):
    """JSON's view of a value (tuples are lists), so recorded and new values compare equal."""
    return json.loads(json.dumps(value, default=str))


def _file_name(path):
    return os.path.basename(os.path.normpath(str(path))) if path else None


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and key.isupper() and key != "CUSTOM":
            yield from _flatten(value, prefix + key + ".")
        else:
            yield prefix + key, value


def data_fingerprint(json_paths):
    """``{dataset name: "sha256:<16 hex digits>"}`` of the training annotation files."""
    out = {}
    for name, path in json_paths.items():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        out[name] = "sha256:" + digest.hexdigest()[:16]
    return out


def run_identity(config_tree, preset, load, minutes, data):
    """The flat ``{key: value}`` that must agree for a directory's run to be resumed: the
    finalised config (as nested dicts) without :data:`HARMLESS_KEYS` and :data:`PATH_KEYS`,
    weights by file name, plus the preset, ``--load``, whether the length is a time budget
    (``--minutes``: its value differs on every resume) and the training data's fingerprint."""
    identity = {}
    for key, value in _flatten(config_tree):
        if _harmless(key) or key in PATH_KEYS:
            continue
        identity[key] = _file_name(value) if key in FILE_KEYS else value
    identity.update({"--preset": preset, "--load": _file_name(load),
                     "--minutes": "given" if minutes else "not given", "training data": data})
    return _plain(identity)


def differences(recorded, new):
    """``["KEY old -> new", ...]`` over the keys either identity has (keys the recorded one
    lacks, from an older train.py, are not compared)."""
    out = []
    for key in list(new) + [k for k in recorded if k not in new]:
        if key not in recorded:
            continue
        old, now = recorded.get(key), new.get(key, "(no such key)")
        if old != now:
            out.append(f"{key} {old!r} -> {now!r}")
    return out


def read_run_info(logdir):
    path = os.path.join(logdir, RUN_INFO)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LogdirError(f"{path} cannot be read ({e}); so what ran in {logdir} is unknown. Choose another "
                          f"--logdir, or --logdir-action backup/delete/new.") from None


def recorded_identity(info):
    """The identity a run.json records; for one written before identities were recorded, rebuilt
    from its config and preset (its budget, --load and data are then not compared)."""
    if "identity" in info:
        return info["identity"]
    identity = run_identity(info.get("config", {}), info.get("preset"), None, None, None)
    for key in ("--load", "--minutes", "training data"):
        identity.pop(key)
    return identity


def has_checkpoint(logdir):
    """Whether ``logdir`` holds any checkpoint file: the state file, or an index or data file of a
    ``model-<step>`` checkpoint, intact or not (a directory holding one is never trained from scratch)."""
    return os.path.isfile(os.path.join(logdir, "checkpoint")) or any(
        glob.glob(os.path.join(glob.escape(logdir), pattern)) for pattern in ("model-*.index", "model-*.data-*"))


# ---------------------------------------------------------------------------------- the checkpoint to resume
class ResumePoint:
    """The checkpoint a resume starts from (``checkpoint``, a prefix, or None when the directory holds
    no checkpoint file), the newer ``damaged`` ones ``[(prefix, why)]`` that are set aside for it,
    and ``state_note``: what is wrong with the checkpoint state file, if anything."""

    def __init__(self, checkpoint, damaged=(), state_note=None):
        self.checkpoint, self.damaged, self.state_note = checkpoint, list(damaged), state_note
        self.set_aside = []  # (prefix, where its files went), once set_aside_damaged() ran


def resume_point(logdir):
    """The newest checkpoint of ``logdir`` that reads completely (index present, every tensor's bytes
    there: the cheap check of :mod:`checkpoint_integrity`), read only. A directory holding checkpoint
    files none of which is intact raises :class:`LogdirError`: resuming would train from scratch
    over them."""
    from maskplus.engine import checkpoint_integrity as integrity
    named, state_note = integrity.state_file_latest(logdir)
    if named and not integrity.checkpoint_files(named):
        state_note = f"the checkpoint state file names {os.path.basename(named)}, which is gone"
    damaged = []
    for _, prefix in sorted(integrity.checkpoints_in(logdir).items(), reverse=True):
        why = integrity.tf_checkpoint_damage(prefix)
        if why is None:
            return ResumePoint(prefix, damaged, state_note)
        damaged.append((prefix, why))
    if damaged or os.path.isfile(os.path.join(logdir, integrity.STATE_FILE)):
        found = [f"{os.path.basename(p)} ({why})" for p, why in damaged] + ([state_note] if state_note else [])
        raise LogdirError(
            f"{logdir} holds checkpoint files but no intact checkpoint: {'; '.join(found) or 'only a state file'}. "
            f"Resuming would train from scratch over them, so nothing was written. If they are of no use, move "
            f"them out of {logdir} and rerun; to keep them and start this run elsewhere, add --logdir-action new "
            f"(a fresh {logdir}-<time>) or choose another --logdir; --logdir-action backup moves the directory "
            f"aside, delete deletes it.")
    return ResumePoint(None, [], state_note)


def set_aside_damaged(logdir, point):
    """Move each damaged checkpoint newer than the one resumed (its files, and the temporary folder of
    its save) into ``<logdir>/damaged-<name>``, never deleting or overwriting them; point the state
    file at the resumed checkpoint when it named another."""
    from maskplus.compat import tfv1
    from maskplus.engine import checkpoint_integrity as integrity
    for prefix, _ in point.damaged:
        aside = unused_path(os.path.join(logdir, "damaged-" + os.path.basename(prefix)))
        os.makedirs(aside)
        for path in integrity.checkpoint_files(prefix) + [p for p in [prefix + "_temp"] if os.path.isdir(p)]:
            shutil.move(path, os.path.join(aside, os.path.basename(path)))
        point.set_aside.append((prefix, aside))
    named, _ = integrity.state_file_latest(logdir)
    if point.checkpoint and named != point.checkpoint:
        intact = [os.path.basename(p) for step, p in sorted(integrity.checkpoints_in(logdir).items())
                  if os.path.isfile(p + ".index") and step <= int(point.checkpoint.rsplit("-", 1)[1])]
        # an absolute directory: TensorFlow keeps the names as given, relative to it
        tfv1.train.update_checkpoint_state(os.path.abspath(logdir), os.path.basename(point.checkpoint), intact)


def describe_resume(point):
    """': model-24 is damaged (data file truncated: 1.2 of 3.6 MB), moved aside to D; ...' or ''."""
    aside = dict(point.set_aside)
    parts = [f"{os.path.basename(p)} is damaged ({why}), moved aside to {aside[p]}" for p, why in point.damaged]
    if point.state_note:
        parts.append(point.state_note)
    return ": " + "; ".join(parts) if parts else ""


def _holds_working_directory(logdir):
    here, there = os.path.realpath(os.getcwd()), os.path.realpath(logdir)
    return here == there or here.startswith(there.rstrip(os.sep) + os.sep)


def _timestamped(logdir):
    """``<logdir>-<YYYYmmdd-HHMMSS>`` (with a counter if that exists too)."""
    return unused_path(f"{os.path.normpath(logdir)}-{time.strftime('%Y%m%d-%H%M%S')}")


def unused_path(base):
    """``base``, else the first of ``base-2``, ``base-3``, ... that does not exist."""
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


# ---------------------------------------------------------------------------------- the lock
def _lock_holder(path):
    """What the lock file at ``path`` says about the live run holding it, or None if none holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_text(path) or "another process"
    finally:
        os.close(fd)  # also releases our shared lock
    return None


def _lock_text(path):
    try:
        with open(path) as f:
            info = json.load(f)
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RunLock:
    """An exclusive ``flock`` on ``<logdir>/train.lock``, held while this process lives: the
    kernel releases it when the process ends however it ends (SIGKILL included), so a lock file
    left by a killed run is recognised as stale and taken over. (On NFS, flock works between hosts
    only with NFSv4 or lockd.) The file records pid, host and start time for the messages."""

    def __init__(self, logdir):
        self.path = os.path.join(logdir, LOCK)
        self.fd = None
        self.took_over = None  # what the lock file said about the run that left it

    def acquire(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LogdirError(_unwritable(self.path, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogdirError(in_use_message(os.path.dirname(self.path), _lock_text(self.path) or "another process"))
        self.took_over = _lock_text(self.path)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise LogdirError(_unwritable(self.path, e)) from None
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            try:
                os.remove(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def _unwritable(path, error):
    return f"Cannot write to the log directory {os.path.dirname(path)}: {error.strerror or error}."


def in_use_message(logdir, holder):
    return (f"{logdir} is in use by a training run that is still going ({holder}; its lock is "
            f"{os.path.join(logdir, LOCK)}). Wait for it to end or stop it, or choose another --logdir.")


# ---------------------------------------------------------------------------------- the plan
class RunDirectory:
    """Where this run writes (``path``), whether it resumes a run found there, and the lines
    saying what was done with the directory asked for."""

    def __init__(self, path, resume, notes):
        self.path, self.resume, self.notes = path, resume, notes
        self.lock = None
        self.checkpoint = None  # the checkpoint a resume starts from (a prefix), when there is one


def open_run_directory(logdir, action, identity):
    """Check ``logdir`` against this run (read only), then do ``action`` with it and lock the
    directory the run will use. Raises :class:`LogdirError` (before anything is written) when
    the directory holds another run or a live one."""
    if action not in ACTIONS:
        raise LogdirError(f"--logdir-action must be one of {', '.join(ACTIONS)}, got '{action}'.")
    logdir = os.path.normpath(logdir)
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise LogdirError(f"--logdir {logdir} is a file, not a directory.")
    holds_run = os.path.isdir(logdir) and (os.path.exists(os.path.join(logdir, RUN_INFO)) or has_checkpoint(logdir))
    holder = _lock_holder(os.path.join(logdir, LOCK))
    if holder and action != "new":
        raise LogdirError(in_use_message(logdir, holder))
    notes = []
    resume = False
    point = None
    if holds_run and action in ("backup", "delete") and _holds_working_directory(logdir):
        raise LogdirError(f"--logdir-action {action} would {'move' if action == 'backup' else 'delete'} {logdir}, "
                          f"which holds the working directory: choose another --logdir.")
    if holds_run or (holder and action == "new"):
        if action == "resume":
            check_resumable(logdir, identity)
            point = resume_point(logdir)
            resume = True
        elif action == "backup":
            backup = _timestamped(logdir)
            shutil.move(logdir, backup)
            notes.append(f"Log directory: the run that was in {logdir} was moved to {backup}; this run starts afresh.")
        elif action == "delete":  # only ever a directory holding a run.json or checkpoints
            shutil.rmtree(logdir)
            notes.append(f"Log directory: the run that was in {logdir} was deleted; this run starts afresh.")
        else:  # new
            fresh = _timestamped(logdir)
            notes.append(f"Log directory: {logdir} is left as it is; this run writes to {fresh}.")
            logdir = fresh
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as e:
        raise LogdirError(f"Cannot create the log directory {logdir}: {e.strerror}.") from None
    plan = RunDirectory(logdir, resume, notes)
    plan.lock = RunLock(logdir).acquire()
    if plan.lock.took_over:
        notes.append(f"Log directory: taking over the lock left by a run that ended without releasing it "
                     f"({plan.lock.took_over}).")
    if resume:
        if point.checkpoint:
            try:
                set_aside_damaged(logdir, point)
            except OSError as e:
                plan.lock.release()
                raise LogdirError(f"Cannot move a damaged checkpoint aside in {logdir}: {e.strerror or e}.") from None
            plan.checkpoint = point.checkpoint
        notes.append(f"Log directory: {logdir} holds this run (its run.json agrees with this command): " + (
            f"resuming it from {os.path.basename(point.checkpoint)}{describe_resume(point)}." if point.checkpoint
            else "no checkpoint yet, so it starts again from the beginning."))
    return plan


def check_resumable(logdir, identity):
    """Raise :class:`LogdirError` unless ``logdir``'s run.json records the same run."""
    info = read_run_info(logdir)
    choices = (f"To keep it and start this run elsewhere, add --logdir-action new (a fresh {logdir}-<time>) "
               f"or choose another --logdir; --logdir-action backup moves it aside, delete deletes it.")
    if info is None:
        raise LogdirError(f"{logdir} holds checkpoints but no {RUN_INFO}, so which run trained them is unknown; "
                          f"nothing was written. {choices}")
    diff = differences(recorded_identity(info), identity)
    if diff:
        shown = "; ".join(diff[:SHOWN_DIFFERENCES]) + (
            f"; and {len(diff) - SHOWN_DIFFERENCES} more" if len(diff) > SHOWN_DIFFERENCES else "")
        raise LogdirError(f"{logdir} holds another run (recorded -> this command: {shown}); nothing was written. "
                          f"To resume it, rerun its own command. {choices}")
