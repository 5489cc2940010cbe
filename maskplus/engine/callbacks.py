"""Training callbacks of our own: evaluation, memory, a non-finite-loss guard, save-on-signal,
checked checkpoint saving and the data loader's fault limit."""
import collections
import errno
import glob
import hashlib
import os
import re
import resource
import shutil
import signal
import sys
import threading
import time

import numpy as np
from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.callbacks import Callback, ModelSaver
from tensorpack.train.base import StopTraining
from tensorpack.utils import logger

from maskplus import console
from maskplus.engine import checkpoint_integrity as integrity
from maskplus.engine.checkpoint import CheckpointError
from maskplus.modeling.generalized_rcnn import INFERENCE_INPUTS, output_names

#: set when a SIGTERM/SIGINT asked training to stop: long work between steps (evaluation) ends early
STOP_REQUESTED = threading.Event()


class EvaluationAbandoned(Exception):
    """An evaluation was given up because training is stopping on a signal."""


def file_name_part(name):
    """``name`` (a dataset name, possibly from DATA.CUSTOM) made safe inside a file name: other
    characters than letters, digits and ``._+-`` become ``_``, plus a short hash of the name when
    anything was replaced, so that two names never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".")
    if safe != name or not safe:
        safe = f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


class NonFiniteLossError(RuntimeError):
    """The total loss became NaN or infinite; training stopped before any checkpoint of it."""


def process_rank(trainer):
    """This process's Horovod rank under the ``trainer`` (``TRAINER``) "horovod"; 0 under any other."""
    if trainer != "horovod":
        return 0
    import horovod.tensorflow as hvd
    return hvd.rank()


def is_chief(trainer):
    return process_rank(trainer) == 0


class EvalCallback(Callback):
    """Evaluate on every dataset of ``params`` (:class:`~maskplus.engine.evaluate.EvaluationParams`)
    at the end of the epoch that ends at each of ``steps`` (default: every epoch it is triggered);
    AP goes to stats.json and TensorBoard, the metrics json records the model (the log directory
    and step). ``trainer``: the ``TRAINER``, whose rank 0 evaluates."""

    _chief_only = False

    def __init__(self, output_dir, params, trainer, steps=None):
        self.output_dir, self.params, self.trainer_kind = output_dir, params, trainer
        self.steps = None if steps is None else set(steps)  # None: whenever triggered

    def _setup_graph(self):
        self._chief = is_chief(self.trainer_kind)
        if self._chief:
            self.predictor = self.trainer.get_predictor(INFERENCE_INPUTS, output_names(self.params.masks))

    def _stoppable_predictor(self, *args):
        # checked before every image: a signal abandons the evaluation within one forward pass
        if STOP_REQUESTED.is_set():
            raise EvaluationAbandoned()
        return self.predictor(*args)

    def _trigger_epoch(self):
        if not self._chief or (self.steps is not None and self.global_step not in self.steps):
            return
        try:
            for name in self.params.datasets:
                self._evaluate(name)
        except EvaluationAbandoned:
            logger.warn(f"The evaluation at step {self.global_step} was abandoned: training is stopping on a signal.")
            console.say(f"step {self.global_step}: evaluation abandoned (stopping on a signal)")

    def _evaluate(self, name):
        from maskplus.engine.evaluate import describe_training_model, run_inference, score_results
        path = os.path.join(self.output_dir, f"outputs{self.global_step}-{file_name_part(name)}.json")
        start = time.time()
        run_inference(self._stoppable_predictor, name, path, self.params.masks)
        if STOP_REQUESTED.is_set():
            raise EvaluationAbandoned()
        metrics = score_results(name, path, self.params, describe_training_model(self.output_dir, self.global_step))
        for key, value in metrics.items():
            if value is not None:
                self.trainer.monitors.put_scalar(f"{name}/{key}", value)
        self.trainer.monitors.put_scalar(f"{name}/eval_seconds", time.time() - start)
        console.say(f"step {self.global_step}: {ap_summary(metrics)} on {name} "
                    f"({time.time() - start:.0f} s to evaluate)")


def ap_summary(metrics):
    """'bbox AP 12.3, segm AP 14.0, boundary AP 8.1' from a metrics dict ({'segm/AP': 0.14, ...})."""
    parts = [f"{kind} AP {100 * metrics[f'{kind}/AP']:.1f}" for kind in ("bbox", "segm", "boundary")
             if metrics.get(f"{kind}/AP") is not None]
    return ", ".join(parts) or "no AP"


class RunProgress(Callback):
    """One progress bar for the whole run on the console of a quiet run (instead of one per
    epoch); ``total_steps()`` may change while training (a time budget's plan)."""

    def __init__(self, total_steps):
        self.total_steps = total_steps
        self._bar = None

    def _before_train(self):
        from tqdm import tqdm
        self._bar = tqdm(total=self.total_steps(), initial=self.global_step, file=console.stream(),
                         desc="  training", unit="step", dynamic_ncols=True, mininterval=1.0)

    def _before_epoch(self):
        # the evaluation and checkpoint between epochs are not steps: keep them out of the rate and ETA
        self._bar.unpause()

    def _trigger_step(self):
        total = self.total_steps()
        if total != self._bar.total:
            self._bar.total = total
        self._bar.update(self.global_step - self._bar.n)

    def _after_train(self):
        if self._bar is not None:
            self._bar.close()


class ResourceLogger(Callback):
    """Each epoch: peak resident memory and the seconds spent since training started (summed
    over resumed runs is not attempted: each run counts from its own start)."""

    def _before_train(self):
        self._start = time.time()

    def _trigger_epoch(self):
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        self.trainer.monitors.put_scalar("peak_rss_mb", peak_mb)
        self.trainer.monitors.put_scalar("elapsed_seconds", time.time() - self._start)


class NonFiniteLossGuard(Callback):
    """Stop at the first step whose total loss is not finite, naming the step, the recent losses
    and the recent image ids, before a checkpoint can record the damaged weights."""

    _chief_only = False

    def __init__(self, history=5):
        self.history = collections.deque(maxlen=history)

    def _setup_graph(self):
        # the first tower's tensors ("tower0/..." under the replicated trainer)
        names = {op.name for op in tfv1.get_default_graph().get_operations()}
        self._fetches = {}
        for key, op_name in (("loss", "total_cost"), ("image_id", "input_image_id")):
            found = [n for n in (f"tower0/{op_name}", op_name) if n in names]
            if found:
                self._fetches[key] = found[0] + ":0"
        if "loss" not in self._fetches:
            raise RuntimeError("NonFiniteLossGuard: the graph has no 'total_cost' tensor.")

    def _before_run(self, _):
        return tfv1.train.SessionRunArgs(fetches=self._fetches)

    def _after_run(self, _, run_values):
        loss = float(run_values.results["loss"])
        image_id = run_values.results.get("image_id")
        self.history.append((self.global_step, loss, None if image_id is None else int(image_id)))
        if not np.isfinite(loss):
            recent = "\n".join(f"  step {s}: total loss {l}, image_id {i}" for s, l, i in self.history)
            raise NonFiniteLossError(
                f"The total loss is {loss} at step {self.global_step}; training stopped, no checkpoint of "
                f"this state was written. Recent steps (on tower 0):\n{recent}\nCheck these images' "
                f"annotations (degenerate boxes or masks) or lower TRAIN.BASE_LR, then resume from the last "
                f"checkpoint in the log directory.")


class SaveOnSignal(Callback):
    """On SIGTERM or SIGINT (Ctrl-C): abandon an evaluation in progress, finish the current step,
    write a checkpoint and stop; :attr:`received` then names the signal (train.py exits with
    128 + its number). A second SIGTERM/SIGINT stops the process at once, without a checkpoint.

    A watcher thread reads the signals from Python's wakeup file descriptor, so that the second
    one acts even while the main thread waits inside TensorFlow (where Python handlers wait)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, saver):
        self.saver = saver  # a ModelSaver callback (also registered with the trainer)
        self.received = None
        self.save_error = None  # a CheckpointError of the save after training (Tensorpack would only print it)
        self._saved = False
        self._write_fd = None

    def _before_train(self):
        STOP_REQUESTED.clear()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}  # the watcher acts
        threading.Thread(target=self._watch, name="SaveOnSignal watcher", daemon=True).start()

    def _watch(self):
        while True:
            try:
                data = os.read(self._read_fd, 64)
            except OSError:
                data = b""
            if not data:  # the write end was closed after training
                os.close(self._read_fd)
                return
            for signum in data:
                if signum in self.SIGNALS:
                    self._on_signal(signal.Signals(signum).name, signum)

    def _on_signal(self, name, signum):
        if self.received is None:
            self.received = name
            STOP_REQUESTED.set()
            console.say(f"{name} received: stopping after the current step with a checkpoint (an evaluation in "
                        f"progress is abandoned); another SIGTERM or Ctrl-C stops at once, without one.", logger.info)
            return
        console.say(f"Second {name}: stopped at once, without writing a checkpoint; rerun the same command to "
                    f"resume from the last one in the log directory.", logger.error)
        sys.stderr.write(f"Stopped at once on a second {name}: no checkpoint was written for the last steps.\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    def _save_and_stop(self):
        logger.info(f"{self.received} received: saving a checkpoint at step {self.global_step} and stopping.")
        self._saved = True
        self.saver.trigger()
        raise StopTraining()

    def _trigger_step(self):
        if self.received and not self._saved:
            self._save_and_stop()

    def _before_epoch(self):
        # a signal during the previous epoch's evaluation: no need for another step
        if self.received and not self._saved:
            self._save_and_stop()

    def _after_train(self):
        if self._write_fd is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        os.close(self._write_fd)  # ends the watcher
        if self.received and not self._saved and sys.exc_info()[0] is None:
            # the signal came during the last epoch's evaluation, after its checkpoint: save anyway
            self._saved = True
            self.save_error = save_after_training(self.saver)


class CheckedModelSaver(ModelSaver):
    """Tensorpack's ModelSaver, except that a new checkpoint is read back (the cheap check of
    :mod:`checkpoint_integrity`) before the state file names it and older ones are rotated out
    (``TRAIN.MAX_CHECKPOINTS``), so that a run always keeps an intact checkpoint; and a checkpoint
    that cannot be written (a full disk, lost permissions) stops training with a
    :class:`CheckpointError` naming the OS error and the directory instead of a line in the log."""

    def _before_train(self):
        try:
            super()._before_train()  # the graph's .meta file
        except (OSError, tf.errors.OpError) as e:
            raise CheckpointError(f"Cannot write to the log directory {self.checkpoint_dir}: "
                                  f"{os_error_text(e)}.") from None

    last_checkpoint = None  # the path of the latest checkpoint this run wrote

    def _trigger(self):
        step = self.global_step
        prefix = f"{self.path}-{step}"
        if os.path.isfile(prefix + ".index") and not integrity.tf_checkpoint_damage(prefix):
            # this step's state is saved already (a resume stopped before its first step): rewriting
            # it in place could damage the only copy
            self.last_checkpoint = prefix
            logger.info(f"{prefix} holds this step already: not written again.")
            return
        before = integrity.checkpoint_files(prefix)
        try:
            path = self.saver.save(tfv1.get_default_session(), self.path, global_step=tfv1.train.get_global_step(),
                                   write_meta_graph=False, write_state=False)
        except (OSError, ValueError, tf.errors.OpError) as e:  # ValueError: the directory is gone
            if not before:
                _remove_partial_save(prefix)
            raise CheckpointError(self._failure(step, os_error_text(e), advice_for(e))) from None
        damage = integrity.tf_checkpoint_damage(path)
        if damage:
            raise CheckpointError(self._failure(step, f"the checkpoint written, {path}, does not read back ({damage})",
                                                "check the file system (a full disk or a failing network mount)"))
        try:
            record_checkpoint(self.saver, path)
        except (OSError, tf.errors.OpError) as e:
            raise CheckpointError(self._failure(step, f"{path} was written, but the state file naming it could not be: "
                                                      f"{os_error_text(e)}", advice_for(e))) from None
        self.last_checkpoint = path
        logger.info(f"Model saved to {self.last_checkpoint}.")

    def _failure(self, step, what, advice):
        newest = integrity.newest_intact(self.checkpoint_dir)
        kept = (f"the checkpoints written before are kept (the newest: {newest})" if newest
                else "the log directory holds no checkpoint yet")
        return (f"A checkpoint could not be written to {self.checkpoint_dir} at step {step}: {what}. Training "
                f"stopped; {kept}. {advice[0].upper() + advice[1:]}, then rerun the same command to resume.")


def record_checkpoint(saver, path):
    """What ``tf.train.Saver.save`` does after writing the files when ``write_state`` is on: the
    state file names ``path``, and checkpoints beyond ``max_to_keep`` are deleted (TensorFlow's
    own bookkeeping, ``keep_checkpoint_every_n_hours`` included), done here once ``path`` is checked."""
    # the Saver's own list and deletion (private methods, unchanged since TensorFlow 1.0), so that
    # the rotation is exactly what Tensorpack's ModelSaver gets
    saver._RecordLastCheckpoint(path)
    tfv1.train.update_checkpoint_state(os.path.abspath(os.path.dirname(path)), os.path.basename(path),
                                       [os.path.basename(p) for p in saver.last_checkpoints])
    saver._MaybeDeleteOldCheckpoints()


def _remove_partial_save(prefix):
    """Remove what a failed save of ``prefix`` left (a data file without index, TensorFlow's
    ``.tempstate`` files and ``_temp`` folder): never a checkpoint, and on a full disk in the way."""
    for path in integrity.checkpoint_files(prefix) + glob.glob(glob.escape(prefix) + ".*.tempstate*"):
        os.remove(path)
    shutil.rmtree(prefix + "_temp", ignore_errors=True)


#: what to do about each OS error a save may meet
_ADVICE = {
    errno.ENOSPC: "free some space on that file system",
    errno.EDQUOT: "free some space (the disk quota is reached) or raise the quota",
    errno.EROFS: "the file system is mounted read-only: remount it writable or choose a --logdir elsewhere",
    errno.EACCES: "give this user write permission on the directory",
    errno.EPERM: "give this user write permission on the directory",
    errno.EFBIG: "the file size limit (ulimit -f) is smaller than a checkpoint: raise it",
    errno.EIO: "check the disk or the network mount (an I/O error)",
    errno.ENOENT: "the directory was removed or moved: restore it",
}


def os_error_of(error):
    """The errno of an OSError, or of the OS error a TensorFlow error's message names; else None."""
    if isinstance(error, OSError) and error.errno:
        return error.errno
    text = getattr(error, "message", None) or str(error)
    return next((code for code in _ADVICE if os.strerror(code) in text), None)


def os_error_text(error):
    """'No space left on device (ENOSPC)', else the error's first meaningful line."""
    code = os_error_of(error)
    if code is not None:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(("Graph execution error", "Detected at node"))]
    return lines[0] if lines else type(error).__name__


def advice_for(error):
    return _ADVICE.get(os_error_of(error), "free some space or fix the permissions")


def save_after_training(saver):
    """Trigger ``saver`` from ``_after_train`` (where Tensorpack prints an exception and goes on):
    returns the CheckpointError, if any, for the trainer to raise."""
    try:
        saver.trigger()
    except CheckpointError as e:
        return e
    return None


class LoaderFaultGuard(Callback):
    """Stops training, with a checkpoint, once the data loader has failed on more images than
    ``DATA.LOADER_MAX_SKIPPED`` allows (see :class:`maskplus.data.pipeline.LoaderFaults`; the
    trainer then raises its error), and logs the count of skipped images every epoch."""

    def __init__(self, faults, saver):
        self.faults, self.saver = faults, saver
        self.save_error = None
        self._saved = False

    def _trigger_step(self):
        if self.faults.error and not self._saved:
            self._saved = True
            self.saver.trigger()
            raise StopTraining("the data loader failed")

    def _trigger_epoch(self):
        self.trainer.monitors.put_scalar("loader_skipped_images", len(self.faults.skipped))

    def _after_train(self):
        # also when the loader ended the input queue (the main loop then stops as at the end of
        # the data); not after an exception such as a non-finite loss, whose weights must not be saved
        if self.faults.error and not self._saved and sys.exc_info()[0] is None:
            self._saved = True
            self.save_error = save_after_training(self.saver)
        elif self.faults.skipped:
            logger.warn(f"The data loader skipped {len(self.faults.skipped)} training images during this run:\n  "
                        + "\n  ".join(self.faults.listing()))


class HorovodSyncCheck(Callback):
    """On the last step of every epoch (before the trainer's per-epoch re-broadcast) every rank
    compares a checksum of its variables with the others'. The all-reduced updates keep them
    equal up to float rounding; ranks that really train apart (a broken all-reduce) differ far
    more and are reported as an error."""

    _chief_only = False
    TOLERANCE = 1e-5  # relative

    def _setup_graph(self):
        import horovod.tensorflow as hvd
        checksum = tf.add_n([tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in tfv1.trainable_variables()])
        self._gathered = hvd.allgather(tf.reshape(checksum, [1]))
        self._rank = hvd.rank()

    def _trigger_step(self):
        if self.local_step != self.trainer.steps_per_epoch - 1:
            return
        sums = self._gathered.eval()
        spread = float(np.max(np.abs(sums - sums[0])) / max(abs(sums[0]), 1e-12))
        message = (f"Horovod rank {self._rank}, step {self.global_step}: variable checksums of all ranks "
                   f"{sums.tolist()}, relative spread {spread:.1e}")
        if spread <= self.TOLERANCE:
            logger.info(message + ": the ranks agree.")
        else:
            logger.error(message + ": THE RANKS DIFFER (check the all-reduce setup).")
        self.trainer.monitors.put_scalar("horovod_rank_spread", spread)


#: environment variable naming a directory: when set, every training process dumps its variables there
DUMP_VARIABLES_ENV = "MASKPLUS_DUMP_VARIABLES"


class DumpVariablesAtEnd(Callback):
    """After training, writes every variable of this process (replicated towers' copies
    included) to ``<directory>/variables-rank<r>.npz``, and the state training starts from (after
    the restore and the schedule setters) to ``variables-rank<r>-start.npz``. Checkpoints hold
    only tower 0 and rank 0; this is how the tests compare tower copies, Horovod ranks, and a
    resumed run's state with its checkpoint. ``trainer``: the ``TRAINER`` (its rank names the
    files). Register it last."""

    _chief_only = False

    def __init__(self, directory, trainer):
        self.directory, self.trainer_kind = directory, trainer

    def _setup_graph(self):
        # replicated towers after the first keep their copies in LOCAL_VARIABLES (not checkpointed)
        self._variables = tfv1.global_variables() + tfv1.local_variables()
        self._rank = process_rank(self.trainer_kind)

    def _dump(self, suffix):
        values = self.trainer.sess.run(self._variables)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"variables-rank{self._rank}{suffix}.npz")
        np.savez(path, **{v.op.name: value for v, value in zip(self._variables, values)})
        logger.info(f"Dumped {len(values)} variables to '{path}'.")

    def _before_train(self):
        self._dump("-start")

    def _after_train(self):
        self._dump("")


class EpochsOnSchedule(Callback):
    """Keeps every epoch on the schedule's grid of ``steps_per_epoch`` steps and ends the run at
    the schedule's last step.

    Tensorpack runs whole epochs from wherever training starts: a run resumed from a mid-epoch
    checkpoint (written on SIGTERM) would shift every later epoch end (checkpoints, evaluations,
    the LR drops at epoch starts) and run past the schedule's end, as would a last step that is
    not a whole number of epochs (``TRAIN.LR_SCHEDULE_ROUNDING=step``). Here an epoch ends at the
    next multiple of ``steps_per_epoch`` or at the last step, whichever comes first, so the last
    epoch's end (its checkpoint and evaluation) is the schedule's end."""

    def __init__(self, steps_per_epoch, last_step):
        self.steps_per_epoch, self.last_step = int(steps_per_epoch), int(last_step)

    def _before_epoch(self):
        step = self.global_step
        if step >= self.last_step:
            raise StopTraining(f"the schedule ends at step {self.last_step}")
        self.trainer.loop.steps_per_epoch = epoch_length(step, self.steps_per_epoch, self.last_step)


def epoch_length(step, steps_per_epoch, last_step):
    """Steps of the epoch starting after ``step``: to the next grid line or the last step."""
    return min(steps_per_epoch - step % steps_per_epoch, last_step - step)
