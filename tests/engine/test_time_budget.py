"""Time-budgeted training: the schedule fitted to a fake step rate, and a real run on a budget."""
import json
import subprocess
import sys
import time

import pytest

from maskplus.engine.time_budget import Plan, describe_evaluations, plan_for, refit, run_shape, steps_that_fit
from maskplus.presets import PRESETS

from tests.conftest import ROOT


def demo_shape(eval_period=None):
    """The shape of the demo preset's 600-step run, read from its overrides like the config would;
    ``eval_period`` (epochs) replaces the preset's (which evaluates at the end only)."""
    values = dict(arg.split("=", 1) for arg in PRESETS["demo-cpu"])
    lr = eval(values["TRAIN.LR_SCHEDULE"])
    alpha = eval(values["MASKPLUS.MASK_LOSS_ALPHA"])
    steps_per_epoch = int(values["TRAIN.STEPS_PER_EPOCH"])
    eval_period = eval_period or int(values["TRAIN.EVAL_PERIOD"])
    return run_shape(lr, alpha, eval_every=eval_period * steps_per_epoch, factor=8)


def test_the_demo_shape_is_its_fractions():
    shape = demo_shape()
    assert [round(f, 4) for f in shape.lr_fractions] == [0.88, 0.97]
    assert [(round(f, 4), v) for f, v in shape.alpha] == [(0.0, 1.5), (0.3333, 1.0)]
    assert shape.eval_fractions == (1.0,)  # one evaluation, at the end
    # with --config TRAIN.EVAL_PERIOD=2 (the shape the tests below fit): every 200 of the 600 steps
    assert [round(f, 4) for f in demo_shape(eval_period=2).eval_fractions] == [0.3333, 0.6667, 1.0]


def test_a_fake_step_rate_gives_the_boundaries_switch_and_evaluations():
    shape = demo_shape(eval_period=2)
    # calibrated at step 25 with 10 min left, 1.0 s/step, 30 s per evaluation, 3 evaluations to
    # come: (600 - 3 * 30) / 1.0 = 510 more steps, 535 in all
    total = 25 + steps_that_fit(600, 1.0, 30, 3)
    assert total == 535
    plan = refit(plan_for(600, shape), 25, total, shape)
    # 0.88 * 535 = 470.8, 0.97 * 535 = 518.95, 535 / 3 = 178.3, 2 * 535 / 3 = 356.7
    assert plan == Plan(535, (471, 519), ((0, 1.5), (178, 1.0)), (178, 357, 535))
    # twice the step time: (600 - 90) / 2 = 255 steps after the calibration
    assert refit(plan, 25, 25 + steps_that_fit(600, 2.0, 30, 3), shape) == \
        Plan(280, (246, 272), ((0, 1.5), (93, 1.0)), (93, 187, 280))


def test_the_console_names_the_evaluations_before_the_end():
    assert describe_evaluations(Plan(535, (471, 519), ((0, 1.5), (178, 1.0)), (178, 357, 535))) == \
        "evaluated at steps 178, 357 and the end"
    # an evaluation period longer than the run: the end only (and a repeated step is named once)
    assert describe_evaluations(Plan(1292, (1137, 1253), ((0, 1.5), (431, 1.0)), (1292, 1292))) == \
        "evaluated at the end"


def test_a_refit_keeps_what_has_happened_and_moves_the_rest():
    shape = demo_shape(eval_period=2)
    plan = plan_for(535, shape)
    # after the first evaluation (step 178) the run turns out to have room for 600 steps: the
    # switch at 178 and the first evaluation stay, the rest moves to 0.88 / 0.97 / 2/3 / 1 of 600
    assert refit(plan, 178, 600, shape) == Plan(600, (528, 582), ((0, 1.5), (178, 1.0)), (178, 400, 600))
    # after the second one (step 357) only 380 fit: 0.88 * 380 = 334 has passed, so the drop is now
    assert refit(plan, 357, 380, shape) == Plan(380, (358, 369), ((0, 1.5), (178, 1.0)), (178, 357, 380))
    # no time left at all: the run ends where it is, the evaluation due at its end just happened
    assert refit(plan, 357, 300, shape) == Plan(357, (357, 357), ((0, 1.5), (178, 1.0)), (178, 357, 357))


def test_steps_that_fit_never_go_negative():
    assert steps_that_fit(50, 1.0, 30, 3) == 0
    assert steps_that_fit(100, 0.5, 10, 2) == 160


@pytest.mark.slow
@pytest.mark.cli
def test_a_run_on_a_tiny_budget_ends_near_it_with_its_schedule_and_last_evaluation(dataset, tmp_path):
    from tests.engine.test_training import TINY_ARGS
    budget = 1.2  # minutes from the start of training (after Python's imports)
    config = [a for a in TINY_ARGS if not a.startswith("TRAIN.EVAL_PERIOD")] + [
        "TRAIN.EVAL_PERIOD=1", "TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.BASE_LR=0.02",
        "TRAIN.WARMUP=8", "TRAIN.LR_SCHEDULE=[2.64,2.91,3]", "TRAIN.STEPS_PER_EPOCH=8",
        "MASKPLUS.BIASED_TRAINING=True", "MASKPLUS.MASK_LOSS_ALPHA=[[0,1.5],[1,1.0]]"]
    start = time.time()
    proc = subprocess.run([sys.executable, "train.py", "--logdir", str(tmp_path), "--minutes", str(budget),
                           "--config", f"DATA.BASEDIR={dataset}", *config],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.time() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the budget starts after the imports (a few seconds) and the process ends a little after it
    # (the last evaluation and checkpoint, the clean-up; more on a loaded machine)
    fits = [line for line in proc.stdout.splitlines() if "Time budget at step" in line]
    assert 60 * budget - 10 < elapsed < 60 * budget + 45, (elapsed, fits)
    with open(tmp_path / "run.json") as f:
        info = json.load(f)
    assert info["config"]["TRAIN"]["LR_SCHEDULE"] == [2.64, 2.91, 3]  # the config as finalised, never refitted
    drops, total = info["schedule"]["drop_steps"], info["schedule"]["total_steps"]  # the last refit's
    assert info["refits"][-1]["total_steps"] == total and len(info["refits"]) >= 2
    assert total > 25  # beyond the 25 calibration steps, by 24 at 3 steps a second
    with open(tmp_path / "stats.json") as f:
        stats = json.load(f)
    assert stats[-1]["global_step"] == total and (tmp_path / f"model-{total}.index").is_file()
    assert (tmp_path / f"outputs{total}-coco_train2017-metrics.json").is_file()  # the last evaluation at the end
    evaluations = [e["global_step"] for e in stats if "coco_train2017/segm/AP" in e]
    assert evaluations[-1] == total and len(evaluations) <= 3
    # the learning rate dropped twice (x0.01) near the end, at the fitted boundaries
    assert 0.75 * total <= drops[0] <= drops[1] <= total
    lr = [(e["global_step"], e["learning_rate"]) for e in stats if "learning_rate" in e]
    assert abs(lr[-1][1] - 0.0002) < 1e-9 and lr[-1][0] >= 0.75 * total, lr


def drive(budget, clock):
    """Run ``budget`` like Tensorpack's loop on the fake ``clock``: 0.5 s steps for 200 steps, then
    0.8 s (the mask branch finds more RoIs), 20 s per evaluation. Returns (the epochs' lengths,
    the evaluation steps, the last step)."""
    from types import SimpleNamespace
    from tensorpack.train.base import StopTraining
    evaluated, epochs = [], []
    budget.trainer = trainer = SimpleNamespace(global_step=0, loop=SimpleNamespace(steps_per_epoch=None))
    budget._before_train()
    for _ in range(100):  # epochs; the budget must stop the run long before
        try:
            budget._before_epoch()
        except StopTraining:
            break
        epochs.append(trainer.loop.steps_per_epoch)
        for _ in range(trainer.loop.steps_per_epoch):
            clock[0] += 0.5 if trainer.global_step < 200 else 0.8
            trainer.global_step += 1
            budget._trigger_step()
        budget._after_epoch()
        if budget.is_evaluation_step(trainer.global_step):
            evaluated.append(trainer.global_step)
            clock[0] += 20.0
        budget._trigger_epoch()
    else:
        raise AssertionError("the time budget never stopped the run")
    return epochs, evaluated, trainer.global_step


def test_the_callback_on_a_fake_clock_ends_on_time_with_its_events_in_place(monkeypatch):
    """TimeBudget driven like Tensorpack's loop, on a fake clock: 0.5 s steps for 200 steps, then
    0.8 s (the mask branch finds more RoIs), 20 s per evaluation, a 10-minute deadline."""
    from maskplus.engine import time_budget

    clock = [1000.0]
    monkeypatch.setattr(time_budget.time, "time", lambda: clock[0])
    shape = demo_shape(eval_period=2)
    applied = []
    budget = time_budget.TimeBudget(clock[0] + 600, shape, plan_for(600, shape), applied.append,
                                    eval_seconds=lambda s: 40.0, grain=100)
    epochs, evaluated, end = drive(budget, clock)
    plan = applied[-1]
    assert epochs[0] == 25 and max(epochs) <= 100  # the calibration epoch, then epochs of <= 100 steps
    assert end == plan.total and evaluated == sorted(set(plan.eval_steps)) and evaluated[-1] == end
    assert len(evaluated) == 3
    # ends on time, its last evaluation included: the step time is steady within each phase, so
    # the refits leave a few steps' drift at most (a last evaluation left out of the fit is 20 s)
    assert 1600 - 5 <= clock[0] <= 1600 + 5, clock[0]
    # the events sit at their fractions of the final length (those already passed stay where they were)
    assert plan.lr_boundaries == (round(0.88 * end), round(0.97 * end))
    assert abs(evaluated[1] - 2 * end / 3) <= 60 and plan.alpha[1][0] == evaluated[0]


def test_a_budgets_refits_change_the_schedule_the_setters_read_never_the_config(monkeypatch, tmp_path, dataset):
    """Nothing writes the config after finalisation: the trainer's callbacks and a time budget's
    refits replace the schedule the learning-rate and alpha setters read; run.json keeps the
    finalised config, records each refit and the schedule in effect, and still resumes."""
    import copy
    from config import config as cfg
    from maskplus.data.coco import register_coco
    from maskplus.engine import run_dir, time_budget, trainer
    from maskplus.engine.schedules import StepScheduleSetter
    from tests.helpers import config_snapshot, configure

    clock = [1000.0]
    monkeypatch.setattr(time_budget.time, "time", lambda: clock[0])
    register_coco(dataset)
    overrides = {"DATA.TRAIN": ("coco_train2017",), "TRAIN.EVAL_PERIOD": 0, "TRAIN.NUM_GPUS": 2,
                 "TRAIN.BASE_LR": 0.01, "TRAIN.WARMUP": 4, "TRAIN.LR_SCHEDULE": [2.64, 2.91, 3],
                 "TRAIN.STEPS_PER_EPOCH": 100, "MASKPLUS.BIASED_TRAINING": True,
                 "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.5], [1, 1.0]]}
    with config_snapshot():
        configure(overrides, class_names=("cat", "dog"))
        finalised = copy.deepcopy(cfg.to_dict())
        command = trainer.identity_of_this_run("demo-cpu", None, 14.0)
        budget = trainer.make_time_budget(clock[0] + 600, lambda b: trainer.write_run_info(
            str(tmp_path), "demo-cpu", command, b.schedule, b.refits))
        setters = {c.var_name: c for c in trainer.make_callbacks(str(tmp_path), budget)
                   if isinstance(c, StepScheduleSetter)}
        lr, alpha = setters["learning_rate"].value_at, setters["mask_loss_alpha"].value_at
        # before the calibration: the configured schedule at 2 towers (4 real steps per batch-8 step),
        # its drops on exact steps (int(2.64 * 4) = 10, int(2.91 * 4) = 11), not at epoch starts
        assert (lr(9), lr(10), lr(11), alpha(3), alpha(4)) == (
            0.01, pytest.approx(0.001), pytest.approx(0.0001), 1.5, 1.0)
        drive(budget, clock)
        assert cfg.to_dict() == finalised and cfg._frozen
        resuming = trainer.identity_of_this_run("demo-cpu", None, 9.5)
    plan = budget.plan
    assert len(budget.refits) >= 3 and plan.total > 500  # about 1000 steps fit in 10 minutes at 0.5-0.8 s
    # the setters follow the last refit: its boundaries (the plan's, a pure function of the run's shape)
    (first, second), ((_, a0), (switch, a1)) = plan.lr_boundaries, plan.alpha
    assert (lr(first - 1), lr(first), lr(second)) == (0.01, pytest.approx(0.001), pytest.approx(0.0001))
    assert (alpha(switch - 1), alpha(switch), a0, a1) == (1.5, 1.0, 1.5, 1.0)
    with open(tmp_path / "run.json") as f:
        info = json.load(f)
    assert info["config"] == json.loads(json.dumps(finalised))
    assert info["schedule"]["total_steps"] == plan.total and info["schedule"]["drop_steps"] == [first, second]
    assert info["refits"] == budget.refits and info["refits"][-1]["total_steps"] == plan.total
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "model-{plan.total}"\n')
    run_dir.check_resumable(str(tmp_path), resuming)  # a resume with the time left is the same run
