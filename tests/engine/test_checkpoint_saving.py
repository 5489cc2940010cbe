"""Saving never leaves a run without an intact checkpoint: a new checkpoint is read back before the
state file names it and older ones are rotated out (TRAIN.MAX_CHECKPOINTS); a failed save keeps
every earlier one and names the OS error and the directory. (A save failing half-way in a real
train.py run: tests/engine/test_damaged_checkpoints.py.)"""
import os
import types

import numpy as np
import pytest

from maskplus.compat import tf, tfv1
from maskplus.engine.callbacks import CheckedModelSaver
from maskplus.engine.checkpoint import CheckpointError
from tests.helpers import checkpoint_arrays


class _Run:
    """A small graph saved by a CheckedModelSaver as Tensorpack drives it (setup, then triggers)."""

    def __init__(self, directory, max_to_keep):
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.w = tfv1.get_variable("w", initializer=np.arange(4000, dtype=np.float32).reshape(40, 100))
            self.step = tfv1.train.get_or_create_global_step()
            self.trainer = types.SimpleNamespace(global_step=0)
            self.saver = CheckedModelSaver(max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=10000,
                                           checkpoint_dir=str(directory))
            self.saver.setup_graph(self.trainer)
            self.sess = tfv1.Session()
            self.sess.run(tfv1.global_variables_initializer())

    def save_at(self, step):
        with self.graph.as_default(), self.sess.as_default():
            self.sess.run(self.step.assign(step))
            self.sess.run(self.w.assign_add(tf.ones_like(self.w)))
            self.trainer.global_step = step
            self.saver.trigger()


def _steps(directory):
    return sorted(int(f[len("model-"):-len(".index")]) for f in os.listdir(directory)
                  if f.startswith("model-") and f.endswith(".index"))


def _losing_the_tail(saver, fraction=0.5):
    """Wrap the TF saver's save: the files are written, then the file system loses the data
    file's tail (what a failing network mount or a full disk at close may do)."""
    real = saver.save

    def save(sess, path, global_step=None, **kwargs):
        prefix = real(sess, path, global_step=global_step, **kwargs)
        data = prefix + ".data-00000-of-00001"
        with open(data, "r+b") as f:
            f.truncate(int(os.path.getsize(data) * fraction))
        return prefix

    saver.save = save


def test_a_checkpoint_that_does_not_read_back_never_rotates_out_the_last_good_one(tmp_path):
    run = _Run(tmp_path, max_to_keep=1)
    run.save_at(8)
    good = checkpoint_arrays(tmp_path / "model-8")
    _losing_the_tail(run.saver.saver)
    with pytest.raises(CheckpointError) as e:
        run.save_at(16)
    # 40 x 100 float32 and an int64 step, written back to back: 16008 bytes, half of it kept
    assert str(e.value) == (
        f"A checkpoint could not be written to {tmp_path} at step 16: the checkpoint written, {tmp_path}/model-16, "
        f"does not read back (data file truncated: 8004 of 16008 bytes). Training stopped; the checkpoints written "
        f"before are kept (the newest: {tmp_path}/model-8). Check the file system (a full disk or a failing network "
        f"mount), then rerun the same command to resume.")
    assert 8 in _steps(tmp_path)
    assert 'model_checkpoint_path: "model-8"' in (tmp_path / "checkpoint").read_text()
    kept = checkpoint_arrays(tmp_path / "model-8")
    assert kept.keys() == good.keys() and all(np.array_equal(kept[k], good[k]) for k in kept)


def test_a_checkpoint_that_reads_back_rotates_the_oldest_out(tmp_path):
    run = _Run(tmp_path, max_to_keep=2)
    for step in (8, 16, 24):
        run.save_at(step)
    assert _steps(tmp_path) == [16, 24] and run.saver.last_checkpoint == str(tmp_path / "model-24")
    assert 'model_checkpoint_path: "model-24"' in (tmp_path / "checkpoint").read_text()
    np.testing.assert_array_equal(checkpoint_arrays(tmp_path / "model-24")["w"],
                                  np.arange(4000, dtype=np.float32).reshape(40, 100) + 3)


def _graph_execution_error(cls, text):
    """A TensorFlow error as a failed SaveV2 raises it in graph mode (its first line says nothing)."""
    return cls(None, None, f"Graph execution error:\n\nDetected at node 'save/SaveV2' defined at (most recent call "
                           f"last):\nNode: 'save/SaveV2'\n{text}\n\t [[{{{{node save/SaveV2}}}}]]")


@pytest.mark.parametrize("error, named, advice", [
    (tf.errors.ResourceExhaustedError, "No space left on device (ENOSPC)", "Free some space on that file system"),
    (tf.errors.PermissionDeniedError, "Read-only file system (EROFS)", "The file system is mounted read-only"),
    (tf.errors.PermissionDeniedError, "Permission denied (EACCES)", "Give this user write permission"),
])
def test_a_failed_save_names_the_os_error_and_keeps_the_earlier_checkpoints(tmp_path, error, named, advice):
    run = _Run(tmp_path, max_to_keep=1)
    run.save_at(8)
    strerror = named.rsplit(" (", 1)[0]

    def failing(sess, path, global_step=None, **kwargs):
        with open(f"{path}-16.data-00000-of-00001", "wb") as f:
            f.write(b"\0" * 100)  # the start of a data file, then the OS says no
        raise _graph_execution_error(error, f"{path}-16.data-00000-of-00001.tempstate1234; {strerror}")

    run.saver.saver.save = failing
    with pytest.raises(CheckpointError) as e:
        run.save_at(16)
    assert str(e.value).startswith(f"A checkpoint could not be written to {tmp_path} at step 16: {named}. Training "
                                   f"stopped; the checkpoints written before are kept (the newest: {tmp_path}/model-8). "
                                   f"{advice}")
    assert _steps(tmp_path) == [8] and not list(tmp_path.glob("model-16*"))


def test_a_step_already_saved_is_not_written_over(tmp_path):
    # a resumed run stopped before its first step saves the state it resumed: the file it came from
    run = _Run(tmp_path, max_to_keep=1)
    run.save_at(8)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("model-8.*")}
    run.saver.saver.save = None  # any call fails
    with run.graph.as_default(), run.sess.as_default():
        run.saver.trigger()
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("model-8.*")} == before
    assert run.saver.last_checkpoint == str(tmp_path / "model-8")
