"""Schedules with several towers, where the factor 8 / towers is not 1 (values by hand).

The README's rule: schedule steps count steps at a total batch of 8 images; a run of ``n`` towers
(one image each) takes 8 / n real steps for each of them. The warm-up is in real steps and is not
rescaled. With ``TRAIN.LR_SCHEDULE_ROUNDING=step`` the drops and the end are at the exact real
steps; with ``epoch`` (the example) at the start of the epoch they fall in, the end rounded down
to whole epochs.
"""
import pytest

from config import config as cfg
from tests.helpers import config_snapshot, configure
from maskplus.compat import tf
from maskplus.engine import schedules

SCHEDULE = {"TRAIN.LR_SCHEDULE": [100, 150, 175], "TRAIN.STEPS_PER_EPOCH": 300, "TRAIN.BASE_LR": 0.02,
            "TRAIN.WARMUP": 50, "TRAIN.WARMUP_INIT_LR": 0.002}


def _schedule(towers, rounding, decay="step"):
    """Configure a run of ``towers`` towers and return its schedule (restore with config_snapshot)."""
    configure(dict(SCHEDULE, **{"TRAIN.NUM_GPUS": towers, "TRAIN.LR_SCHEDULE_ROUNDING": rounding,
                                "TRAIN.LR_DECAY": decay}))
    return schedules.Schedule.from_config(cfg)


# towers: drops at 100 and 150 batch-8 steps, end at 175, each times 8 / towers
@pytest.mark.parametrize("towers, drops, end, epochs", [(1, [800, 1200], 1400, 5), (2, [400, 600], 700, 3),
                                                        (4, [200, 300], 350, 2)])
def test_step_rounding_puts_drops_and_end_at_8_over_towers_times_the_schedule(towers, drops, end, epochs):
    with config_snapshot():
        schedule = _schedule(towers, "step")
        assert list(schedule.drop_steps) == drops
        assert schedule.total_steps == end
        assert schedule.max_epoch == epochs  # ceil(end / 300): the last epoch reaches the end
        rates = [schedule.lr_at(s) for s in (drops[0] - 1, drops[0], drops[1] - 1, drops[1])]
    assert rates == pytest.approx([0.02, 0.002, 0.002, 0.0002])


def test_epoch_rounding_with_two_towers_drops_at_the_start_of_the_epoch_of_each_boundary():
    # 2 towers: boundaries at real steps 400 and 600, end 700; epochs of 300: the drops after
    # epochs floor(400 / 300) = 1 and floor(600 / 300) = 2, the end after floor(700 / 300) = 2 epochs
    with config_snapshot():
        schedule = _schedule(2, "epoch")
        assert list(schedule.drop_steps) == [300, 600]
        assert schedule.max_epoch == 2 and schedule.total_steps == 600


@pytest.mark.parametrize("towers", [1, 2])
def test_the_warm_up_is_in_real_steps_whatever_the_tower_count(towers):
    with config_snapshot():
        schedule = _schedule(towers, "step")
        rates = [schedule.lr_at(s) for s in (0, 25, 49, 50, 60, 120)]
    # BASE_LR from real step 50 on, also where a warm-up of 50 batch-8 steps would still climb
    assert rates == pytest.approx([0.002, 0.011, 0.002 + 0.018 * 49 / 50, 0.02, 0.02, 0.02])


@pytest.mark.parametrize("decay, middle", [("linear", 0.01), ("cosine", 0.01)])
def test_smooth_decays_with_two_towers_end_at_8_over_2_times_the_last_boundary(decay, middle):
    # end 175 * 4 = 700; half-way from the warm-up's end (50) to it: step 375
    with config_snapshot():
        schedule = _schedule(2, "step", decay)
        rates = [schedule.lr_at(s) for s in (50, 375, 699, 700)]
    assert rates[0] == pytest.approx(0.02) and rates[1] == pytest.approx(middle)
    assert 0 < rates[2] < 0.0005 and rates[3] == pytest.approx(0.0, abs=1e-12)


# -------------------- the Tensorpack example's rule (faithfulness): tower counts and epochs
@pytest.mark.faithfulness
@pytest.mark.parametrize("towers, drops, end, warmup_start, accumulate", [
    (1, [960000, 1280000], 1440000, 0.0033, 8),
    (2, [480000, 640000], 720000, 0.0033, 4),
    (4, [240000, 320000], 360000, 0.0033, 2),
    (8, [120000, 160000], 180000, 0.0033, 1),
    (16, [60000, 80000], 90000, 0.00165, 1),
])
def test_tower_counts_scale_the_steps_and_the_warm_up_as_in_the_example(towers, drops, end, warmup_start, accumulate):
    from maskplus.engine.schedules import Schedule
    from maskplus.engine.model import model_params
    from maskplus.modeling.generalized_rcnn import ResNetFPNModel
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": towers, "TRAIN.LR_SCHEDULE": "1x", "TRAIN.STEPS_PER_EPOCH": 500,
                   "TRAIN.BASE_LR": 0.01, "TRAIN.WARMUP": 1000, "TRAIN.WARMUP_INIT_LR": 0.0033})
        schedule = Schedule.from_config(cfg)
        assert schedule.drop_steps == tuple(drops)
        assert schedule.total_steps == end and schedule.max_epoch == end // 500
        assert schedule.lr_at(0) == pytest.approx(warmup_start)
        assert schedule.lr_at(500) == pytest.approx((warmup_start + 0.01) / 2)
        assert schedule.lr_at(drops[0] - 1) == pytest.approx(0.01)
        assert schedule.lr_at(drops[0]) == pytest.approx(0.001)
        assert schedule.lr_at(drops[1]) == pytest.approx(0.0001)
        with tf.Graph().as_default():
            opt = ResNetFPNModel(model_params()).optimizer()
        # the base optimizer applies BASE_LR / 8 to the gradient summed over the 8 (or n) images
        assert getattr(opt, "_niter", 1) == accumulate


@pytest.mark.faithfulness
def test_lr_drops_fall_on_epoch_starts_and_the_run_ends_on_a_whole_epoch():
    # the example: drop after epoch floor(b * 8 / n / STEPS_PER_EPOCH), max_epoch likewise floored
    from maskplus.engine.schedules import Schedule
    with config_snapshot():
        configure({"TRAIN.NUM_GPUS": 8, "TRAIN.LR_SCHEDULE": [1000, 1250, 1650], "TRAIN.STEPS_PER_EPOCH": 300,
                   "TRAIN.BASE_LR": 0.1, "TRAIN.WARMUP": 10, "TRAIN.EVAL_PERIOD": 2})
        schedule = Schedule.from_config(cfg)
        assert schedule.drop_steps == (900, 1200) and schedule.max_epoch == 5 and schedule.total_steps == 1500
        assert [round(schedule.lr_at(s), 6) for s in (899, 900, 1199, 1200)] == [0.1, 0.01, 0.01, 0.001]
        assert schedule.eval_steps == (600, 1200, 1500)  # after epochs 2, 4 (every EVAL_PERIOD) and always the last
        by_step = Schedule.from_config(cfg, rounding="step")
        assert by_step.drop_steps == (1000, 1250) and by_step.max_epoch == 6 and by_step.total_steps == 1650
        assert by_step.eval_steps == (600, 1200, 1650)  # the last epoch is cut at the schedule's end
