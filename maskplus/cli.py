"""Command-line pieces shared by train.py and predict.py: config overrides and presets, and the
finalisation with the datasets the config names (registered here, as Tensorpack's example does)."""
import os
import sys

from config import ConfigError, config as cfg, finalize_configs
from maskplus.presets import describe_presets, preset_overrides


def add_config_arguments(parser):
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. --config DATA.BASEDIR=/data/coco TRAIN.BASE_LR=0.02")
    parser.add_argument("--preset", help="apply a named configuration (a paper table row) before --config")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.add_argument("--plugin", nargs="+", default=[], metavar="MODULE",
                        help="import these modules first: plug-in techniques that register themselves "
                             "(CONTRIBUTING.md); their config keys are added. predict.py also imports those "
                             "its run recorded")


def load_plugins(modules, source="--plugin"):
    """Import each plug-in module (a technique that registers itself), then add the registered
    techniques' config keys. Exits with a one-line message naming ``source`` and the module when
    it cannot be imported or registers no technique."""
    import importlib
    from maskplus.techniques import registry
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of a user's module is reported the same way)
            fail(f"{source} {name}: cannot import it ({type(e).__name__}: {e}). Is it on PYTHONPATH?")
        if name not in registry.plugin_modules():
            fail(f"{source} {name}: it registers no technique (decorate its class with "
                 f"maskplus.techniques.registry.register).")
    registry.add_config(cfg)


def apply_config_arguments(args):
    """Preset, then ``--config`` overrides. Exits with a one-line message on a config error."""
    if args.list_presets:
        print(describe_presets())
        sys.exit(0)
    load_plugins(args.plugin)
    try:
        if args.preset:
            cfg.update_args(preset_overrides(args.preset))
        cfg.update_args(args.config)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")


def apply_model_config_arguments(args):
    """predict.py's config: the run ``args.load`` belongs to (its run.json), then ``--preset`` and
    ``--config`` on top (:mod:`maskplus.engine.run_config`). Prints the line naming the model and
    where its config comes from; exits with a one-line message on a config error."""
    from maskplus.engine.run_config import RunConfigError, configure, recorded_plugins
    if args.list_presets:
        print(describe_presets())
        sys.exit(0)
    load_plugins(args.plugin)
    try:
        recorded, run_info = recorded_plugins(args.load)
    except RunConfigError as e:
        fail(str(e))
    load_plugins([m for m in recorded if m not in args.plugin], source=f"{run_info} records the plug-in")
    try:
        line = configure(cfg, args.load, preset_overrides, args.preset, args.config)
    except ConfigError as e:
        sys.exit(f"Config error: {e}")
    except RunConfigError as e:
        fail(str(e))
    if args.load:
        print(line, flush=True)
    return line


def fail(message):
    """Exit with a clear message instead of a traceback."""
    sys.exit(f"Error: {message}")


def register_datasets(c=cfg):
    """Register the datasets the config names with :mod:`maskplus.data.coco`'s registry (replacing
    earlier registrations): every ``coco_<split>`` under ``DATA.BASEDIR`` and each ``DATA.CUSTOM``
    entry. A malformed ``DATA.CUSTOM`` entry is a DatasetError naming it."""
    from maskplus.data import coco
    coco.clear_registry()
    coco.register_coco(os.path.expanduser(c.DATA.BASEDIR))
    for name, spec in (c.DATA.CUSTOM or {}).items():
        if not isinstance(spec, (list, tuple)) or len(spec) != 2:
            raise coco.DatasetError(f"DATA.CUSTOM['{name}'] must be [json_path, image_dir], got {spec!r}.")
        coco.register_dataset(name, str(spec[0]), str(spec[1]))


def dataset_class_names(is_training, c=cfg):
    """The class names (no "BG") of the datasets a run uses (``DATA.TRAIN`` to train, else
    ``DATA.VAL``; ``coco_*`` names without files stand for COCO's 80 classes), or COCO's with
    ``DATA.CLASS_NAMES=coco``. For inference, a dataset that cannot say is a ConfigError telling
    how to give the names instead."""
    from maskplus.data.coco import DatasetError, class_names_for
    from maskplus.data.coco_classes import COCO_CLASS_NAMES
    if c.DATA.CLASS_NAMES == "coco":
        return list(COCO_CLASS_NAMES)
    try:
        return class_names_for(c.DATA.TRAIN if is_training else c.DATA.VAL)
    except DatasetError as e:
        if is_training:
            raise
        raise ConfigError(f"{e}\nTo predict without the dataset, give the class names: "
                          f"--config DATA.CLASS_NAMES=coco (the 80 COCO classes) or "
                          f"DATA.CLASS_NAMES=\"['name1','name2']\".") from None


def finalize(is_training, num_gpus=None):
    """What train.py and predict.py do once the overrides are applied: register the config's
    datasets, then finalise and freeze the config with their class names."""
    register_datasets(cfg)
    return finalize_configs(is_training, num_gpus, class_names=lambda: dataset_class_names(is_training))
