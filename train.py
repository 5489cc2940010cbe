#!/usr/bin/env python
"""Train MaskPlus (Mask R-CNN ResNet-FPN + the paper's mask-branch techniques).

Examples:
    python train.py --preset maskplus-all --config DATA.BASEDIR=/data/coco \
        BACKBONE.WEIGHTS=ImageNet-R50-AlignPadding.npz --logdir train_log/maskplus-all
    horovodrun -np 8 python train.py --config TRAINER=horovod ... (docs/GETTING_STARTED.md)

``--minutes M`` fits the schedule's length to a time budget (see maskplus/engine/time_budget.py).
A log directory that holds a run is resumed from its checkpoint (step, learning rate and optimizer
state) when its run.json records the same run as this command; otherwise train.py stops before
writing anything and names the differences (``--logdir-action`` offers the other choices).
``--load`` starts a new run from a checkpoint or .npz.

SIGTERM or Ctrl-C: a checkpoint is written after the current step (an evaluation is abandoned)
and train.py exits with 128 + the signal's number; a second one stops at once.
"""
import argparse
import signal
import sys


def _stop_outside_training(signum, _frame):
    # outside training (before it starts, SaveOnSignal after) there is nothing to save: end
    # cleanly, with the lock released, instead of a KeyboardInterrupt's traceback
    raise SystemExit(f"Stopped on {signal.Signals(signum).name} outside the training steps: nothing to save.")


def _stop_cleanly_outside_training():
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _stop_outside_training)


if __name__ == "__main__":  # before the imports, which take seconds (maskplus-train: in main())
    _stop_cleanly_outside_training()

from maskplus import compat  # noqa: E402,F401  (its shims before anything imports TensorFlow)
from config import ConfigError, config as cfg  # noqa: E402
from maskplus.cli import add_config_arguments, apply_config_arguments, fail, finalize  # noqa: E402
from maskplus.engine.run_dir import ACTIONS  # noqa: E402


def print_config():
    from maskplus.engine.schedules import describe_schedule
    for key, value in cfg.items_flat():
        print(f"{key} = {value!r}")
    print("\n".join(["", "Schedule:"] + ["  " + line for line in describe_schedule(cfg)]))


def build_parser():
    """train.py's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--load", help="initialise from a TF checkpoint or .npz (whole model)")
    parser.add_argument("--logdir", default="train_log/maskplus", help="log and checkpoint directory")
    parser.add_argument("--logdir-action", choices=ACTIONS, default="resume",
                        help="when --logdir holds a run: resume it if its run.json agrees with this command, "
                             "else stop without writing (resume, the default); move it to <logdir>-<time> and "
                             "start afresh (backup); delete it and start afresh (delete); leave it and train in "
                             "a fresh <logdir>-<time> (new)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the finalised config and the schedule in steps, then exit (no graph, no images)")
    parser.add_argument("--minutes", type=float,
                        help="train for this many minutes instead of the schedule's steps: the schedule's LR "
                             "boundaries, alpha changes and evaluations keep their fractions of the run, "
                             "whose length is fitted to the step rate measured after warm-up starts")
    return parser


def main(argv=None):
    _stop_cleanly_outside_training()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.minutes is not None and args.minutes <= 0:
        parser.error("--minutes must be positive")
    apply_config_arguments(args)
    if args.minutes and cfg.TRAINER == "horovod":
        fail("--minutes does not work with TRAINER=horovod (each rank would fit its own schedule).")
    if args.minutes and cfg.TRAIN.DETERMINISTIC:
        fail("--minutes fits the schedule to the measured speed, which differs between runs: it does not go with "
             "TRAIN.DETERMINISTIC=True (give the steps: TRAIN.LR_SCHEDULE).")

    if cfg.TRAINER == "horovod":
        import horovod.tensorflow as hvd
        hvd.init()
    from maskplus.data.coco import DatasetError
    from maskplus.engine.callbacks import NonFiniteLossError
    from maskplus.engine.checkpoint import CheckpointError
    from maskplus.engine.run_dir import LogdirError
    from maskplus.engine.trainer import TrainingEndedEarly, TrainingInterrupted
    from maskplus.engine.determinism import DeterminismError
    try:
        finalize(is_training=True)
        if args.print_config:
            print_config()
            return
        from maskplus.engine.trainer import train
        train(args.logdir, args.load, preset=args.preset, minutes=args.minutes, logdir_action=args.logdir_action)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")
    except (DatasetError, CheckpointError, NonFiniteLossError, LogdirError, TrainingEndedEarly, DeterminismError) as e:
        fail(str(e))
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    main()
