"""Damaged checkpoints in a real run directory of the tiny model (24 steps, a checkpoint every 8):
a resume takes the newest checkpoint that reads completely and sets newer damaged ones aside
(never deleting them); a directory holding checkpoint files none of which is intact is refused
without writing; a save that fails half-way keeps the earlier checkpoints and names the OS error;
a damaged file given as weights is one line naming it."""
import json
import os
import resource
import shutil
import subprocess

import numpy as np
import pytest

from maskplus.engine import run_dir
from tests.conftest import ROOT
from tests.engine.test_training_interruptions import _checkpoints, _command
from tests.helpers import checkpoint_arrays

pytestmark = [pytest.mark.cli, pytest.mark.slow]

CONFIG = ["TRAIN.LR_SCHEDULE=[1,2,3]", "TRAIN.STEPS_PER_EPOCH=8", "TRAIN.CHECKPOINT_PERIOD=1"]
DATA = "data-00000-of-00001"


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("finished") / "run"
    proc = subprocess.run(_command(dataset, logdir, *CONFIG), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _checkpoints(logdir) == [8, 16, 24]
    return logdir


def _copy(finished_run, tmp_path):
    logdir = tmp_path / "run"
    shutil.copytree(finished_run, logdir)
    return logdir


def _truncate(path, fraction):
    full = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(full * fraction))
    return int(full * fraction), full


def _mb(have, want):
    return f"{have / 1e6:.1f} of {want / 1e6:.1f} MB"


def _snapshot(path):
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def _run(dataset, logdir, *extra, preexec_fn=None):
    return subprocess.run(_command(dataset, logdir, *CONFIG, *extra), capture_output=True, text=True, timeout=900,
                          cwd=ROOT, preexec_fn=preexec_fn)


# ---------------------------------------------------------------------------------- resuming (in-process)
def _plant(logdir, fault):
    """One fault in model-24, the newest checkpoint; returns the reason the resume must give."""
    data, index = logdir / f"model-24.{DATA}", logdir / "model-24.index"
    if fault == "truncated data file":
        have, want = _truncate(data, 0.37)
        return f"model-24 is damaged (data file truncated: {_mb(have, want)}), moved aside to {logdir}/damaged-model-24"
    if fault == "missing index":
        index.unlink()
        return f"model-24 is damaged (index file missing), moved aside to {logdir}/damaged-model-24"
    data.unlink()
    index.unlink()  # the state file still names model-24
    return "the checkpoint state file names model-24, which is gone"


@pytest.mark.parametrize("fault", ["truncated data file", "missing index", "state file naming a gone checkpoint"])
def test_a_resume_takes_the_newest_intact_checkpoint_and_sets_the_damaged_one_aside(
        finished_run, tmp_path, fault, cfg_override):
    from maskplus.engine.trainer import initial_weights
    logdir = _copy(finished_run, tmp_path)
    reason = _plant(logdir, fault)
    kept = {p.name: p.read_bytes() for p in logdir.glob("model-24.*")}  # what the fault left
    identity = json.loads((logdir / "run.json").read_text())["identity"]
    plan = run_dir.open_run_directory(str(logdir), "resume", identity)
    plan.lock.release()
    note = [n for n in plan.notes if "holds this run" in n]
    assert note == [f"Log directory: {logdir} holds this run (its run.json agrees with this command): resuming it "
                    f"from model-16: {reason}."], plan.notes
    # set aside, byte for byte, never deleted; model-16 and model-8 untouched
    aside = logdir / "damaged-model-24"
    assert {p.name: p.read_bytes() for p in aside.glob("*")} == kept
    assert _checkpoints(logdir) == [8, 16]
    # the state file names the checkpoint resumed, so that predict.py --load <logdir> finds it too
    assert 'model_checkpoint_path: "model-16"' in (logdir / "checkpoint").read_text()
    cfg_override({"BACKBONE.WEIGHTS": ""})
    init, step = initial_weights(None, str(logdir))
    assert step == 16 and init.path == str(logdir / "model-16")
    np.testing.assert_array_equal(init.values["global_step"], 16)


# ---------------------------------------------------------------------------------- train.py
def test_a_latest_checkpoint_without_index_and_with_a_truncated_data_file_is_set_aside_and_the_run_resumed(
        dataset, finished_run, tmp_path):
    # what a node crash during model-24's save can leave: its data file cut short, no index
    logdir = _copy(finished_run, tmp_path)
    _truncate(logdir / f"model-24.{DATA}", 0.3)
    (logdir / "model-24.index").unlink()
    proc = _run(dataset, logdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert (f"resuming it from model-16: model-24 is damaged (index file missing), moved aside to "
            f"{logdir}/damaged-model-24.") in out
    assert "Start training with global_step=16" in out and "from scratch" not in out
    assert _checkpoints(logdir) == [8, 16, 24] and (logdir / "damaged-model-24" / f"model-24.{DATA}").exists()
    assert int(checkpoint_arrays(logdir / "model-24")["global_step"]) == 24


def test_a_directory_whose_every_checkpoint_is_damaged_is_refused_and_nothing_is_written(
        dataset, finished_run, tmp_path):
    logdir = _copy(finished_run, tmp_path)
    cuts = {step: _truncate(logdir / f"model-{step}.{DATA}", 0.5) for step in (8, 16, 24)}
    before = _snapshot(logdir)
    proc = _run(dataset, logdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, proc.stderr[-3000:]
    assert error[0].startswith(f"Error: {logdir} holds checkpoint files but no intact checkpoint: "
                               f"model-24 (data file truncated: {_mb(*cuts[24])}); "
                               f"model-16 (data file truncated: {_mb(*cuts[16])}); "
                               f"model-8 (data file truncated: {_mb(*cuts[8])}).")
    assert "nothing was written" in error[0] and "--logdir-action new" in error[0]
    assert _snapshot(logdir) == before


def _file_size_limit(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # a write past it fails with EFBIG
    return apply


def test_a_save_failing_half_way_keeps_the_earlier_checkpoints_and_names_the_os_error(
        dataset, finished_run, tmp_path):
    # the run as it was after its step-8 checkpoint; then a file system that stops taking bytes
    # 40 MB into a file (the graph file and logs are smaller, a checkpoint of this model ~106 MB)
    logdir = _copy(finished_run, tmp_path)
    for step in (16, 24):
        for f in logdir.glob(f"model-{step}.*"):
            f.unlink()
    (logdir / "checkpoint").write_text('model_checkpoint_path: "model-8"\nall_model_checkpoint_paths: "model-8"\n')
    model_8 = checkpoint_arrays(finished_run / "model-8")
    proc = _run(dataset, logdir, preexec_fn=_file_size_limit(40_000_000))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"Error: A checkpoint could not be written to {logdir} at step 16: File too large (EFBIG). Training "
            f"stopped; the checkpoints written before are kept (the newest: {logdir}/model-8).") in proc.stderr
    assert "ulimit -f" in proc.stderr
    # the earlier checkpoint reads back whole and is still the latest; the half-written one is gone
    assert _checkpoints(logdir) == [8] and not list(logdir.glob("model-16*"))
    saved = checkpoint_arrays(logdir / "model-8")
    assert saved.keys() == model_8.keys() and all(np.array_equal(saved[k], model_8[k]) for k in saved)
    assert 'model_checkpoint_path: "model-8"' in (logdir / "checkpoint").read_text()


def test_a_truncated_checkpoint_given_to_load_is_one_line_before_the_log_directory_is_made(
        dataset, finished_run, tmp_path):
    weights = _copy(finished_run, tmp_path)
    have, want = _truncate(weights / f"model-24.{DATA}", 0.6)
    proc = _run(dataset, tmp_path / "new-run", "--load", str(weights / "model-24"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (f"Error: Checkpoint '{weights}/model-24' is damaged: data file truncated: {_mb(have, want)}. The newest "
            f"intact checkpoint beside it is {weights}/model-16.") in proc.stderr
    assert not (tmp_path / "new-run").exists()


def test_predicts_load_names_a_damaged_checkpoint_or_a_state_file_naming_a_gone_one(finished_run, tmp_path):
    from maskplus.engine.checkpoint import CheckpointError
    from maskplus.engine.evaluate import describe_model
    logdir = _copy(finished_run, tmp_path)
    have, want = _truncate(logdir / f"model-24.{DATA}", 0.6)
    for load in (str(logdir), str(logdir / "model-24")):
        with pytest.raises(CheckpointError) as e:
            describe_model(load)
        assert str(e.value) == (f"Checkpoint '{logdir}/model-24' is damaged: data file truncated: {_mb(have, want)}. "
                                f"The newest intact checkpoint beside it is {logdir}/model-16.")
    for f in logdir.glob("model-24.*"):
        f.unlink()
    with pytest.raises(CheckpointError) as e:
        describe_model(str(logdir))
    assert str(e.value) == (f"Directory '{logdir}': its checkpoint state file names {logdir}/model-24, which is "
                            f"gone. It holds model-16, model-8: give one as --load {logdir}/model-16.")

