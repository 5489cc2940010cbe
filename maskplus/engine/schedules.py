"""The training schedule (learning rate, mask-loss alpha, length, evaluations) as one object, plus
the callback that puts its values into the graph.

All schedules in the config count steps at a total batch of 8 images; a run with ``n`` towers
takes ``8 / n`` times as many steps, so the boundaries are multiplied by that factor. The
warm-up length is in real steps (as in the Tensorpack example) and is not rescaled; its start
value is scaled by ``min(8 / n, 1)``. By default (``TRAIN.LR_SCHEDULE_ROUNDING=epoch``) the
drops and the end fall on epoch boundaries exactly as the example's epoch-based setter puts them.

:meth:`Schedule.from_config` builds the schedule once from the finalised config, in real steps;
a time budget replaces it by refitted ones (:meth:`Schedule.fitted`). The config itself is never
written during training.
"""
import dataclasses
import math

from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.callbacks import Callback

from maskplus.techniques import registry
from maskplus.techniques.biased_training import VARIABLE_NAME as MASK_LOSS_ALPHA



def technique_schedules(cfg):
    """{graph variable: [[step at batch 8, value], ...]}: what the techniques ``cfg`` switches on set
    while training (their ``schedules`` hook; biased training's mask-loss alpha)."""
    return registry.training_schedules(registry.build(cfg))


def step_factor(num_towers):
    """Real steps per batch-8 step."""
    return 8.0 / num_towers


def piecewise_constant(points, factor=1.0):
    """step -> the value of ``points`` ``[[step, value], ...]`` (first step 0) at that step, the steps
    multiplied by ``factor`` (:func:`step_factor`, for batch-8 steps)."""
    points = [(int(s * factor), float(v)) for s, v in points]

    def value_at(step):
        value = points[0][1]
        for start, v in points:
            if step >= start:
                value = v
        return value
    return value_at


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A run's schedule in real steps (the tower count applied).

    The learning rate warms up linearly from ``warmup_init_lr`` to ``base_lr`` over
    ``warmup_steps``, then, by ``decay``, is x0.1 from each of ``drop_steps`` ("step") or falls
    linearly / as a half cosine from ``base_lr`` to 0 at ``total_steps`` (as Detectron2's cosine
    schedule). ``alpha``: ``((step, mask-loss alpha), ...)``, piecewise constant (the schedule of
    the ``mask_loss_alpha`` variable a technique brings, else constant 1). The model is
    evaluated after ``eval_steps``. ``max_epoch`` epochs of ``steps_per_epoch`` reach
    ``total_steps`` (None for a time budget's schedule, whose epochs vary in length).
    """
    base_lr: float
    warmup_steps: int
    warmup_init_lr: float
    decay: str
    drop_steps: tuple
    total_steps: int
    alpha: tuple
    eval_steps: tuple
    steps_per_epoch: int
    max_epoch: object

    @classmethod
    def from_config(cls, cfg, rounding=None):
        """The schedule of a finalised config ``cfg``; ``rounding`` ("epoch" or "step") instead of
        ``TRAIN.LR_SCHEDULE_ROUNDING`` (a time budget's epochs vary in length, so its drops fall on
        exact steps)."""
        t = cfg.TRAIN
        factor = step_factor(t.NUM_GPUS)
        rounding = rounding or t.LR_SCHEDULE_ROUNDING
        spe = int(t.STEPS_PER_EPOCH)

        def epochs_floor(batch8_steps):  # the example's steps * 8 / towers // STEPS_PER_EPOCH
            return int(batch8_steps * factor // spe)

        if rounding == "epoch":
            max_epoch = max(1, epochs_floor(t.LR_SCHEDULE[-1]))
            total = max_epoch * spe
            # the example's epoch-based setter: a drop from the start of the epoch the boundary falls in
            drops = [epochs_floor(b) * spe for b in t.LR_SCHEDULE[:-1]]
        else:
            total = int(t.LR_SCHEDULE[-1] * factor)
            max_epoch = max(1, -(-total // spe))
            drops = [int(b * factor) for b in t.LR_SCHEDULE[:-1]]
        evals = ()
        if t.EVAL_PERIOD > 0 and cfg.DATA.VAL:  # every EVAL_PERIOD epochs and after the last one, as the example
            epochs = sorted(set(range(t.EVAL_PERIOD, max_epoch + 1, t.EVAL_PERIOD)) | {max_epoch})
            evals = tuple(min(e * spe, total) for e in epochs)
        alpha = technique_schedules(cfg).get(MASK_LOSS_ALPHA, [[0, 1.0]])
        return cls(base_lr=float(t.BASE_LR), warmup_steps=int(t.WARMUP),
                   warmup_init_lr=t.WARMUP_INIT_LR * min(factor, 1.0), decay=t.LR_DECAY,
                   drop_steps=tuple(drops), total_steps=total,
                   alpha=tuple((int(s * factor), float(v)) for s, v in alpha),
                   eval_steps=evals, steps_per_epoch=spe, max_epoch=max_epoch)

    def lr_at(self, step):
        """The learning rate at ``step``."""
        if step < self.warmup_steps:
            start = self.warmup_init_lr
            return start + (self.base_lr - start) * step / float(self.warmup_steps)
        if self.decay == "step":
            return self.base_lr * (0.1 ** sum(1 for d in self.drop_steps if step >= d))
        progress = min(1.0, (step - self.warmup_steps) / float(max(1, self.total_steps - self.warmup_steps)))
        if self.decay == "linear":
            return self.base_lr * (1.0 - progress)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def alpha_at(self, step):
        """The mask-loss alpha (biased training) at ``step``."""
        return piecewise_constant(self.alpha)(step)

    def fitted(self, plan):
        """This schedule refitted to a time budget's :class:`maskplus.engine.time_budget.Plan`: its
        length, LR drops, alpha changes and evaluations; rates and warm-up unchanged."""
        return dataclasses.replace(self, total_steps=int(plan.total), drop_steps=tuple(plan.lr_boundaries),
                                   alpha=tuple((int(s), float(v)) for s, v in plan.alpha),
                                   eval_steps=tuple(sorted(set(plan.eval_steps))), max_epoch=None)

    def to_dict(self):
        """For run.json."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def describe_schedule(cfg):
    """Lines telling what the finalised training schedule does, in real steps."""
    t = cfg.TRAIN
    schedule = Schedule.from_config(cfg)
    n = t.NUM_GPUS
    accum = 8 // n if n < 8 and t.GRADIENT_ACCUMULATION else 1
    per_update = n * accum
    lines = [
        f"towers: {n} ({cfg.TRAINER}), one image each; {per_update} images per update"
        + (f" (gradients accumulated over {accum} steps)" if accum > 1 else ""),
        f"learning rate: {t.BASE_LR:g} per 8 images; warm-up from {schedule.warmup_init_lr:g} over {t.WARMUP} steps",
        f"LR_SCHEDULE (steps at a total batch of 8): {t.LR_SCHEDULE}",
        f"in real steps: LR x0.1 at {list(schedule.drop_steps)}" if t.LR_DECAY == "step"
        else f"in real steps: {t.LR_DECAY} decay to 0 at step {schedule.total_steps}",
        f"training ends at step {schedule.total_steps}: {schedule.max_epoch} epochs of {t.STEPS_PER_EPOCH} steps",
    ]
    if t.EVAL_PERIOD > 0:
        last = schedule.max_epoch
        epochs = sorted(set(range(t.EVAL_PERIOD, last + 1, t.EVAL_PERIOD)) | {last})
        lines.append(f"evaluations: {len(epochs)}, after epochs {epochs[:3]}{' ...' if len(epochs) > 3 else ''}"
                     f" (every {t.EVAL_PERIOD} and the last)")
    return lines


class StepScheduleSetter(Callback):
    """Sets every graph variable named ``var_name`` (any tower) to ``value_at(global_step)``.

    Runs before training (so a resumed run continues where the schedule was) and after every
    step, touching the session only when the value changes.
    """

    def __init__(self, var_name, value_at):
        self.var_name = var_name
        self.value_at = value_at
        self._current = None

    def _setup_graph(self):
        variables = [v for v in tfv1.global_variables() if v.op.name.split("/")[-1] == self.var_name]
        if not variables:
            raise RuntimeError(f"No graph variable named '{self.var_name}' to schedule.")
        self._feed = tfv1.placeholder(tf.float32, [], name=f"{self.var_name}_feed")
        self._assign = tf.group(*[v.assign(self._feed) for v in variables])

    def _apply(self):
        value = float(self.value_at(self.global_step))
        if value != self._current:
            self._assign.run(feed_dict={self._feed: value})
            self._current = value
            self.trainer.monitors.put_scalar(self.var_name, value)

    def _before_train(self):
        self._apply()

    def _trigger_step(self):
        self._apply()
