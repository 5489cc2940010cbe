"""A log directory is one experiment: which config differences block a resume, what each
--logdir-action does with an existing directory, the lock. (A time budget's refits, which change
only the schedule run.json records: tests/engine/test_time_budget.py.)"""
import json
import os

import pytest

from maskplus.engine import run_dir
from maskplus.engine.run_dir import LogdirError, open_run_directory, run_identity
from tests.helpers import write_checkpoint

CONFIG = {"TRAIN": {"BASE_LR": 0.01, "LR_SCHEDULE": [2, 3, 4], "EVAL_PERIOD": 50, "CHECKPOINT_PERIOD": 20},
          "DATA": {"BASEDIR": "/data/coco", "NUM_WORKERS": 4, "VAL": ["coco_val2017"], "SEED": 0,
                   "CUSTOM": {}},
          "BACKBONE": {"WEIGHTS": "/data/ImageNet-R50-AlignPadding.npz", "NORM": "FreezeBN"},
          "TEST": {"RESULT_SCORE_THRESH": 0.05}}
DATA = {"coco_train2017": "sha256:0123456789abcdef"}


def identity(preset="baseline", load=None, minutes=None, data=DATA, **changes):
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        config[group][key] = value
    return run_identity(config, preset, load, minutes, data)


def test_harmless_keys_and_moved_files_do_not_change_a_runs_identity():
    assert identity() == identity(DATA__NUM_WORKERS=0, DATA__VAL=["other"], TRAIN__EVAL_PERIOD=0,
                                  TRAIN__CHECKPOINT_PERIOD=1, TEST__RESULT_SCORE_THRESH=0.5,
                                  DATA__BASEDIR="/moved/coco", minutes=None,
                                  BACKBONE__WEIGHTS="/elsewhere/ImageNet-R50-AlignPadding.npz")
    # a time budget's length differs on every resume: only whether there is one counts
    assert identity(minutes=14.2) == identity(minutes=3.0) != identity()


def test_what_changes_the_model_data_schedule_or_label_is_named_old_to_new():
    old = identity()
    new = identity(preset="deconv-pyramid", TRAIN__BASE_LR=0.02, DATA__SEED=1, load="/x/COCO-R50.npz",
                   data={"coco_train2017": "sha256:fedcba9876543210"},
                   BACKBONE__WEIGHTS="/data/ImageNet-R101-AlignPadding.npz")
    diff = run_dir.differences(old, new)
    assert sorted(diff) == sorted([
        "TRAIN.BASE_LR 0.01 -> 0.02", "DATA.SEED 0 -> 1", "--preset 'baseline' -> 'deconv-pyramid'",
        "--load None -> 'COCO-R50.npz'", "training data {'coco_train2017': 'sha256:0123456789abcdef'} -> "
        "{'coco_train2017': 'sha256:fedcba9876543210'}",
        "BACKBONE.WEIGHTS 'ImageNet-R50-AlignPadding.npz' -> 'ImageNet-R101-AlignPadding.npz'"])


def _finished_run(path, ident):
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"preset": "baseline", "config": CONFIG, "identity": ident}))
    (path / "checkpoint").write_text('model_checkpoint_path: "model-16"\n')
    write_checkpoint(path / "model-16")
    (path / "log.log").write_text("the old run's log\n")
    return path


def _snapshot(path):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_another_run_is_refused_naming_the_differences_and_nothing_is_written(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    before = _snapshot(logdir)
    with pytest.raises(LogdirError) as e:
        open_run_directory(str(logdir), "resume", identity(preset="deconv-pyramid", TRAIN__BASE_LR=0.02))
    message = str(e.value)
    assert "\n" not in message
    assert "TRAIN.BASE_LR 0.01 -> 0.02" in message and "--preset 'baseline' -> 'deconv-pyramid'" in message
    assert "nothing was written" in message and "--logdir-action new" in message
    assert _snapshot(logdir) == before and sorted(os.listdir(tmp_path)) == ["run"]


def test_checkpoints_without_a_record_are_not_resumed(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    (logdir / "run.json").unlink()
    with pytest.raises(LogdirError, match="holds checkpoints but no run.json"):
        open_run_directory(str(logdir), "resume", identity())


def test_the_same_run_resumes_and_the_lock_keeps_a_second_live_run_out(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    plan = open_run_directory(str(logdir), "resume", identity(DATA__NUM_WORKERS=0))
    try:
        assert plan.resume and plan.path == str(logdir)
        lock = json.loads((logdir / "train.lock").read_text())
        assert lock["pid"] == os.getpid()
        for action in ("resume", "backup", "delete"):
            with pytest.raises(LogdirError, match=f"in use by a training run that is still going .pid {os.getpid()}"):
                open_run_directory(str(logdir), action, identity())
        assert (logdir / "model-16.index").exists()
        other = open_run_directory(str(logdir), "new", identity())  # leaves the live run alone
        other.lock.release()
        assert other.path.startswith(str(logdir) + "-") and not other.resume
    finally:
        plan.lock.release()
    assert not (logdir / "train.lock").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_message(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    # what a SIGKILLed run leaves: the file, but no process holding its flock any more
    (logdir / "train.lock").write_text(json.dumps({"pid": 999999, "host": "gpu7", "started": "2026-01-02T03:04:05"}))
    plan = open_run_directory(str(logdir), "resume", identity())
    plan.lock.release()
    assert any("taking over the lock left by a run that ended without releasing it (pid 999999 on host gpu7" in n
               for n in plan.notes), plan.notes


@pytest.mark.parametrize("action", ["backup", "delete", "new"])
def test_the_other_actions_start_afresh_and_say_where_the_old_run_is(tmp_path, action):
    logdir = _finished_run(tmp_path / "run", identity())
    before = _snapshot(logdir)
    plan = open_run_directory(str(logdir), action, identity(TRAIN__BASE_LR=0.02))
    plan.lock.release()
    assert not plan.resume and not run_dir.has_checkpoint(plan.path)
    others = sorted(p for p in os.listdir(tmp_path) if p != "run")
    if action == "backup":
        assert plan.path == str(logdir) and len(others) == 1 and others[0].startswith("run-")
        moved = tmp_path / others[0]
        assert {p.relative_to(moved) for p in moved.rglob("*")} == {p.relative_to(logdir) for p in before}
    elif action == "delete":
        assert plan.path == str(logdir) and others == [] and os.listdir(logdir) == []
    else:
        assert plan.path == str(tmp_path / others[0]) and _snapshot(logdir) == before
    assert str(tmp_path / (others[0] if others else "run")) in " ".join(plan.notes) or action == "delete"


def test_backup_or_delete_never_touch_the_working_directory(tmp_path, monkeypatch):
    logdir = _finished_run(tmp_path / "run", identity())
    (logdir / "sub").mkdir()
    monkeypatch.chdir(logdir / "sub")
    for action in ("backup", "delete"):
        with pytest.raises(LogdirError, match="holds the working directory"):
            open_run_directory(str(logdir), action, identity())
    assert (logdir / "model-16.index").exists()


def test_a_log_directory_that_cannot_be_written_is_an_error_before_training(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LogdirError, match="Cannot create the log directory"):
        open_run_directory(str(tmp_path / "file" / "run"), "resume", identity())
    with pytest.raises(LogdirError, match="is a file, not a directory"):
        open_run_directory(str(tmp_path / "file"), "resume", identity())


def test_missing_initial_weights_are_found_before_the_log_directory_is_touched(tmp_path, cfg_override):
    from maskplus.engine.checkpoint import CheckpointError
    from maskplus.engine.trainer import check_initial_weights
    cfg_override({"BACKBONE.WEIGHTS": str(tmp_path / "ImageNet-R50-AlignPadding.npz")})
    with pytest.raises(CheckpointError, match="ImageNet-R50-AlignPadding.npz' does not exist"):
        check_initial_weights(None, str(tmp_path / "run"), "resume")
    with pytest.raises(CheckpointError, match="'/nowhere/model-5000' does not exist"):
        check_initial_weights("/nowhere/model-5000", str(tmp_path / "run"), "resume")
    # a run resumed from its checkpoint reads neither
    logdir = _finished_run(tmp_path / "run", identity())
    check_initial_weights("/nowhere/model-5000", str(logdir), "resume")
    with pytest.raises(CheckpointError):
        check_initial_weights("/nowhere/model-5000", str(logdir), "new")


def test_a_run_whose_state_file_names_a_gone_checkpoint_is_refused_rather_than_trained_from_scratch(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    for f in logdir.glob("model-16.*"):
        f.unlink()  # only the state file naming it is left
    before = _snapshot(logdir)
    with pytest.raises(LogdirError, match=r"holds checkpoint files but no intact checkpoint: the checkpoint state "
                                          r"file names model-16, which is gone\. Resuming would train from scratch"):
        open_run_directory(str(logdir), "resume", identity())
    assert _snapshot(logdir) == before


def _truncate(path, keep):
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_a_damaged_newest_checkpoint_is_set_aside_byte_for_byte_and_the_one_before_resumed(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())  # model-16 (60 + 8 bytes of data), state names it
    write_checkpoint(logdir / "model-8", step=8)
    data = logdir / "model-16.data-00000-of-00001"
    _truncate(data, 41)
    kept = {p.name: p.read_bytes() for p in logdir.glob("model-16.*")}
    plan = open_run_directory(str(logdir), "resume", identity())
    plan.lock.release()
    assert plan.checkpoint == str(logdir / "model-8")
    assert (f"resuming it from model-8: model-16 is damaged (data file truncated: 41 of 68 bytes), moved aside to "
            f"{logdir}/damaged-model-16.") in " ".join(plan.notes)
    assert {p.name: p.read_bytes() for p in (logdir / "damaged-model-16").iterdir()} == kept
    assert not list(logdir.glob("model-16.*"))
    assert 'model_checkpoint_path: "model-8"' in (logdir / "checkpoint").read_text()


def test_the_first_weights_are_the_newest_intact_checkpoint_even_before_a_damaged_one_is_set_aside(
        tmp_path, cfg_override):
    from maskplus.engine.trainer import initial_weights
    logdir = _finished_run(tmp_path / "run", identity())
    write_checkpoint(logdir / "model-8", step=8)
    (logdir / "model-16.index").unlink()
    cfg_override({"BACKBONE.WEIGHTS": ""})
    init, step = initial_weights(None, str(logdir))
    assert step == 8 and init.path == str(logdir / "model-8")


def test_a_run_whose_every_checkpoint_is_damaged_is_refused_and_nothing_is_written(tmp_path):
    logdir = _finished_run(tmp_path / "run", identity())
    write_checkpoint(logdir / "model-8", step=8)
    (logdir / "model-8.index").unlink()
    _truncate(logdir / "model-16.data-00000-of-00001", 30)
    before = _snapshot(logdir)
    with pytest.raises(LogdirError) as e:
        open_run_directory(str(logdir), "resume", identity())
    assert str(e.value).startswith(f"{logdir} holds checkpoint files but no intact checkpoint: model-16 (data file "
                                   f"truncated: 30 of 68 bytes); model-8 (index file missing). Resuming would train "
                                   f"from scratch over them, so nothing was written.")
    assert "--logdir-action new" in str(e.value)
    assert _snapshot(logdir) == before and not (logdir / "train.lock").exists()
