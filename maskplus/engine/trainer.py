"""Training: trainer choice, callbacks, initialisation and resume.

The schedule semantics are the Tensorpack example's: steps in the config are for a total batch of
8 images; with ``n`` towers a run takes ``8 / n`` times as many steps; gradients are summed over
towers and (with fewer than 8) accumulated to 8 images before an update.
"""
import json
import os
import time

from tensorpack.callbacks import (EnableCallbackIf, EstimatedTimeLeft, MergeAllSummaries, ModelSaver,
                                  MovingAverageSummary, PeriodicCallback, RunUpdateOps, ThroughputTracker)
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sesscreate import NewSessionCreator
from tensorpack.train import (SyncMultiGPUTrainerReplicated, TrainConfig,
                              launch_train_with_config)
from tensorpack.utils import logger

from config import config as cfg
from maskplus import console
from maskplus.compat import tf, tfv1
from maskplus.data.pipeline import get_train_dataflow
from maskplus.engine import schedules, time_budget
from maskplus.engine.callbacks import (DUMP_VARIABLES_ENV, DumpVariablesAtEnd, EvalCallback, HorovodSyncCheck,
                                      NonFiniteLossGuard, ResourceLogger, RunProgress, SaveOnSignal,
                                      EpochsOnSchedule, is_chief, process_rank)
from maskplus.engine.checkpoint import CheckpointInit, checkpoint_global_step
from maskplus.engine.session import session_config
from maskplus.precision import describe, resolve
from maskplus.modeling.generalized_rcnn import model_for_config


def make_trainer():
    towers = cfg.TRAIN.NUM_GPUS
    if cfg.TRAINER == "horovod":
        from tensorpack.train import HorovodTrainer
        # Tensorpack re-broadcasts rank 0's variables every epoch: Gloo's all-reduce may round
        # differently on different ranks, so ranks drift apart by ~1e-6 without it.
        return HorovodTrainer(average=False)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    # On a CPU-only machine the towers are placed on the CPU by soft placement and their
    # gradients summed on the CPU (NCCL needs GPUs).
    return SyncMultiGPUTrainerReplicated(towers, average=False, mode="nccl" if has_gpu else "cpu")


def make_callbacks(logdir, budget=None):
    """Our callbacks; with a :class:`time_budget.TimeBudget` the evaluations are made at its
    planned evaluation steps instead of every so many epochs, and checkpoints there too."""
    factor = schedules.step_factor(cfg.TRAIN.NUM_GPUS)
    saver = ModelSaver(max_to_keep=cfg.TRAIN.MAX_CHECKPOINTS, keep_checkpoint_every_n_hours=1, checkpoint_dir=logdir)

    def periodic(callback, every_k_epochs, also_periodic=False):
        if budget is None:
            return PeriodicCallback(callback, every_k_epochs=every_k_epochs)
        return EnableCallbackIf(callback, lambda self: budget.is_evaluation_step(self.global_step) or (
            also_periodic and self.epoch_num % every_k_epochs == 0))

    # a budgeted run sets its epochs' lengths, ends itself and logs its own time left
    unbudgeted = budget is None
    callbacks = [
        # the guard comes first so that a non-finite step stops training before anything is saved
        NonFiniteLossGuard(),
        *([EpochsOnSchedule(cfg.TRAIN.STEPS_PER_EPOCH, schedules.total_steps(cfg))] if unbudgeted else []),
        periodic(saver, cfg.TRAIN.CHECKPOINT_PERIOD, also_periodic=True),
        SaveOnSignal(saver),
        schedules.StepScheduleSetter("learning_rate", lambda step: schedules.learning_rate_at(step, cfg)),
        *([EstimatedTimeLeft(median=True)] if unbudgeted else []),
        ThroughputTracker(samples_per_step=cfg.TRAIN.NUM_GPUS),
        ResourceLogger(),
    ]
    if cfg.MASKPLUS.BIASED_TRAINING:
        # read at every step: a time budget replaces the schedule in the config once it has fitted it
        callbacks.append(schedules.StepScheduleSetter(
            "mask_loss_alpha", lambda step: schedules.piecewise_at(step, cfg.MASKPLUS.MASK_LOSS_ALPHA, factor)))
    if cfg.TRAINER == "horovod":
        callbacks.append(HorovodSyncCheck())
    if cfg.TRAIN.EVAL_PERIOD > 0 and cfg.DATA.VAL:
        if budget is None:  # every EVAL_PERIOD epochs and after the last one, as the example
            callbacks.append(EvalCallback(logdir, schedules.evaluation_epochs(cfg)))
        else:
            callbacks.append(periodic(EvalCallback(logdir), cfg.TRAIN.EVAL_PERIOD))
    if budget is not None:
        callbacks.append(budget)  # after evaluation and checkpointing, whose time it measures
    if os.environ.get(DUMP_VARIABLES_ENV):  # a test hook: see DumpVariablesAtEnd
        callbacks.append(DumpVariablesAtEnd(os.environ[DUMP_VARIABLES_ENV]))
    return callbacks


def make_time_budget(deadline, logdir, preset):
    """A :class:`time_budget.TimeBudget` that ends the run by ``deadline`` with the configured
    schedule's shape, putting each fitted plan into the config (and run.json)."""
    # the budget's epochs vary in length, so its plan's LR drops fall on exact steps, not epoch starts
    cfg.freeze(False)
    cfg.TRAIN.LR_SCHEDULE_ROUNDING = "step"
    cfg.freeze()
    factor = schedules.step_factor(cfg.TRAIN.NUM_GPUS)
    t = cfg.TRAIN
    eval_every = t.EVAL_PERIOD * t.STEPS_PER_EPOCH if t.EVAL_PERIOD > 0 and cfg.DATA.VAL else 0
    alpha = cfg.MASKPLUS.MASK_LOSS_ALPHA if cfg.MASKPLUS.BIASED_TRAINING else [[0, 1.0]]
    shape = time_budget.run_shape(t.LR_SCHEDULE, alpha, eval_every, factor)
    initial = time_budget.plan_for(schedules.total_steps(cfg), shape)

    def apply(plan):
        cfg.freeze(False)
        try:
            cfg.TRAIN.LR_SCHEDULE = [b / factor for b in plan.lr_boundaries] + [plan.total / factor]
            if cfg.MASKPLUS.BIASED_TRAINING:
                cfg.MASKPLUS.MASK_LOSS_ALPHA = [[s / factor, v] for s, v in plan.alpha]
        finally:
            cfg.freeze()
        if is_chief():
            write_run_info(logdir, preset)

    val_images = 0
    if eval_every:
        from maskplus.data.coco import get_dataset
        val_images = sum(len(get_dataset(n).coco.dataset.get("images", [])) for n in cfg.DATA.VAL)

    def eval_seconds(seconds_per_step):
        # until one is measured: inference of an image costs about half a training step (demo model
        # on the AMD EPYC: 0.56 s vs 1.1 s), plus the first run of the inference graph
        return 5 + 0.5 * seconds_per_step * val_images

    return time_budget.TimeBudget(deadline, shape, initial, apply, eval_seconds, grain=t.STEPS_PER_EPOCH)


def quiet_console_callbacks(total_steps):
    """Tensorpack's default callbacks with one progress bar for the run on the quiet console
    instead of a bar per epoch on stdout (which goes to the log)."""
    return [MovingAverageSummary(), RunProgress(total_steps), MergeAllSummaries(), RunUpdateOps()]


def initial_weights(load, logdir):
    """Session init and starting step: resume from ``logdir`` if it has a checkpoint (every
    variable must fit), else ``--load`` (as the example: variables of another shape, e.g. the
    class-specific outputs when fine-tuning on other classes, are skipped and reported), else
    ``BACKBONE.WEIGHTS`` (as the example: every variable of the file whose name the graph has).
    """
    resume = tf.train.latest_checkpoint(logdir) if logdir and os.path.isdir(logdir) else None
    if resume:
        logger.info(f"Resuming from the latest checkpoint in the log directory: {resume}")
        return CheckpointInit(resume), checkpoint_global_step(resume)
    if load:
        return CheckpointInit(load, ignore_mismatch=True), checkpoint_global_step(load)
    if cfg.BACKBONE.WEIGHTS:
        return CheckpointInit(cfg.BACKBONE.WEIGHTS), 0
    logger.warn("Training from scratch: no --load and no BACKBONE.WEIGHTS.")
    return None, 0


def validate_training_data():
    """Check every training dataset once, report all problems, stop on errors (DATA.VALIDATE)."""
    from maskplus.data.coco import DatasetError, get_dataset
    from maskplus.data.validate import validate_dataset
    errors = []
    for name in cfg.DATA.TRAIN:
        dataset = get_dataset(name)
        report = validate_dataset(dataset, cfg.MODE_MASK, cfg.DATA.ABSOLUTE_COORD)
        logger.info(report.summary())
        errors += report.errors
        dataset.exclude_images(report.bad_image_ids)
    if errors:
        raise DatasetError("The training data cannot be used:\n  " + "\n  ".join(errors))


def build_train_config(logdir, load=None, deadline=None, preset=None):
    """The run's TrainConfig; with a ``deadline`` (``time.time()`` value) the schedule is fitted
    to end by then (see :mod:`maskplus.engine.time_budget`)."""
    if cfg.DATA.VALIDATE:
        validate_training_data()
    session_init, start_step = initial_weights(load, logdir)
    steps_per_epoch = cfg.TRAIN.STEPS_PER_EPOCH
    max_epoch = schedules.max_epoch(cfg)
    starting_epoch = start_step // steps_per_epoch + 1
    budget = None
    if deadline is not None:
        # epochs of varying length (the budget sets each); the budget, not max_epoch, ends the run
        budget = make_time_budget(deadline, logdir, preset)
        from tensorpack.callbacks import JSONWriter
        previous = JSONWriter.load_existing_epoch_number(logdir) if start_step else None
        starting_epoch, max_epoch = (previous or 0) + 1, 10 ** 9
    if starting_epoch > max_epoch:
        logger.warn(f"The checkpoint is at step {start_step}, beyond the schedule's end: nothing to train.")
    if cfg.DATA.SEED >= 0:
        tfv1.set_random_seed(cfg.DATA.SEED)
    extra = None
    if console.stream() is not None:
        extra = quiet_console_callbacks(lambda: budget.total_steps if budget else schedules.total_steps(cfg))
    return TrainConfig(
        model=model_for_config(),
        data=QueueInput(get_train_dataflow()),
        callbacks=make_callbacks(logdir, budget),
        extra_callbacks=extra,
        session_init=session_init,
        session_creator=NewSessionCreator(config=session_config(resolve(cfg.TRAIN.PRECISION).precision)),
        steps_per_epoch=steps_per_epoch,
        starting_epoch=starting_epoch,
        max_epoch=max_epoch,
    )


def write_run_info(logdir, preset):
    """``<logdir>/run.json``: what this run is (preset, seed, full config), for the table tools."""
    info = {"preset": preset, "seed": cfg.DATA.SEED, "config": cfg.to_dict()}
    with open(os.path.join(logdir, "run.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)


def train(logdir, load=None, preset=None, minutes=None):
    """Train with the finalised global config, logging to ``logdir``; with ``minutes``, fit the
    schedule so that training (graph building included) ends that many minutes from now."""
    deadline = time.time() + 60 * minutes if minutes else None
    if is_chief():
        logger.set_logger_dir(logdir, action="k")
    else:
        logger.set_logger_dir(os.path.join(logdir, f"rank{process_rank()}"), action="k")
    logger.info("Config:\n" + str(cfg))
    if is_chief():
        write_run_info(logdir, preset)
    traincfg = build_train_config(logdir, load, deadline, preset)
    where = describe_devices(cfg.TRAIN.NUM_GPUS, gpu_names(), describe(resolve(cfg.TRAIN.PRECISION)))
    logger.info(where)
    console.say("  " + where)
    launch_train_with_config(traincfg, make_trainer())


def gpu_names():
    """The name of each GPU TensorFlow sees ('Tesla V100-SXM2-16GB', ...)."""
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def describe_devices(towers, gpus, precision="float32"):
    """One line saying where and in which precision training runs, so that a user sees whether a
    GPU is used; ``gpus`` are the names of the visible GPUs."""
    tower_s = f"{towers} tower{'s' * (towers > 1)}"
    if not gpus:
        return f"Training {tower_s} on the CPU (no GPU visible to TensorFlow) in {precision}."
    names = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in _counts(gpus))
    return (f"Training {tower_s} on {min(towers, len(gpus))} of {len(gpus)} visible GPU{'s' * (len(gpus) > 1)} "
            f"({names}) in {precision}.")


def _counts(names):
    return [(name, names.count(name)) for name in dict.fromkeys(names)]
