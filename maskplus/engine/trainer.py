"""Training: trainer choice, callbacks, initialisation and resume.

The schedule semantics are the Tensorpack example's: steps in the config are for a total batch of
8 images; with ``n`` towers a run takes ``8 / n`` times as many steps; gradients are summed over
towers and (with fewer than 8) accumulated to 8 images before an update. The schedule is one
:class:`Schedule` built from the finalised config, which a time budget refits; nothing here writes
the config.
"""
import logging
import os
import signal
import time

from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow
from tensorpack.callbacks import (EnableCallbackIf, EstimatedTimeLeft, MergeAllSummaries,
                                  MovingAverageSummary, PeriodicCallback, RunUpdateOps, ThroughputTracker)
from tensorpack.input_source import QueueInput
from tensorpack.tfutils.sesscreate import NewSessionCreator
from tensorpack.train import (SyncMultiGPUTrainerReplicated, TrainConfig,
                              launch_train_with_config)
from tensorpack.utils import logger

from config import config as cfg
from maskplus import atomic, console
from maskplus.data.coco import load_training_records
from maskplus.data.pipeline import LoaderFaultError, LoaderFaults, TrainingMapper, get_train_dataflow, rank_seed
from maskplus.engine import run_dir, time_budget
from maskplus.engine.callbacks import (DUMP_VARIABLES_ENV, CheckedModelSaver, DumpVariablesAtEnd, EvalCallback,
                                      HorovodSyncCheck, LoaderFaultGuard, NonFiniteLossGuard, ResourceLogger,
                                      RunProgress, SaveOnSignal, EpochsOnSchedule, is_chief, process_rank)
from maskplus.engine.checkpoint import CheckpointError, CheckpointInit, checkpoint_global_step
from maskplus.engine.evaluate import EvaluationParams
from maskplus.engine.determinism import enable_op_determinism, ops_without_deterministic_kernels_named
from maskplus.engine.model import build_model
from maskplus.engine.schedules import (MASK_LOSS_ALPHA, Schedule, StepScheduleSetter, piecewise_constant,
                                       step_factor, technique_schedules)
from maskplus.engine.session import session_config
from maskplus.precision import describe, resolve
from maskplus.techniques import registry


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


class TrainingEndedEarly(RuntimeError):
    """The main loop ended before the schedule's last step for no reason it reported."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal, after writing a checkpoint; ``signum`` is the signal's number."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


def make_callbacks(logdir, budget=None, faults=None, schedule=None):
    """Our callbacks, setting the learning rate and alpha of ``schedule`` (default: the config's
    :class:`Schedule`); with a :class:`time_budget.TimeBudget` those of its schedule in effect
    instead, the evaluations made at its planned evaluation steps instead of every so many epochs,
    and checkpoints there too. With ``faults`` (the data loader's :class:`LoaderFaults`) training
    stops once they are too many."""
    schedule = schedule or Schedule.from_config(cfg)
    saver = CheckedModelSaver(max_to_keep=cfg.TRAIN.MAX_CHECKPOINTS, keep_checkpoint_every_n_hours=1,
                              checkpoint_dir=logdir)

    def periodic(callback, every_k_epochs, also_periodic=False):
        if budget is None:
            return PeriodicCallback(callback, every_k_epochs=every_k_epochs)
        return EnableCallbackIf(callback, lambda self: budget.is_evaluation_step(self.global_step) or (
            also_periodic and self.epoch_num % every_k_epochs == 0))

    def in_effect():  # a time budget replaces its schedule with every refit
        return schedule if budget is None else budget.schedule

    # a budgeted run sets its epochs' lengths, ends itself and logs its own time left
    unbudgeted = budget is None
    callbacks = [
        # the guard comes first so that a non-finite step stops training before anything is saved
        NonFiniteLossGuard(),
        *([EpochsOnSchedule(cfg.TRAIN.STEPS_PER_EPOCH, schedule.total_steps)] if unbudgeted else []),
        periodic(saver, cfg.TRAIN.CHECKPOINT_PERIOD, also_periodic=True),
        SaveOnSignal(saver),
        *([LoaderFaultGuard(faults, saver)] if faults is not None else []),
        StepScheduleSetter("learning_rate", lambda step: in_effect().lr_at(step)),
        *([EstimatedTimeLeft(median=True)] if unbudgeted else []),
        ThroughputTracker(samples_per_step=cfg.TRAIN.NUM_GPUS),
        ResourceLogger(),
    ]
    for name, steps in technique_schedules(cfg).items():
        if name == MASK_LOSS_ALPHA:  # refitted with the rest of the schedule by a time budget
            callbacks.append(StepScheduleSetter(name, lambda step: in_effect().alpha_at(step)))
        else:
            callbacks.append(StepScheduleSetter(name, piecewise_constant(steps, step_factor(cfg.TRAIN.NUM_GPUS))))
    if cfg.TRAINER == "horovod":
        callbacks.append(HorovodSyncCheck())
    if cfg.TRAIN.EVAL_PERIOD > 0 and cfg.DATA.VAL:
        if budget is None:  # every EVAL_PERIOD epochs and after the last one, as the example
            callbacks.append(EvalCallback(logdir, EvaluationParams.from_config(cfg), cfg.TRAINER, schedule.eval_steps))
        else:
            callbacks.append(periodic(EvalCallback(logdir, EvaluationParams.from_config(cfg), cfg.TRAINER),
                                      cfg.TRAIN.EVAL_PERIOD))
    if budget is not None:
        callbacks.append(budget)  # after evaluation and checkpointing, whose time it measures
    if os.environ.get(DUMP_VARIABLES_ENV):  # a test hook: see DumpVariablesAtEnd
        callbacks.append(DumpVariablesAtEnd(os.environ[DUMP_VARIABLES_ENV], cfg.TRAINER))
    return callbacks


def make_time_budget(deadline, on_refit=None):
    """A :class:`time_budget.TimeBudget` that ends the run by ``deadline`` with the configured
    schedule's shape. Its :attr:`schedule` starts as the config's with the drops on exact steps
    (the budget's epochs vary in length) and is refitted to every plan; ``on_refit(budget)`` is
    called after each refit (the trainer records it in run.json). The config is not written."""
    factor = step_factor(cfg.TRAIN.NUM_GPUS)
    t = cfg.TRAIN
    schedule = Schedule.from_config(cfg, rounding="step")
    eval_every = t.EVAL_PERIOD * t.STEPS_PER_EPOCH if t.EVAL_PERIOD > 0 and cfg.DATA.VAL else 0
    alpha = technique_schedules(cfg).get(MASK_LOSS_ALPHA, [[0, 1.0]])
    shape = time_budget.run_shape(t.LR_SCHEDULE, alpha, eval_every, factor)
    initial = time_budget.plan_for(schedule.total_steps, shape)

    val_images = 0
    if eval_every:
        from maskplus.data.coco import get_dataset
        val_images = sum(len(get_dataset(n).coco.dataset.get("images", [])) for n in cfg.DATA.VAL)

    def eval_seconds(seconds_per_step):
        # until one is measured: inference of an image is taken to cost about half a training step,
        # plus the first run of the inference graph
        return 5 + 0.5 * seconds_per_step * val_images

    def refitted(_plan):
        if on_refit is not None:
            on_refit(budget)

    budget = time_budget.TimeBudget(deadline, shape, initial, refitted, eval_seconds, grain=t.STEPS_PER_EPOCH,
                                    schedule=schedule)
    return budget


def quiet_console_callbacks(total_steps):
    """Tensorpack's default callbacks with one progress bar for the run on the quiet console
    instead of a bar per epoch on stdout (which goes to the log)."""
    return [MovingAverageSummary(), RunProgress(total_steps), MergeAllSummaries(), RunUpdateOps()]


def initial_weights(load, logdir):
    """Session init and starting step: resume from ``logdir`` if it has a checkpoint (every
    variable must fit; train() has checked that the directory's run is this one), else ``--load``
    (as the example: variables of another shape, e.g. the class-specific outputs when fine-tuning
    on other classes, are skipped and reported), else ``BACKBONE.WEIGHTS`` (as the example: every
    variable of the file whose name the graph has). Says in one line which it is."""
    # the newest intact checkpoint (run_dir.open_run_directory set newer damaged ones aside)
    resume = run_dir.resume_point(logdir).checkpoint if logdir and os.path.isdir(logdir) else None
    if resume:
        step = checkpoint_global_step(resume)
        also = f"; --load {load} started this run and is not read again" if load else ""
        console.say(f"Weights: resuming from the log directory's latest checkpoint {resume} (step {step}){also}.",
                    logger.info)
        logger.info(f"Resuming from the latest checkpoint in the log directory: {resume}")
        try:
            return CheckpointInit(resume), step
        except CheckpointError as e:  # its bytes are all there but do not read back (a checksum)
            raise CheckpointError(f"{e} To resume from the checkpoint before it, move its files out of {logdir} "
                                  f"(e.g. into a folder damaged-{os.path.basename(resume)}), then rerun the same "
                                  f"command.") from None
    if load:
        console.say(f"Weights: --load {load} (the log directory holds no checkpoint).", logger.info)
        return CheckpointInit(load, ignore_mismatch=True), checkpoint_global_step(load)
    if cfg.BACKBONE.WEIGHTS:
        console.say(f"Weights: BACKBONE.WEIGHTS {cfg.BACKBONE.WEIGHTS} (no --load, no checkpoint in the log "
                    f"directory).", logger.info)
        return CheckpointInit(cfg.BACKBONE.WEIGHTS), 0
    console.say("Weights: none, training from scratch (no --load, no BACKBONE.WEIGHTS, no checkpoint in the log "
                "directory).", logger.info)
    return None, 0


def check_validation_data():
    """Everything the run's evaluations will need, checked before its first step: each
    ``DATA.VAL`` dataset exists, loads and passes the training data's validation with every image
    usable (each is scored; image files are checked unless ``DATA.VALIDATE=False``), and has the
    training classes in the same order (evaluation maps the model's labels to the json's categories
    by position: other names or another order would give wrong AP). Nothing to check when the run
    never evaluates (``TRAIN.EVAL_PERIOD=0``)."""
    from maskplus.data.coco import DatasetError, get_dataset
    from maskplus.data.validate import validate_dataset
    if not (cfg.TRAIN.EVAL_PERIOD > 0 and cfg.DATA.VAL):
        return
    classes = list(cfg.DATA.CLASS_NAMES[1:])
    problems = []
    for name in cfg.DATA.VAL:
        try:
            dataset = get_dataset(name)
            report = validate_dataset(dataset, cfg.MODE_MASK, cfg.DATA.ABSOLUTE_COORD, check_images=cfg.DATA.VALIDATE)
        except DatasetError as e:
            problems.append(str(e))
            continue
        logger.info(report.summary())
        problems += report.errors
        for reason, ids in sorted(report.skipped_images.items()):
            files = [report.image_files.get(i, "?") for i in ids[:5]]
            problems.append(f"Dataset '{name}': {len(ids)} x {reason}: {', '.join(files)}"
                            f"{' ...' if len(ids) > 5 else ''} (image ids {ids[:5]}); every validation image "
                            f"is scored, so each must be readable")
        if dataset.class_names != classes:
            problems.append(_class_mismatch(name, dataset.class_names, classes))
    if problems:
        raise DatasetError(f"DATA.VAL {list(cfg.DATA.VAL)} cannot be evaluated, which this run would do every "
                           f"TRAIN.EVAL_PERIOD={cfg.TRAIN.EVAL_PERIOD} epochs (set TRAIN.EVAL_PERIOD=0 to train "
                           f"without evaluations):\n  " + "\n  ".join(problems))


def _class_mismatch(name, val_classes, classes):
    if sorted(val_classes) == sorted(classes):
        return (f"Dataset '{name}' has the training classes in another order (by category id): {val_classes} "
                f"vs {classes}. Evaluation maps labels to categories by position, so its AP would be wrong: "
                f"give its categories ids in the training order.")
    only_val = [c for c in val_classes if c not in classes]
    only_train = [c for c in classes if c not in val_classes]
    return (f"Dataset '{name}' has other classes than the training data ({len(val_classes)} vs {len(classes)}; "
            f"only in '{name}': {only_val[:10]}, only in the training data: {only_train[:10]}).")


def validate_training_data():
    """Check every training dataset once, report all problems, stop on errors (DATA.VALIDATE).
    Returns ``{dataset name: image ids}`` of the unusable images, to be left out of training."""
    from maskplus.data.coco import DatasetError, get_dataset
    from maskplus.data.validate import validate_dataset
    errors, excluded = [], {}
    for name in cfg.DATA.TRAIN:
        report = validate_dataset(get_dataset(name), cfg.MODE_MASK, cfg.DATA.ABSOLUTE_COORD)
        logger.info(report.summary())
        errors += report.errors
        excluded[name] = report.bad_image_ids
    if errors:
        raise DatasetError("The training data cannot be used:\n  " + "\n  ".join(errors))
    return excluded


def train_dataflow(faults, excluded=None):
    """The training DataFlow of the config's ``DATA.TRAIN``, without the ``excluded`` images
    (``{dataset name: image ids}``, what validation found unusable); failing images go to ``faults``."""
    records = load_training_records(cfg.DATA.TRAIN, cfg.MODE_MASK, cfg.DATA.ABSOLUTE_COORD,
                                    cfg.DATA.FILTER_EMPTY_ANNOTATIONS, excluded)
    logger.info(f"Training dataflow: {len(records)} images from {', '.join(cfg.DATA.TRAIN)}.")
    return get_train_dataflow(records, TrainingMapper.from_config(cfg), faults,
                              seed=rank_seed(cfg.DATA.SEED, process_rank(cfg.TRAINER)),
                              num_workers=cfg.DATA.NUM_WORKERS, ordered=cfg.TRAIN.DETERMINISTIC)


def build_train_config(logdir, schedule, load=None, budget=None, faults=None, excluded=None):
    """The run's TrainConfig on ``schedule`` (a :class:`Schedule`); with a ``budget`` (a
    :class:`time_budget.TimeBudget`) the run's length is fitted to end by its deadline instead.
    The data must have been checked (:func:`check_data`, whose unusable images are ``excluded``)."""
    session_init, start_step = initial_weights(load, logdir)
    steps_per_epoch = cfg.TRAIN.STEPS_PER_EPOCH
    max_epoch = schedule.max_epoch
    starting_epoch = start_step // steps_per_epoch + 1
    if budget is not None:
        # epochs of varying length (the budget sets each); the budget, not max_epoch, ends the run
        from tensorpack.callbacks import JSONWriter
        previous = JSONWriter.load_existing_epoch_number(logdir) if start_step else None
        starting_epoch, max_epoch = (previous or 0) + 1, 10 ** 9
    if starting_epoch > max_epoch:
        logger.warn(f"The checkpoint is at step {start_step}, beyond the schedule's end: nothing to train.")
    if cfg.DATA.SEED >= 0:
        tfv1.set_random_seed(cfg.DATA.SEED)
    if cfg.TRAIN.DETERMINISTIC:  # before the graph: see maskplus/engine/determinism.py
        enable_op_determinism()
    extra = None
    if console.stream() is not None:
        extra = quiet_console_callbacks(lambda: budget.total_steps if budget else schedule.total_steps)
    return TrainConfig(
        model=build_model(),
        data=QueueInput(train_dataflow(faults, excluded)),
        callbacks=make_callbacks(logdir, budget, faults, schedule),
        extra_callbacks=extra,
        session_init=session_init,
        session_creator=NewSessionCreator(config=session_config(resolve(cfg.TRAIN.PRECISION).precision,
                                                                     cfg.TRAIN.INTRA_OP_THREADS)),
        steps_per_epoch=steps_per_epoch,
        starting_epoch=starting_epoch,
        max_epoch=max_epoch,
    )


def write_run_info(logdir, preset, identity, schedule=None, refits=()):
    """``<logdir>/run.json``: what this run is (preset, seed, the finalised config) for the table
    tools, its identity, which a resume must match (:mod:`maskplus.engine.run_dir`), the schedule
    in effect in real steps (default: the config's) and a time budget's ``refits`` of it. Written
    atomically: a kill never leaves half a record."""
    schedule = schedule or Schedule.from_config(cfg)
    info = {"preset": preset, "seed": cfg.DATA.SEED, "config": cfg.to_dict(), "identity": identity,
            "schedule": schedule.to_dict(), "refits": list(refits), "plugins": registry.plugin_modules()}
    path = os.path.join(logdir, run_dir.RUN_INFO)
    try:
        atomic.write_json(path, info, indent=1, default=str)
    except OSError as e:  # a full disk
        raise run_dir.LogdirError(f"Cannot write {path}: {e.strerror or e}.") from None


def check_data():
    """Everything about the data the run will need, checked before the log directory is touched.
    Returns ``{dataset name: image ids}`` of the training images validation found unusable."""
    excluded = validate_training_data() if cfg.DATA.VALIDATE else {}
    check_validation_data()
    return excluded


def check_initial_weights(load, logdir, action):
    """The weights a fresh run starts from (``--load``, else ``BACKBONE.WEIGHTS``) exist and are
    complete, readable weights files, checked before the log directory is touched (not when the
    log directory holds checkpoint files: a checkpoint there is resumed instead, or the directory
    refused)."""
    from maskplus.engine.checkpoint import verify_checkpoint
    if action == "resume" and os.path.isdir(logdir) and run_dir.has_checkpoint(logdir):
        return
    if load or cfg.BACKBONE.WEIGHTS:
        verify_checkpoint(load or cfg.BACKBONE.WEIGHTS)


def identity_of_this_run(preset, load, minutes):
    from maskplus.data.coco import get_dataset
    data = run_dir.data_fingerprint({n: get_dataset(n).json_path for n in cfg.DATA.TRAIN})
    return run_dir.run_identity(cfg.to_dict(), preset, load, minutes, data)


def prepare_run_directory(logdir, action, identity):
    """The chief checks the directory against this run, acts on it and locks it; the other Horovod
    ranks get its decision (so that all stop, or all use the same directory, never some waiting)."""
    plan, error = None, None
    if is_chief(cfg.TRAINER):
        try:
            plan = run_dir.open_run_directory(logdir, action, identity)
        except run_dir.LogdirError as e:
            error = str(e)
    if cfg.TRAINER == "horovod":
        decision = broadcast_from_chief({"error": error, "path": plan.path if plan else None})
        if not is_chief(cfg.TRAINER):
            error = decision["error"]
            plan = run_dir.RunDirectory(decision["path"], None, []) if decision["path"] else None
    if error:
        raise run_dir.LogdirError(error)
    return plan


def broadcast_from_chief(obj):
    """``obj`` as Horovod rank 0 has it, on every rank (on the CPU, in a graph of its own)."""
    from horovod.tensorflow.functions import broadcast_object
    with tf.Graph().as_default(), tfv1.Session(config=tfv1.ConfigProto(device_count={"GPU": 0})) as sess:
        return broadcast_object(obj, root_rank=0, session=sess, name="maskplus_run_directory")


def train(logdir, load=None, preset=None, minutes=None, logdir_action="resume"):
    """Train with the finalised global config, logging to ``logdir`` (or where ``logdir_action``
    puts it, see :mod:`maskplus.engine.run_dir`); with ``minutes``, fit the schedule so that
    training (graph building included) ends that many minutes from now. Everything is checked
    before anything is written; a run stopped by a signal raises :class:`TrainingInterrupted`."""
    deadline = time.time() + 60 * minutes if minutes else None
    logger.addFilter(_OneLineStopMessage())
    excluded = check_data()
    check_initial_weights(load, logdir, logdir_action)
    identity = identity_of_this_run(preset, load, minutes)
    plan = prepare_run_directory(logdir, logdir_action, identity)
    try:
        _train_in(plan, load, preset, deadline, identity, excluded)
    finally:
        if plan.lock is not None:
            plan.lock.release()


def _train_in(plan, load, preset, deadline, identity, excluded):
    logdir = plan.path
    if is_chief(cfg.TRAINER):
        logger.set_logger_dir(logdir, action="k")
    else:
        logger.set_logger_dir(os.path.join(logdir, f"rank{process_rank(cfg.TRAINER)}"), action="k")
    for line in plan.notes:
        console.say(line, logger.info)
    logger.info("Config:\n" + str(cfg))
    schedule = Schedule.from_config(cfg)
    # a resumed time-budgeted run keeps the record of its earlier refits
    earlier = (run_dir.read_run_info(logdir) or {}).get("refits", []) if plan.resume and is_chief(cfg.TRAINER) else []

    def record(current, refits=()):
        if is_chief(cfg.TRAINER):
            write_run_info(logdir, preset, identity, current, earlier + list(refits))

    budget = make_time_budget(deadline, lambda b: record(b.schedule, b.refits)) if deadline is not None else None
    record(budget.schedule if budget else schedule)
    faults = LoaderFaults(cfg.DATA.LOADER_MAX_SKIPPED)
    traincfg = build_train_config(logdir, schedule, load, budget, faults, excluded)
    where = describe_devices(cfg.TRAIN.NUM_GPUS, gpu_names(), describe(resolve(cfg.TRAIN.PRECISION)))
    console.say(where, logger.info)
    trainer = make_trainer()
    with ops_without_deterministic_kernels_named(cfg.TRAIN.DETERMINISTIC):
        launch_train_with_config(traincfg, trainer)
    raise_what_stopped_training(traincfg.callbacks, faults, schedule, trainer.loop.global_step)


def raise_what_stopped_training(callbacks, faults, schedule, step):
    """After the main loop, at ``step`` of a run on ``schedule`` (or on the time budget's among the
    ``callbacks``): an error for what ended it early, which Tensorpack ends like a finished run (a
    checkpoint that failed in an after-training save, the data loader's faults, a signal, or
    anything else that ended the input before the schedule's last step)."""
    def find(kind):  # unwrapping Tensorpack's PeriodicCallback/EnableCallbackIf
        return next((getattr(c, "cb", c) for c in callbacks if isinstance(getattr(c, "cb", c), kind)), None)

    on_signal, guard, saver = find(SaveOnSignal), find(LoaderFaultGuard), find(CheckedModelSaver)
    for c in (on_signal, guard):
        if c is not None and c.save_error is not None:
            raise c.save_error
    saved = saver.last_checkpoint if saver is not None else None
    if faults.error:
        where = f"Training stopped; the last checkpoint is {saved}" if saved else "Training stopped"
        raise LoaderFaultError(f"{faults.error}\n{where}. Fix or remove these images (or raise "
                               f"DATA.LOADER_MAX_SKIPPED), then rerun the same command to resume.")
    if on_signal is not None and on_signal.received:
        raise TrainingInterrupted(f"Stopped on {on_signal.received}; the last checkpoint is "
                                  f"{saved or '(none written)'}. Rerun the same command to resume.",
                                  int(signal.Signals[on_signal.received]))
    budget = find(time_budget.TimeBudget)
    last = budget.total_steps if budget is not None else schedule.total_steps
    if last is None or step < last:
        raise TrainingEndedEarly(
            f"Training ended at step {step}, before the schedule's last step ({last or 'not planned yet'}): its "
            f"input ended unexpectedly (the log says why). The last checkpoint is {saved or '(none written)'}; "
            f"rerun the same command to resume.")


class _OneLineStopMessage(logging.Filter):
    """Tensorpack logs whatever ended its main loop; when the data loader closed the input queue
    that is TensorFlow's error with the queue op's definition stack, which reads like a crash.
    The error that follows says what happened."""

    def filter(self, record):
        # record.msg, not getMessage(): Tensorpack logs "Training failed at global_step=" with an
        # argument and no placeholder, which getMessage() cannot format
        message = record.msg
        if isinstance(message, str) and message.startswith("Training was stopped by exception") \
                and "QueueInput" in message:
            record.msg, record.args = "Training was stopped: the input queue was closed.", ()
        return True


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
