"""Training for a wall-clock budget instead of a step count (``train.py --minutes M``).

The configured schedule gives the *shape* of a run, as fractions of its length: learning-rate
boundaries, mask-loss alpha changes and evaluations (every ``EVAL_PERIOD`` epochs, and always one
at the end). After a short calibration the length is fitted to the time left, and fitted again
after every evaluation with the step and evaluation times measured so far (a step gets slower as
the detector finds more objects for the mask branch). Pure functions, plus one callback that
applies the plan to a running Tensorpack training: it refits the run's
:class:`maskplus.engine.schedules.Schedule` (a new one per plan, which the schedule setters read);
the config is never written.
"""
import collections
import time

from maskplus import compat  # noqa: F401  (first: its shims precede Tensorpack's TensorFlow)
from tensorpack.callbacks import Callback
from tensorpack.train.base import StopTraining
from tensorpack.utils import logger

from maskplus import console

#: fractions of a run (0..1]: LR boundaries, (fraction, alpha) changes, evaluations
RunShape = collections.namedtuple("RunShape", "lr_fractions alpha eval_fractions")
#: a run in real steps: its length, LR boundaries, (step, alpha) changes, evaluation steps (one
#: per fraction of the shape, so that a refit can tell which have happened; equal ones are one)
Plan = collections.namedtuple("Plan", "total lr_boundaries alpha eval_steps")


def run_shape(lr_schedule, alpha_schedule, eval_every, factor):
    """The shape of a configured run. ``lr_schedule`` and ``alpha_schedule`` count batch-8 steps
    (``factor`` real steps each), ``eval_every`` real steps (0: evaluate at the end only)."""
    total = lr_schedule[-1] * factor
    lr = tuple(b * factor / total for b in lr_schedule[:-1])
    alpha = tuple((s * factor / total, float(v)) for s, v in alpha_schedule)
    evals = [k * eval_every / total for k in range(1, int(total // eval_every) + 1)] if eval_every else []
    if not evals or evals[-1] < 1.0:
        evals.append(1.0)
    return RunShape(lr, alpha, tuple(evals))


def plan_for(total, shape):
    """The plan of a run of ``total`` real steps with ``shape``."""
    return Plan(int(total), tuple(round(f * total) for f in shape.lr_fractions),
                tuple((round(f * total), v) for f, v in shape.alpha),
                tuple(max(1, round(f * total)) for f in shape.eval_fractions))


def steps_that_fit(seconds_left, seconds_per_step, eval_seconds, evals_left):
    """Steps that fit in ``seconds_left`` when ``evals_left`` evaluations of ``eval_seconds`` must fit too."""
    return max(0, int((seconds_left - evals_left * eval_seconds) / seconds_per_step))


def refit(plan, step, total, shape):
    """The plan of a run at ``step`` that now ends at ``total``: events at or before ``step``
    happened and stay; later ones move to their fractions of the new length, but not into the
    past (an LR drop whose new place has passed happens at the next step)."""
    total = max(int(total), step)
    new = plan_for(total, shape)

    def moved(old, new_step):
        return old if old <= step else min(total, max(new_step, step + 1))

    lr = tuple(moved(o, n) for o, n in zip(plan.lr_boundaries, new.lr_boundaries))
    alpha = tuple((moved(o, n), v) for (o, v), (n, _) in zip(plan.alpha, new.alpha))
    evals = tuple(moved(o, n) for o, n in zip(plan.eval_steps, new.eval_steps))
    return Plan(total, lr, alpha, evals)


def evaluations_left(plan, step):
    return len({e for e in plan.eval_steps if e > step})


def describe_evaluations(plan):
    """Where ``plan`` evaluates, in words: "evaluated at the end" or "evaluated at steps 380, 760 and the end"."""
    before_end = sorted({e for e in plan.eval_steps if e < plan.total})
    return "evaluated at " + (f"steps {', '.join(map(str, before_end))} and " if before_end else "") + "the end"


def describe(plan):
    alpha = ", ".join(f"{v:g} from {s}" for s, v in plan.alpha)
    return (f"{plan.total} steps: LR boundaries at {list(plan.lr_boundaries)}, mask-loss alpha {alpha}, "
            f"evaluations at {sorted(set(plan.eval_steps))}")


class TimeBudget(Callback):
    """Fits the run to end by ``deadline`` (a ``time.time()`` value).

    The first epoch is the calibration: ``skip`` steps (graph and kernel warm-up), then ``measure``
    timed steps. Afterwards every epoch ends at the next evaluation step or ``grain`` steps on,
    whichever comes first, and the plan is fitted again at its end from the step time of the
    last ``measure`` or more steps and the last evaluation's time. Evaluations and checkpoints
    are to be wrapped to run only where :meth:`is_evaluation_step`. :attr:`schedule` is the
    schedule in effect (the ``schedule`` given, until the calibration fits the first plan; then
    that schedule refitted to each plan); ``apply(plan)`` is called after every fit (the trainer
    records the refit in run.json); :attr:`refits` lists them. ``eval_seconds(seconds_per_step)``
    estimates an evaluation until one has been measured.
    """

    def __init__(self, deadline, shape, initial_plan, apply, eval_seconds, grain, skip=5, measure=20, schedule=None):
        self.deadline, self.shape, self.plan = deadline, shape, initial_plan
        self._apply_plan, self._estimate_eval = apply, eval_seconds
        self.grain, self.skip, self.measure = max(1, int(grain)), skip, max(1, measure)
        self.calibration_steps = skip + measure
        self._fitted = False
        self.schedule = schedule
        self.refits = []  # {"step", "seconds_per_step", "evaluation_seconds", "minutes_left", "total_steps"}

    @property
    def total_steps(self):
        """The planned length, None until the calibration has fitted one."""
        return self.plan.total if self._fitted else None

    def is_evaluation_step(self, step):
        return self._fitted and step in self.plan.eval_steps

    def _before_train(self):
        self._fitted = False
        self._eval_seconds = None
        self._start_step = self.global_step
        self.calibration_steps = self.global_step + self.skip + self.measure
        self._mark = (self.global_step, time.time())  # where step timing starts; moved after the skipped steps
        self._epochs = collections.deque(maxlen=64)  # (steps, seconds) of recent epochs, evaluations left out

    def _trigger_step(self):
        if self.global_step == self._start_step + self.skip and not self._fitted:
            self._mark = (self.global_step, time.time())

    def _after_epoch(self):
        self._epoch_end = time.time()
        mark_step, mark_time = self._mark
        self._epochs.append((self.global_step - mark_step, self._epoch_end - mark_time))

    def seconds_per_step(self):
        """Step time over the latest epochs holding at least ``measure`` steps."""
        steps = seconds = 0
        for n, t in reversed(self._epochs):
            steps, seconds = steps + n, seconds + t
            if steps >= self.measure:
                break
        return seconds / max(1, steps)

    def _trigger_epoch(self):
        # registered after evaluation and checkpointing: the time since the epoch's end is theirs
        step, now = self.global_step, time.time()
        if self._fitted and step in self.plan.eval_steps:
            self._eval_seconds = now - self._epoch_end
        if self._fitted or step >= self.calibration_steps:
            if not self._fitted or step < self.plan.total:
                self._fit(step, now)
        self._mark = (step, time.time())

    def _fit(self, step, now):
        seconds_per_step = self.seconds_per_step()
        eval_seconds = self._eval_seconds if self._eval_seconds is not None else self._estimate_eval(seconds_per_step)
        # the calibration places every event (none has happened: evaluations were held back)
        previous = self.plan if self._fitted else plan_for(10 ** 12, self.shape)
        evals = evaluations_left(previous, step)
        total = step + steps_that_fit(self.deadline - now, seconds_per_step, eval_seconds, max(1, evals))
        if not self._fitted:  # out of time already: one more step, so that the run ends evaluated and saved
            total = max(total, step + 1)
        self.plan = refit(previous, step, total, self.shape)
        if self.schedule is not None:
            self.schedule = self.schedule.fitted(self.plan)
        self.refits.append({"step": step, "seconds_per_step": round(seconds_per_step, 4),
                            "evaluation_seconds": round(eval_seconds, 1),
                            "minutes_left": round((self.deadline - now) / 60, 2), "total_steps": self.plan.total})
        self._apply_plan(self.plan)
        logger.info(f"Time budget at step {step}: {seconds_per_step:.3f} s/step, {eval_seconds:.1f} s per "
                    f"evaluation, {(self.deadline - now) / 60:.2f} min left -> {describe(self.plan)}")
        if not self._fitted:
            console.say(f"{seconds_per_step:.2f} s/step after warm-up: about {self.plan.total} steps fit, "
                        f"{describe_evaluations(self.plan)} (fitted again as training goes)")
        self._fitted = True

    def _before_epoch(self):
        step = self.global_step
        if not self._fitted:
            self.trainer.loop.steps_per_epoch = max(1, self.calibration_steps - step)
            return
        if step >= self.plan.total:
            raise StopTraining(f"the time budget's plan ends at step {self.plan.total}")
        next_eval = min(e for e in self.plan.eval_steps if e > step)
        self.trainer.loop.steps_per_epoch = min(self.grain, next_eval - step)
