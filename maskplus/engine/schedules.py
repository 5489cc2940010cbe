"""Step-based schedules (learning rate, mask-loss alpha) as pure functions plus one callback.

All schedules in the config count steps at a total batch of 8 images; a run with ``n`` towers
takes ``8 / n`` times as many steps, so the boundaries are multiplied by that factor. The
warm-up length is in real steps (as in the Tensorpack example) and is not rescaled; its start
value is scaled by ``min(8 / n, 1)``. By default (``TRAIN.LR_SCHEDULE_ROUNDING=epoch``) the
drops and the end fall on epoch boundaries exactly as the example's epoch-based setter puts them.
"""
import math

from tensorpack.callbacks import Callback

from maskplus.compat import tf, tfv1


def step_factor(num_towers):
    """Real steps per batch-8 step."""
    return 8.0 / num_towers


def _epochs_floor(batch8_steps, cfg):
    """The example's ``steps * 8 / towers // STEPS_PER_EPOCH``: whole epochs, rounded down."""
    return int(batch8_steps * step_factor(cfg.TRAIN.NUM_GPUS) // cfg.TRAIN.STEPS_PER_EPOCH)


def max_epoch(cfg):
    """Epochs to train: the example's floor, or (``LR_SCHEDULE_ROUNDING=step``) enough to reach the end."""
    t = cfg.TRAIN
    if t.LR_SCHEDULE_ROUNDING == "epoch":
        return max(1, _epochs_floor(t.LR_SCHEDULE[-1], cfg))
    return max(1, -(-int(t.LR_SCHEDULE[-1] * step_factor(t.NUM_GPUS)) // t.STEPS_PER_EPOCH))


def total_steps(cfg):
    """The real step at which the schedule ends."""
    t = cfg.TRAIN
    if t.LR_SCHEDULE_ROUNDING == "epoch":
        return max_epoch(cfg) * t.STEPS_PER_EPOCH
    return int(t.LR_SCHEDULE[-1] * step_factor(t.NUM_GPUS))


def drop_steps(cfg):
    """Real steps from which the learning rate is x0.1, x0.01, ...: each boundary but the last, at
    the start of the epoch it falls in (the example: its epoch-based setter fires after epoch
    ``boundary * 8 / towers // STEPS_PER_EPOCH``), or at the exact step."""
    t = cfg.TRAIN
    if t.LR_SCHEDULE_ROUNDING == "epoch":
        return [_epochs_floor(b, cfg) * t.STEPS_PER_EPOCH for b in t.LR_SCHEDULE[:-1]]
    return [int(b * step_factor(t.NUM_GPUS)) for b in t.LR_SCHEDULE[:-1]]


def evaluation_epochs(cfg):
    """Every ``EVAL_PERIOD`` epochs and always the last one, as the example's evaluation callback."""
    last = max_epoch(cfg)
    return sorted(set(range(cfg.TRAIN.EVAL_PERIOD, last + 1, cfg.TRAIN.EVAL_PERIOD)) | {last})


def warmup_init_lr(cfg):
    """Warm-up start, scaled down for a total batch above 8 as the example does."""
    return cfg.TRAIN.WARMUP_INIT_LR * min(step_factor(cfg.TRAIN.NUM_GPUS), 1.0)


def learning_rate_at(step, cfg):
    """Linear warm-up from the warm-up start to BASE_LR over WARMUP real steps, then, by LR_DECAY,
    x0.1 from each of :func:`drop_steps` ("step") or a linear / half-cosine fall from BASE_LR to 0
    at the schedule's end (as Detectron2's cosine schedule)."""
    t = cfg.TRAIN
    if step < t.WARMUP:
        start = warmup_init_lr(cfg)
        return start + (t.BASE_LR - start) * step / float(t.WARMUP)
    if t.LR_DECAY == "step":
        return t.BASE_LR * (0.1 ** sum(1 for d in drop_steps(cfg) if step >= d))
    end = total_steps(cfg)
    progress = min(1.0, (step - t.WARMUP) / float(max(1, end - t.WARMUP)))
    if t.LR_DECAY == "linear":
        return t.BASE_LR * (1.0 - progress)
    return t.BASE_LR * 0.5 * (1.0 + math.cos(math.pi * progress))


def describe_schedule(cfg):
    """Lines telling what the finalised training schedule does, in real steps."""
    t = cfg.TRAIN
    n = t.NUM_GPUS
    accum = 8 // n if n < 8 and t.GRADIENT_ACCUMULATION else 1
    per_update = n * accum
    lines = [
        f"towers: {n} ({cfg.TRAINER}), one image each; {per_update} images per update"
        + (f" (gradients accumulated over {accum} steps)" if accum > 1 else ""),
        f"learning rate: {t.BASE_LR:g} per 8 images; warm-up from {warmup_init_lr(cfg):g} over {t.WARMUP} steps",
        f"LR_SCHEDULE (steps at a total batch of 8): {t.LR_SCHEDULE}",
        f"in real steps: LR x0.1 at {drop_steps(cfg)}" if t.LR_DECAY == "step"
        else f"in real steps: {t.LR_DECAY} decay to 0 at step {total_steps(cfg)}",
        f"training ends at step {total_steps(cfg)}: {max_epoch(cfg)} epochs of {t.STEPS_PER_EPOCH} steps",
    ]
    if t.EVAL_PERIOD > 0:
        epochs = evaluation_epochs(cfg)
        lines.append(f"evaluations: {len(epochs)}, after epochs {epochs[:3]}{' ...' if len(epochs) > 3 else ''}"
                     f" (every {t.EVAL_PERIOD} and the last)")
    return lines


def piecewise_at(step, schedule, factor=1.0):
    """Value of a piecewise-constant [[step, value], ...] schedule at ``step``; steps scaled by ``factor``."""
    value = schedule[0][1]
    for start, v in schedule:
        if step >= int(start * factor):
            value = v
    return float(value)


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
