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
