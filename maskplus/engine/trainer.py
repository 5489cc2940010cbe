"""Training: trainer choice, callbacks, initialisation and resume.

The schedule semantics are the Tensorpack example's: steps in the config are for a total batch of
8 images; with ``n`` towers a run takes ``8 / n`` times as many steps; gradients are summed over
towers and (with fewer than 8) accumulated to 8 images before an update.
"""
import json
import os

from tensorpack.callbacks import EstimatedTimeLeft, ModelSaver, PeriodicCallback, ThroughputTracker
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sesscreate import NewSessionCreator
from tensorpack.train import (SyncMultiGPUTrainerReplicated, TrainConfig,
                              launch_train_with_config)
from tensorpack.utils import logger

from config import config as cfg
from maskplus.compat import tf, tfv1
from maskplus.data.pipeline import get_train_dataflow
from maskplus.engine import schedules
from maskplus.engine.callbacks import (EvalCallback, HorovodSyncCheck, NonFiniteLossGuard, ResourceLogger,
                                      SaveOnSignal, is_chief)
from maskplus.engine.checkpoint import CheckpointInit, checkpoint_global_step
from maskplus.engine.session import session_config
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


def make_callbacks(logdir):
    factor = schedules.step_factor(cfg.TRAIN.NUM_GPUS)
    saver = ModelSaver(max_to_keep=cfg.TRAIN.MAX_CHECKPOINTS, keep_checkpoint_every_n_hours=1, checkpoint_dir=logdir)
    callbacks = [
        # the guard comes first so that a non-finite step stops training before anything is saved
        NonFiniteLossGuard(),
        PeriodicCallback(saver, every_k_epochs=cfg.TRAIN.CHECKPOINT_PERIOD),
        SaveOnSignal(saver),
        schedules.StepScheduleSetter("learning_rate", lambda step: schedules.learning_rate_at(step, cfg)),
        EstimatedTimeLeft(median=True),
        ThroughputTracker(samples_per_step=cfg.TRAIN.NUM_GPUS),
        ResourceLogger(),
    ]
    if cfg.MASKPLUS.BIASED_TRAINING:
        schedule = [list(p) for p in cfg.MASKPLUS.MASK_LOSS_ALPHA]
        callbacks.append(schedules.StepScheduleSetter(
            "mask_loss_alpha", lambda step: schedules.piecewise_at(step, schedule, factor)))
    if cfg.TRAINER == "horovod":
        callbacks.append(HorovodSyncCheck())
    if cfg.TRAIN.EVAL_PERIOD > 0 and cfg.DATA.VAL:
        callbacks.append(EvalCallback(logdir, schedules.evaluation_epochs(cfg)))
    return callbacks


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


def build_train_config(logdir, load=None):
    if cfg.DATA.VALIDATE:
        validate_training_data()
    session_init, start_step = initial_weights(load, logdir)
    steps_per_epoch = cfg.TRAIN.STEPS_PER_EPOCH
    max_epoch = schedules.max_epoch(cfg)
    starting_epoch = start_step // steps_per_epoch + 1
    if starting_epoch > max_epoch:
        logger.warn(f"The checkpoint is at step {start_step}, beyond the schedule's end: nothing to train.")
    if cfg.DATA.SEED >= 0:
        tfv1.set_random_seed(cfg.DATA.SEED)
    return TrainConfig(
        model=model_for_config(),
        data=QueueInput(get_train_dataflow()),
        callbacks=make_callbacks(logdir),
        session_init=session_init,
        session_creator=NewSessionCreator(config=session_config()),
        steps_per_epoch=steps_per_epoch,
        starting_epoch=starting_epoch,
        max_epoch=max_epoch,
    )


def write_run_info(logdir, preset):
    """``<logdir>/run.json``: what this run is (preset, seed, full config), for the table tools."""
    info = {"preset": preset, "seed": cfg.DATA.SEED, "config": cfg.to_dict()}
    with open(os.path.join(logdir, "run.json"), "w") as f:
        json.dump(info, f, indent=1, default=str)


def train(logdir, load=None, preset=None):
    """Train with the finalised global config, logging to ``logdir``."""
    if is_chief():
        logger.set_logger_dir(logdir, action="k")
    else:
        import horovod.tensorflow as hvd
        logger.set_logger_dir(os.path.join(logdir, f"rank{hvd.rank()}"), action="k")
    logger.info("Config:\n" + str(cfg))
    if is_chief():
        write_run_info(logdir, preset)
    traincfg = build_train_config(logdir, load)
    launch_train_with_config(traincfg, make_trainer())
