"""Resume after SIGKILL and after SIGTERM: the resumed run starts from exactly the checkpoint's
state (weights, momentum slots, gradient-accumulation sums and counter), with the learning rate
and mask_loss_alpha of the schedule at that step, and ends at the schedule's last step.

One chain of runs on one log directory, 32 steps of 1 tower with accumulation to 8 (so an
update every 8 steps), epochs of 16 steps, lr x0.1 at step 16 and alpha 1.5 -> 1.0 at step 24:
run A is killed (SIGKILL) after its step-16 checkpoint, its loader processes (DATA.NUM_WORKERS=4,
the default users get) must end with it; run B, the same command, resumes from it and gets SIGTERM
in the middle of its epoch (checkpoint at a step s between 16 and 32); run C resumes from s and
must stop at 32, not run a whole epoch to s + 16. Each run dumps the state it starts from
(MASKPLUS_DUMP_VARIABLES), which is compared with the checkpoint it resumed.
"""
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from maskplus.engine.callbacks import DUMP_VARIABLES_ENV
from tests.engine.test_training import ROOT
from tests.helpers import checkpoint_arrays
from tests.engine.test_training_interruptions import (_checkpoints, _command, _loader_processes, _wait_for,
                                                      _wait_until_gone)

BASE_LR = 0.02
CONFIG = ["TRAIN.LR_SCHEDULE=[2,4,4]", "TRAIN.STEPS_PER_EPOCH=16", "TRAIN.CHECKPOINT_PERIOD=1",
          f"TRAIN.BASE_LR={BASE_LR}", "TRAIN.WARMUP=2", "TRAIN.GRADIENT_ACCUMULATION=True",
          "MASKPLUS.BIASED_TRAINING=True", "MASKPLUS.MASK_LOSS_ALPHA=[[0,1.5],[3,1.0]]", "DATA.NUM_WORKERS=4"]
FIRST_EPOCH, LAST = 16, 32
COUNTER = "apply_gradients/AccumGrad/counter"  # the accumulation's step counter


def expected_lr(step):
    # after the 2-step warm-up; LR_SCHEDULE [2, 4, 4] drops x0.1 at steps 16 and 32 (its end)
    return BASE_LR * 0.1 ** ((step >= 16) + (step >= 32))


def expected_alpha(step):
    return 1.5 if step < 24 else 1.0


def _start(dataset, logdir, name):
    log = open(logdir / f"{name}.txt", "w")
    env = dict(os.environ, **{DUMP_VARIABLES_ENV: str(logdir / f"dump-{name}")})
    return subprocess.Popen(_command(dataset, logdir, *CONFIG), stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, env=env), logdir / f"{name}.txt"


def _dump(logdir, name, suffix="-start"):
    with np.load(logdir / f"dump-{name}" / f"variables-rank0{suffix}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def chain(dataset, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("resume")
    proc, _ = _start(dataset, logdir, "a")
    _wait_for(lambda: FIRST_EPOCH in _checkpoints(logdir) and os.path.exists(logdir / "checkpoint"), proc)
    loaders = len(_loader_processes(proc))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # no handler runs on SIGKILL: the loader processes end by their parent-death signal
    orphans = _wait_until_gone(logdir)
    assert _checkpoints(logdir) == [FIRST_EPOCH]

    proc, log_b = _start(dataset, logdir, "b")
    _wait_for(lambda: "Start Epoch 2" in log_b.read_text(), proc)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, log_b.read_text()[-3000:]  # stopped, not finished
    mid = _checkpoints(logdir)[-1]
    assert FIRST_EPOCH < mid < LAST, (mid, log_b.read_text()[-2000:])  # stopped mid-epoch

    proc, log_c = _start(dataset, logdir, "c")
    assert proc.wait(timeout=600) == 0, log_c.read_text()[-3000:]
    return logdir, mid, {"loaders": loaders, "orphans": orphans}


@pytest.mark.slow
@pytest.mark.cli
def test_a_killed_run_leaves_no_loader_and_the_same_command_resumes_from_its_checkpoint(chain):
    logdir, _, killed = chain
    assert killed == {"loaders": 4, "orphans": []}
    text = (logdir / "b.txt").read_text()
    assert f"Start training with global_step={FIRST_EPOCH}" in text
    assert "taking over the lock left by a run that ended without releasing it" in text
    assert f"Weights: resuming from the log directory's latest checkpoint {logdir / f'model-{FIRST_EPOCH}'}" in text


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize("run, which", [("b", "sigkill"), ("c", "sigterm")])
def test_a_resumed_run_starts_from_the_checkpoints_whole_state(chain, run, which):
    logdir, mid, _ = chain
    step = FIRST_EPOCH if which == "sigkill" else mid
    saved, start = checkpoint_arrays(logdir / f"model-{step}"), _dump(logdir, run)
    assert int(start["global_step"]) == int(saved["global_step"]) == step
    # every variable of the checkpoint, optimizer state included, is what the run starts from
    differ = [n for n in saved if n in start and not np.array_equal(start[n], saved[n])
              and n not in ("learning_rate", "mask_loss_alpha")]
    assert differ == []
    momentum = [n for n in saved if n.endswith("/Momentum")]
    accumulated = [n for n in saved if n.endswith("/AccumGrad")]
    assert len(momentum) > 50 and len(accumulated) == len(momentum)
    assert all(n in start for n in momentum + accumulated + [COUNTER])
    # real state, not fresh zeros: updates happened at steps 8 and 16; sums of the steps after the last
    assert sum(np.any(saved[n] != 0) for n in momentum) > 0.75 * len(momentum)
    assert int(start[COUNTER]) == step
    if step % 8:
        assert sum(np.any(start[n] != 0) for n in accumulated) > 0.75 * len(accumulated)
    else:
        assert not any(np.any(start[n] != 0) for n in accumulated)  # just applied and cleared
    # the schedules continue at the resumed step
    assert float(start["learning_rate"]) == pytest.approx(expected_lr(step), rel=1e-6)
    assert float(start["mask_loss_alpha"]) == pytest.approx(expected_alpha(step))


@pytest.mark.slow
@pytest.mark.cli
def test_the_chain_ends_at_the_schedules_last_step(chain):
    logdir, mid, _ = chain
    assert _checkpoints(logdir)[-1] == LAST
    end = _dump(logdir, "c", suffix="")
    assert int(end["global_step"]) == LAST  # not mid + 16
    assert float(end["learning_rate"]) == pytest.approx(expected_lr(LAST), rel=1e-6)
    assert float(end["mask_loss_alpha"]) == 1.0
    text = (logdir / "c.txt").read_text()
    assert f"Start training with global_step={mid}" in text


@pytest.mark.parametrize("step, expected", [(0, 16), (16, 16), (17, 15), (24, 8), (31, 1)])
def test_epochs_end_on_the_grid_of_steps_per_epoch(step, expected):
    from maskplus.engine.callbacks import epoch_length
    assert epoch_length(step, 16, 32) == expected


def test_a_last_step_inside_an_epoch_ends_the_last_epoch_there():
    from maskplus.engine.callbacks import epoch_length
    assert [epoch_length(s, 100, 860) for s in (0, 700, 800)] == [100, 100, 60]
