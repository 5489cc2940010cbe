"""Command-line pieces shared by train.py and predict.py: config overrides and presets."""
import sys

from config import ConfigError, config as cfg
from maskplus.presets import describe_presets, preset_overrides


def add_config_arguments(parser):
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. --config DATA.BASEDIR=/data/coco TRAIN.BASE_LR=0.02")
    parser.add_argument("--preset", help="apply a named configuration (a paper table row) before --config")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")


def apply_config_arguments(args):
    """Preset, then ``--config`` overrides. Exits with a one-line message on a config error."""
    if args.list_presets:
        print(describe_presets())
        sys.exit(0)
    try:
        if args.preset:
            cfg.update_args(preset_overrides(args.preset))
        cfg.update_args(args.config)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")


def fail(message):
    """Exit with a clear message instead of a traceback."""
    sys.exit(f"Error: {message}")
