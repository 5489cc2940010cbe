"""train.py refuses, before writing anything and with one clear line (no traceback), what would
cost a run later or put a result under another run's label: another run's log directory,
validation data that cannot be evaluated, nonsense config numbers."""
import os
import subprocess
import sys

from tests.conftest import ROOT
from tests.engine.test_training import TINY_ARGS
from tests.helpers import config_snapshot


def _train(dataset, logdir, *args, config=()):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(logdir), *args,
           "--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAIN.NUM_GPUS=1", *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _record_a_finished_run(dataset, logdir, preset, config):
    """run.json and checkpoint files as train.py leaves them after a run of ``config``."""
    from config import config as cfg
    from maskplus.cli import finalize
    from maskplus.engine import trainer
    with config_snapshot():
        cfg.update_args([f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAIN.NUM_GPUS=1", *config])
        finalize(is_training=True)
        identity = trainer.identity_of_this_run(preset, None, None)
        os.makedirs(logdir)
        trainer.write_run_info(str(logdir), preset, identity)
    (logdir / "checkpoint").write_text('model_checkpoint_path: "model-16"\n')
    (logdir / "model-16.index").write_bytes(b"\x00" * 10)


def _files(path):
    return {p: p.read_bytes() for p in path.rglob("*")}


def test_another_runs_log_directory_is_refused_naming_the_differences(dataset, tmp_path):
    logdir = tmp_path / "baseline"
    _record_a_finished_run(dataset, logdir, None, ["TRAIN.BASE_LR=0.01"])
    before = _files(logdir)
    proc = _train(dataset, logdir, "--preset", "deconv-pyramid", config=["TRAIN.BASE_LR=0.02"])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    # the preset's own keys apply under the command's --config overrides: those that differ are named
    assert "TRAIN.BASE_LR 0.01 -> 0.02" in errors[0] and "--preset None -> 'deconv-pyramid'" in errors[0]
    assert "MASKPLUS.DECONV_PYRAMID False -> True" in errors[0]
    assert "nothing was written" in errors[0] and "--logdir-action" in errors[0]
    assert _files(logdir) == before  # run.json (the table's label) untouched, no log, no lock
    assert os.listdir(tmp_path) == ["baseline"]


def test_validation_data_that_cannot_be_evaluated_stops_the_run_before_its_first_step(dataset, tmp_path):
    # evaluations every epoch, on a split that does not exist: found now, not at the first evaluation
    proc = _train(dataset, tmp_path / "run", config=["DATA.VAL=coco_val2017", "TRAIN.EVAL_PERIOD=1"])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Error: DATA.VAL ['coco_val2017'] cannot be evaluated" in proc.stderr
    assert "Unknown dataset 'coco_val2017'. Available: coco_train2017" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_nonsense_config_numbers_are_one_config_error_line():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--print-config", "--config",
                           "TRAIN.STEPS_PER_EPOCH=0", "TRAIN.CHECKPOINT_PERIOD=-1", "RPN.POSITIVE_ANCHOR_THRESH=1.5"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "Config error: Invalid configuration:" in proc.stderr
    assert "TRAIN.STEPS_PER_EPOCH=0: must be an integer >= 1." in proc.stderr
    assert "TRAIN.CHECKPOINT_PERIOD=-1: must be an integer >= 1 (epochs)." in proc.stderr
    assert "RPN.POSITIVE_ANCHOR_THRESH=1.5: must be a number in (0, 1]." in proc.stderr
