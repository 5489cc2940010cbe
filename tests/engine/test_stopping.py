"""Stopping a run without losing it: a signal abandons an evaluation, a second signal stops at
once even while the main thread waits inside TensorFlow, a checkpoint that cannot be written is
an error, and whatever ended the main loop early becomes the run's error or exit code. Also:
dataset names become safe file names in the evaluation's outputs."""
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from tensorpack.train.base import StopTraining

from maskplus.compat import tf, tfv1
from maskplus.engine import callbacks as cb
from maskplus.engine.checkpoint import CheckpointError
from tests.conftest import ROOT


def _no_detections(calls):
    def predict(image):
        calls.append(image.shape)
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                np.zeros((0, 28, 28), np.float32))
    return predict


def _evaluation(output_dir, predictor, step=40):
    from config import config as cfg
    from maskplus.engine.evaluate import EvaluationParams
    callback = cb.EvalCallback(str(output_dir), EvaluationParams.from_config(cfg), cfg.TRAINER)
    callback._chief, callback.predictor = True, predictor
    scalars = {}
    callback.trainer = SimpleNamespace(global_step=step, epoch_num=5,
                                       monitors=SimpleNamespace(put_scalar=scalars.__setitem__))
    return callback, scalars


def test_evaluation_outputs_of_a_custom_dataset_name_stay_in_the_log_directory(tiny_coco, cfg_override, tmp_path):
    from maskplus.data.coco import register_dataset
    name = "../evil name"
    register_dataset(name, str(tiny_coco / "annotations" / "instances_train2017.json"), str(tiny_coco / "train2017"))
    cfg_override({"DATA.VAL": (name,), "TRAIN.BOUNDARY_AP": False})
    out = tmp_path / "logs" / "run"
    out.mkdir(parents=True)
    calls = []
    callback, scalars = _evaluation(out, _no_detections(calls))
    callback._trigger_epoch()
    assert len(calls) == 3  # every image evaluated
    written = sorted(os.listdir(out))
    assert len(written) == 2 and all(w.startswith("outputs40-_evil_name-") for w in written), written
    assert sorted(os.listdir(tmp_path / "logs")) == ["run"]
    assert scalars[f"{name}/bbox/AP"] == 0.0
    assert cb.file_name_part("coco_val2017") == "coco_val2017"  # ordinary names unchanged (demo.py reads them)
    assert cb.file_name_part("a/b") != cb.file_name_part("a_b")


def test_an_evaluation_during_training_records_its_model(tiny_coco, cfg_override, tmp_path):
    """The metrics json names the run and step it scores (the table tools tell runs apart by it),
    and the step's checkpoint when one was written before the evaluation."""
    import json
    cfg_override({"DATA.VAL": ("coco_train2017",), "TRAIN.BOUNDARY_AP": False})
    callback, _ = _evaluation(tmp_path, _no_detections([]))
    callback._trigger_epoch()
    with open(tmp_path / "outputs40-coco_train2017-metrics.json") as f:
        model = json.load(f)["model"]
    assert model == {"load": None, "log_directory": str(tmp_path), "checkpoint": None, "global_step": 40,
                     "modified": None}
    (tmp_path / "model-40.index").write_bytes(b"")  # the checkpoint saved at this epoch's end
    callback._trigger_epoch()
    with open(tmp_path / "outputs40-coco_train2017-metrics.json") as f:
        model = json.load(f)["model"]
    assert model["checkpoint"] == str(tmp_path / "model-40") and model["global_step"] == 40 and model["modified"]


def test_a_signal_abandons_the_evaluation_before_its_next_image(tiny_coco, cfg_override, tmp_path):
    cfg_override({"DATA.VAL": ("coco_train2017",)})
    calls = []
    out = tmp_path / "run"
    out.mkdir()
    callback, scalars = _evaluation(out, _no_detections(calls))
    cb.STOP_REQUESTED.set()
    try:
        callback._trigger_epoch()
    finally:
        cb.STOP_REQUESTED.clear()
    assert calls == [] and os.listdir(out) == [] and scalars == {}


class _Saver:
    def __init__(self):
        self.saves = 0

    def trigger(self):
        self.saves += 1


def test_the_first_signal_stops_at_the_next_epoch_start_with_a_checkpoint():
    saver = _Saver()
    handler = signal.getsignal(signal.SIGTERM)
    callback = cb.SaveOnSignal(saver)
    callback.trainer = SimpleNamespace(global_step=7)
    callback._before_train()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 10
        while callback.received is None and time.time() < deadline:
            time.sleep(0.05)
        assert callback.received == "SIGTERM" and cb.STOP_REQUESTED.is_set()
        with pytest.raises(StopTraining):  # e.g. right after an abandoned evaluation
            callback._before_epoch()
        assert saver.saves == 1
    finally:
        callback._after_train()
        cb.STOP_REQUESTED.clear()
    assert signal.getsignal(signal.SIGTERM) is handler and saver.saves == 1


_BLOCKED_IN_TENSORFLOW = """
from types import SimpleNamespace
import maskplus
from maskplus.compat import tf, tfv1
from maskplus.engine.callbacks import SaveOnSignal
callback = SaveOnSignal(SimpleNamespace(trigger=lambda: print("SAVED", flush=True)))
callback._before_train()
queue = tfv1.FIFOQueue(1, tf.float32)
with tfv1.Session() as sess:
    print("waiting for input", flush=True)
    sess.run(queue.dequeue())  # a step whose input never comes
"""


@pytest.mark.slow
@pytest.mark.cli
def test_a_second_signal_stops_at_once_even_while_a_step_waits_inside_tensorflow(tmp_path):
    log = tmp_path / "out.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_IN_TENSORFLOW],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.time() + 120
            while "waiting for input" not in log.read_text() and time.time() < deadline and proc.poll() is None:
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            time.sleep(2)
            assert proc.poll() is None  # the first waits for the step (whose end would save)
            assert "SIGTERM received: stopping after the current step with a checkpoint" in log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        finally:
            proc.kill()
    text = log.read_text()
    assert "Stopped at once on a second SIGTERM: no checkpoint was written for the last steps." in text
    assert "SAVED" not in text and "Traceback" not in text


def test_a_checkpoint_that_cannot_be_written_is_an_error_not_a_log_line(tmp_path):
    logdir = tmp_path / "run"
    with tf.Graph().as_default():
        tfv1.train.get_or_create_global_step()
        tfv1.get_variable("w", [2], initializer=tfv1.zeros_initializer())
        saver = cb.CheckedModelSaver(checkpoint_dir=str(logdir))
        saver.trainer = SimpleNamespace(global_step=12)
        saver._setup_graph()
        with tfv1.Session() as sess, sess.as_default():
            sess.run(tfv1.global_variables_initializer())
            saver.trigger()
            assert saver.last_checkpoint == str(logdir / "model-0")
            os.rename(logdir, tmp_path / "moved")  # the log directory cannot hold files any more
            logdir.write_text("")
            with pytest.raises(CheckpointError, match=r"A checkpoint could not be written to .* at step 12: "):
                saver.trigger()
            # a full disk: TensorFlow's error, which Tensorpack's ModelSaver would only log
            full = tf.errors.ResourceExhaustedError(None, None, "No space left on device")
            saver.saver = SimpleNamespace(save=lambda *a, **k: (_ for _ in ()).throw(full))
            with pytest.raises(CheckpointError, match=r"No space left on device \(ENOSPC\). Training stopped; "):
                saver.trigger()


def test_what_ended_the_main_loop_early_becomes_the_runs_error(cfg_override):
    from maskplus.data.pipeline import LoaderFaultError, LoaderFaults
    from config import config as cfg
    from maskplus.engine.schedules import Schedule
    from maskplus.engine.trainer import TrainingEndedEarly, TrainingInterrupted, raise_what_stopped_training
    cfg_override({"TRAIN.LR_SCHEDULE": [6, 8, 12], "TRAIN.NUM_GPUS": 1, "TRAIN.STEPS_PER_EPOCH": 32,
                  "TRAIN.LR_SCHEDULE_ROUNDING": "step"})  # the schedule ends at step 96
    schedule = Schedule.from_config(cfg)
    saver = cb.CheckedModelSaver.__new__(cb.CheckedModelSaver)
    saver.last_checkpoint = "/logs/run/model-96"
    on_signal = cb.SaveOnSignal(_Saver())
    faults = LoaderFaults(0.5, num_images=10)
    guard = cb.LoaderFaultGuard(faults, saver)
    callbacks = [on_signal, guard, SimpleNamespace(cb=saver)]  # the saver wrapped, as by PeriodicCallback
    raise_what_stopped_training(callbacks, faults, schedule, 96)  # a finished run: nothing
    # the input ended with no reason given (an exception in the data thread: Tensorpack's main
    # loop ends as at the end of the data, and the process would exit 0 with fewer steps)
    with pytest.raises(TrainingEndedEarly, match=r"Training ended at step 40, before the schedule's last step \(96\)"):
        raise_what_stopped_training(callbacks, faults, schedule, 40)
    on_signal.received = "SIGTERM"
    with pytest.raises(TrainingInterrupted, match="Stopped on SIGTERM; the last checkpoint is /logs/run/model-96") as e:
        raise_what_stopped_training(callbacks, faults, schedule, 40)
    assert e.value.signum == signal.SIGTERM
    faults.fail("The data loader could not use ...")
    with pytest.raises(LoaderFaultError, match="the last checkpoint is /logs/run/model-96. Fix or remove"):
        raise_what_stopped_training(callbacks, faults, schedule, 40)
    guard.save_error = CheckpointError("disk full")  # in an after-training save, where Tensorpack only prints
    with pytest.raises(CheckpointError, match="disk full"):
        raise_what_stopped_training(callbacks, faults, schedule, 96)
