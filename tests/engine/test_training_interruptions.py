"""Long runs must not lose work: SIGTERM saves, SIGKILL resumes from the last checkpoint, and a
non-finite loss stops the run with a message instead of checkpointing NaNs. The signal tests run
with the loader processes users get (DATA.NUM_WORKERS=4), which must end with the trainer."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.engine.test_loader_faults import processes_of
from tests.engine.test_training import ROOT, TINY_ARGS, train

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def _command(dataset, logdir, *config):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(logdir),
            "--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAIN.NUM_GPUS=1", *config]


def _loader_processes(proc):
    """The trainer's child processes (its loader processes, forked with its command line)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _wait_until_gone(logdir, timeout=30):
    start = time.time()
    while processes_of(logdir) and time.time() - start < timeout:
        time.sleep(0.5)
    return processes_of(logdir)


def _wait_for(predicate, proc, timeout=240):
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            output = proc.stdout.read()[-3000:] if proc.stdout else "(output in the run's log file)"
            raise AssertionError(f"training ended early: {output}")
        time.sleep(0.5)
    raise AssertionError("timed out")


def _checkpoints(logdir):
    return sorted(int(f[len("model-"):-len(".index")]) for f in os.listdir(logdir)
                  if f.startswith("model-") and f.endswith(".index"))


def test_sigterm_writes_a_checkpoint_and_stops_cleanly(dataset, tmp_path):
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(dataset, tmp_path, "TRAIN.LR_SCHEDULE=[500,600,700]",
                                         "TRAIN.STEPS_PER_EPOCH=10000", "DATA.NUM_WORKERS=4"),
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _wait_for(lambda: "Start Epoch 1" in log.read_text(), proc)
        assert len(_loader_processes(proc)) == 4
        # a second run on the directory of a live one is refused (its lock), whatever it asks
        second = subprocess.run(_command(dataset, tmp_path, "TRAIN.LR_SCHEDULE=[500,600,700]",
                                         "TRAIN.STEPS_PER_EPOCH=10000", "DATA.NUM_WORKERS=4"),
                                capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert second.returncode == 1 and f"Error: {tmp_path} is in use by a training run that is still going " \
            f"(pid {proc.pid} on host" in second.stderr, second.stderr[-2000:]
        assert _checkpoints(tmp_path) == []  # nothing saved yet: the epoch is long
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    text = log.read_text()
    assert "SIGTERM received: saving a checkpoint" in text and "Traceback" not in text
    saved = _checkpoints(tmp_path)
    assert len(saved) == 1 and saved[0] > 0
    assert f"Stopped on SIGTERM; the last checkpoint is {tmp_path / f'model-{saved[0]}'}. Rerun the same " \
           f"command to resume." in text
    assert _wait_until_gone(tmp_path) == [] and not (tmp_path / "train.lock").exists()


def test_a_non_finite_loss_stops_training_with_the_step_losses_and_images(dataset, tmp_path):
    proc = subprocess.run(_command(dataset, tmp_path, "TRAIN.LR_SCHEDULE=[2,3,4]", "TRAIN.STEPS_PER_EPOCH=4",
                                   "TRAIN.WARMUP=0", "TRAIN.BASE_LR=1e9", "TRAIN.WARMUP_INIT_LR=1e9",
                                   "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.CHECKPOINT_PERIOD=1"),
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode != 0
    err = proc.stderr
    assert "Error: The total loss is nan at step" in err or "Error: The total loss is inf at step" in err
    assert "image_id" in err and "no checkpoint of this state was written" in err
    assert "Traceback" not in err
    assert _checkpoints(tmp_path) == []


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_in_use(dataset, tmp_path):
    # A first run leaves complete checkpoints; then we turn its last one into what a kill during
    # that save would have left: TF writes the data shards under a temporary name and updates the
    # "checkpoint" index only after the files are complete, so a partial save is never pointed at.
    config = ["TRAIN.NUM_GPUS=1", "TRAIN.LR_SCHEDULE=[2,2,2]", "TRAIN.STEPS_PER_EPOCH=8", "TRAIN.CHECKPOINT_PERIOD=1"]
    train(dataset, tmp_path, *config)
    assert _checkpoints(tmp_path) == [8, 16]
    (tmp_path / "model-16.index").unlink()
    (tmp_path / "model-16.data-00000-of-00001").write_bytes(b"\x00" * 50)  # no index: incomplete
    partial = tmp_path / "model-16_temp" / "part-00000-of-00001.data-00000-of-00001"
    partial.parent.mkdir()
    partial.write_bytes(b"\x00" * 100)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model-8"\nall_model_checkpoint_paths: "model-8"\n')
    proc = train(dataset, tmp_path, *config)  # the same command resumes
    out = proc.stdout + proc.stderr
    assert "Resuming from the latest checkpoint in the log directory" in out and "model-8" in out
    assert "Start training with global_step=8" in out
    assert _checkpoints(tmp_path)[-1] == 16
