"""Long runs must not lose work: SIGTERM saves, SIGKILL resumes from the last checkpoint, and a
non-finite loss stops the run with a message instead of checkpointing NaNs."""
import os
import signal
import subprocess
import sys
import time


from tests.engine.test_training import ROOT, TINY_ARGS, stats, train


def _command(dataset, logdir, *config):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(logdir),
            "--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAIN.NUM_GPUS=1", *config]


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
                                         "TRAIN.STEPS_PER_EPOCH=10000"), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _wait_for(lambda: "Start Epoch 1" in log.read_text(), proc)
        time.sleep(3)
        assert _checkpoints(tmp_path) == []  # nothing saved yet: the epoch is long
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    text = log.read_text()
    assert "SIGTERM received: saving a checkpoint" in text
    saved = _checkpoints(tmp_path)
    assert len(saved) == 1 and saved[0] > 0


def test_a_killed_run_restarted_with_the_same_command_resumes_from_its_checkpoint(dataset, tmp_path):
    config = ["TRAIN.LR_SCHEDULE=[6,7,8]", "TRAIN.STEPS_PER_EPOCH=8", "TRAIN.CHECKPOINT_PERIOD=1"]
    log = tmp_path / "first.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(_command(dataset, tmp_path, *config), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _wait_for(lambda: os.path.exists(tmp_path / "checkpoint") and _checkpoints(tmp_path), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    saved = _checkpoints(tmp_path)[-1]
    assert saved % 8 == 0 and saved < 64
    proc = subprocess.run(_command(dataset, tmp_path, *config), capture_output=True, text=True, timeout=600, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert f"Start training with global_step={saved}" in out
    assert stats(tmp_path)[-1]["global_step"] == 64


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
    # A first run leaves complete checkpoints; then we leave behind what a kill during the next
    # save would: TF writes the data shards under a temporary name and updates the "checkpoint"
    # index only after the files are complete, so a partial save is never pointed at.
    train(dataset, tmp_path, "TRAIN.NUM_GPUS=1", "TRAIN.LR_SCHEDULE=[1,1,1]", "TRAIN.STEPS_PER_EPOCH=8",
          "TRAIN.CHECKPOINT_PERIOD=1")
    assert _checkpoints(tmp_path) == [8]
    partial = tmp_path / "model-16_temp" / "part-00000-of-00001.data-00000-of-00001"
    partial.parent.mkdir()
    partial.write_bytes(b"\x00" * 100)
    (tmp_path / "model-16.data-00000-of-00001").write_bytes(b"\x00" * 50)  # no index: incomplete
    proc = train(dataset, tmp_path, "TRAIN.NUM_GPUS=1", "TRAIN.LR_SCHEDULE=[2,2,2]", "TRAIN.STEPS_PER_EPOCH=8",
                 "TRAIN.CHECKPOINT_PERIOD=1")
    out = proc.stdout + proc.stderr
    assert "Resuming from the latest checkpoint in the log directory" in out and "model-8" in out
    assert "Start training with global_step=8" in out
    assert _checkpoints(tmp_path)[-1] == 16
