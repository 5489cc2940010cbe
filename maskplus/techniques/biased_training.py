"""Biased training -- MaskPlus section 3.5 (ablation: section 4.7, Tables 5 and 6).

The paper: "we multiply the loss in the mask branch with a weight greater than 1, and define the
multitask loss on each sampled RoI as L = L_cls + L_box + alpha * L_mask ... The parameter alpha
is initially larger than 1 (e.g., chosen as 1.5 in our experiments) ... Then, alpha is set to 1
during the normal training process in the later stages."

Our interpretations, where the paper is vague:
* alpha multiplies only the mask loss; the RPN and Fast R-CNN losses are unchanged.
* alpha is a non-trainable graph variable ``mask_loss_alpha`` that a callback (the trainer's
  ``StepScheduleSetter``) sets from the piecewise-constant schedule ``MASKPLUS.MASK_LOSS_ALPHA`` = [[step, alpha], ...], whose steps
  count iterations at a total batch of 8 like ``TRAIN.LR_SCHEDULE`` (rescaled for other tower
  counts the same way). The graph only creates it, at the schedule's first value.
* "Early stage" ends by default at 120k of the paper's 360k iterations (the first third, before
  any learning-rate drop): [[0, 1.5], [120000, 1.0]].
* alpha is logged as the ``mask_loss_alpha`` statistic.
"""
from tensorpack.tfutils.summary import add_moving_summary

from maskplus.compat import tf, tfv1
from maskplus.techniques.registry import register

VARIABLE_NAME = "mask_loss_alpha"


def mask_loss_alpha(initial):
    """The alpha variable, shared by all towers (created once, outside any tower prefix)."""
    with tfv1.variable_scope(tfv1.VariableScope(tfv1.AUTO_REUSE, name=""), auxiliary_name_scope=False):
        return tfv1.get_variable(VARIABLE_NAME, initializer=initial, trainable=False)


def weight_mask_loss(mask_loss, initial_alpha):
    """alpha * L_mask, alpha a variable that starts at ``initial_alpha`` (the schedule sets it later)."""
    alpha = mask_loss_alpha(float(initial_alpha))
    add_moving_summary(tf.identity(alpha, name="mask_loss_alpha_value"))
    return tf.multiply(mask_loss, alpha, name="weighted_maskrcnn_loss")


@register
class BiasedTraining:
    """Hooks ``mask_loss`` (alpha * L_mask) and ``schedules`` (alpha's piecewise-constant schedule)."""
    name = "biased_training"
    order = 3.5  # paper section
    enable = {"MASKPLUS.BIASED_TRAINING": True}  # switches it on
    keys = {"MASKPLUS.BIASED_TRAINING": False, "MASKPLUS.MASK_LOSS_ALPHA": [[0, 1.5], [120000, 1.0]]}
    variables = []  # alpha is training state, set by its schedule

    def __init__(self, alpha_schedule):
        """``alpha_schedule``: [[step at total batch 8, alpha], ...], the first step 0."""
        self.alpha_schedule = [[s, float(v)] for s, v in alpha_schedule]

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.MASKPLUS.MASK_LOSS_ALPHA) if cfg.MASKPLUS.BIASED_TRAINING else None

    def mask_loss(self, loss):
        return weight_mask_loss(loss, self.alpha_schedule[0][1])

    def schedules(self):
        return {VARIABLE_NAME: self.alpha_schedule}
