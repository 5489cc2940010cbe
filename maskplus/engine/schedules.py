"""Step-based schedules (learning rate, mask-loss alpha) as pure functions plus one callback.

All schedules in the config count steps at a total batch of 8 images; a run with ``n`` towers
takes ``8 / n`` times as many steps, so the boundaries are multiplied by that factor. The
warm-up length is in real steps (as in the Tensorpack example) and is not rescaled.
"""
import math

from tensorpack.callbacks import Callback

from maskplus.compat import tf, tfv1


def step_factor(num_towers):
    """Real steps per batch-8 step."""
    return 8.0 / num_towers


def total_steps(cfg):
    return int(cfg.TRAIN.LR_SCHEDULE[-1] * step_factor(cfg.TRAIN.NUM_GPUS))


def learning_rate_at(step, cfg):
    """Linear warm-up from WARMUP_INIT_LR to BASE_LR over WARMUP steps, then, by LR_DECAY, x0.1 at
    each boundary ("step") or a linear / half-cosine fall from BASE_LR to 0 at the last boundary
    (as Detectron2's cosine schedule; on the CPU demo the late drops did better, see README)."""
    t = cfg.TRAIN
    if step < t.WARMUP:
        return t.WARMUP_INIT_LR + (t.BASE_LR - t.WARMUP_INIT_LR) * step / float(t.WARMUP)
    if t.LR_DECAY == "step":
        factor = step_factor(t.NUM_GPUS)
        drops = sum(1 for boundary in t.LR_SCHEDULE[:-1] if step >= int(boundary * factor))
        return t.BASE_LR * (0.1 ** drops)
    end = total_steps(cfg)
    progress = min(1.0, (step - t.WARMUP) / float(max(1, end - t.WARMUP)))
    if t.LR_DECAY == "linear":
        return t.BASE_LR * (1.0 - progress)
    return t.BASE_LR * 0.5 * (1.0 + math.cos(math.pi * progress))


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
