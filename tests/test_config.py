"""Config overrides: literal parsing, type checks, unknown keys, consistency, schedules."""
import os

import pytest

from config import ConfigError, config as cfg, finalize_configs
from tests.helpers import config_snapshot, configure
from maskplus.presets import PRESETS, TABLES, model_overrides, preset_overrides


def test_overrides_are_parsed_as_literals_of_the_default_type():
    with config_snapshot():
        cfg.update_args(["TRAIN.BASE_LR=0.02", "BACKBONE.RESNET_NUM_BLOCKS=[1,1,1,1]", "BACKBONE.NORM=GN",
                         "MODE_MASK=False", "TRAIN.WARMUP=5", "DATA.VAL=coco_minival2014",
                         "TRAIN.LR_SCHEDULE=[10, 20, 30]", "TRAIN.BASE_LR=1"])
        assert cfg.TRAIN.BASE_LR == 1.0 and isinstance(cfg.TRAIN.BASE_LR, float)
        assert cfg.BACKBONE.RESNET_NUM_BLOCKS == [1, 1, 1, 1]
        assert cfg.BACKBONE.NORM == "GN" and cfg.MODE_MASK is False and cfg.TRAIN.WARMUP == 5
        assert tuple(cfg.DATA.VAL) == ("coco_minival2014",)
        assert cfg.TRAIN.LR_SCHEDULE == [10, 20, 30]


def test_override_values_are_never_evaluated_as_code():
    with config_snapshot():
        cfg.update_args(["DATA.BASEDIR=__import__('os').getcwd()"])
        assert cfg.DATA.BASEDIR == "__import__('os').getcwd()"


def test_unknown_key_suggests_the_closest_one():
    with config_snapshot(), pytest.raises(ConfigError, match=r"Unknown config key 'TRAIN.BASE_LRR'.*'TRAIN.BASE_LR'"):
        cfg.update_args(["TRAIN.BASE_LRR=0.1"])


def test_the_removed_starting_epoch_is_refused_by_name_with_the_reason():
    # Tensorpack's example took it to resume an epoch count; here the checkpoint's global step gives it
    with config_snapshot(), pytest.raises(ConfigError, match=r"'TRAIN.STARTING_EPOCH' was removed: .*global step"):
        cfg.update_args(["TRAIN.STARTING_EPOCH=3"])
    assert "STARTING_EPOCH" not in cfg.TRAIN


@pytest.mark.parametrize("arg, expected", [
    ("TRAIN.BASE_LR=fast", "TRAIN.BASE_LR' expects a value like 0.01"),
    ("BACKBONE.RESNET_NUM_BLOCKS=3", "expects a value like"),
    ("MODE_MASK=1", "MODE_MASK' expects"),
    ("TRAIN.WARMUP", "not of the form KEY=VALUE"),
])
def test_ill_typed_override_is_rejected_with_the_key_named(arg, expected):
    with config_snapshot(), pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        cfg.update_args([arg])


@pytest.mark.parametrize("overrides, message", [
    ({"RPN.ANCHOR_SIZES": (32, 64)}, "needs one size per FPN level"),
    ({"FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head"}, "is a GN head: set FPN.NORM=GN"),
    ({"BACKBONE.NORM": "BN"}, "BACKBONE.NORM must be one of"),
    ({"MASKPLUS.BOUNDARY_REFINEMENT": "better"}, "none, original or improved"),
    ({"MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_DIMS": [256, 128]}, "must end with FPN.NUM_CHANNEL"),
    ({"MASKPLUS.QUASI_MULTITASK": ["4x"]}, "accepts '0.5x' and '2x'"),
    ({"TRAIN.LR_SCHEDULE": "fast"}, "is not one of 1x, 2x"),
    ({"TRAIN.LR_DECAY": "exponential"}, "TRAIN.LR_DECAY must be 'step', 'linear' or 'cosine'"),
])
def test_inconsistent_combinations_fail_at_finalisation(overrides, message):
    with config_snapshot(), pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        configure(overrides, tiny=False)


@pytest.mark.parametrize("overrides, key", [
    ({"FPN.NORM": "GN", "FPN.NUM_CHANNEL": 48}, "FPN.NUM_CHANNEL=48"),
    ({"FPN.NORM": "GN", "FPN.FRCNN_HEAD_FUNC": "fastrcnn_4conv1fc_gn_head", "FPN.FRCNN_CONV_HEAD_DIM": 80},
     "FPN.FRCNN_CONV_HEAD_DIM=80"),
    ({"FPN.NORM": "GN", "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head", "MRCNN.HEAD_DIM": 100}, "MRCNN.HEAD_DIM=100"),
])
def test_a_group_norm_width_that_32_groups_do_not_divide_is_a_config_error_naming_the_key(overrides, key):
    with config_snapshot(), pytest.raises(ConfigError, match=key.replace(".", r"\.") + " must be a multiple of 32"):
        configure(overrides, tiny=False)


@pytest.mark.parametrize("overrides", [
    {"FPN.NORM": "GN", "FPN.NUM_CHANNEL": 96, "FPN.FRCNN_HEAD_FUNC": "fastrcnn_4conv1fc_gn_head",
     "FPN.FRCNN_CONV_HEAD_DIM": 160, "FPN.MRCNN_HEAD_FUNC": "maskrcnn_up4conv_gn_head", "MRCNN.HEAD_DIM": 64},
    {"FPN.NUM_CHANNEL": 48, "FPN.FRCNN_HEAD_FUNC": "fastrcnn_4conv1fc_head", "FPN.FRCNN_CONV_HEAD_DIM": 80,
     "MRCNN.HEAD_DIM": 100},  # no GroupNorm: any width
    {"MODE_FPN": False, "FPN.NORM": "GN", "FPN.NUM_CHANNEL": 48, "RPN.ANCHOR_STRIDE": 16},  # C4 builds no FPN
])
def test_widths_without_group_norm_or_divisible_into_32_groups_pass(overrides):
    with config_snapshot():
        configure(overrides, tiny=False)


def test_the_config_refuses_exactly_the_widths_group_norm_cannot_split():
    from maskplus.compat import tf, tfv1
    from maskplus.modeling.layers import GroupNorm
    widths = [48, 64, 80, 96, 100, 128]

    def layer_fails(width):
        with tf.Graph().as_default():
            try:
                GroupNorm("gn", tfv1.placeholder(tf.float32, [None, width, 4, 4]))
            except ValueError:
                return True
        return False

    def config_fails(width):
        with config_snapshot():
            try:
                configure({"FPN.NORM": "GN", "FPN.NUM_CHANNEL": width}, tiny=False)
            except ConfigError:
                return True
        return False

    assert [layer_fails(w) for w in widths] == [True, False, True, False, True, False]
    assert [config_fails(w) for w in widths] == [layer_fails(w) for w in widths]


def test_the_class_names_come_from_the_caller_after_the_configs_own_checks():
    """config.py knows no dataset: the command lines give the classes (maskplus/cli.py), asked for
    only once the config passed its checks, so a config error never waits for an annotation file."""
    asked = []

    def names():
        asked.append(True)
        return ["cat", "dog"]

    with config_snapshot():
        cfg.DATA.CLASS_NAMES = []
        cfg.TRAIN.STEPS_PER_EPOCH = 0
        with pytest.raises(ConfigError, match="TRAIN.STEPS_PER_EPOCH=0"):
            finalize_configs(is_training=True, num_gpus=1, class_names=names)
        assert asked == []
    with config_snapshot():
        cfg.DATA.CLASS_NAMES = []
        with pytest.raises(ConfigError, match=r"DATA.CLASS_NAMES=\[\]: the class names must be given"):
            finalize_configs(is_training=True, num_gpus=1)
    with config_snapshot():
        cfg.DATA.CLASS_NAMES = []
        finalize_configs(is_training=True, num_gpus=1, class_names=names)
        assert cfg.DATA.CLASS_NAMES == ["BG", "cat", "dog"] and cfg.DATA.NUM_CLASS == 3 and asked == [True]
    with config_snapshot():  # set in the config: the caller's are not asked for
        cfg.DATA.CLASS_NAMES = ["wolf"]
        finalize_configs(is_training=True, num_gpus=1, class_names=names)
        assert cfg.DATA.CLASS_NAMES == ["BG", "wolf"] and asked == [True]


def test_config_is_frozen_after_finalisation():
    with config_snapshot():
        configure({})
        with pytest.raises(ConfigError, match="frozen"):
            cfg.TRAIN.BASE_LR = 1.0


@pytest.mark.parametrize("name, steps", [("1x", [120000, 160000, 180000]), ("2x", [240000, 320000, 360000])])
def test_schedule_names_expand_to_detectron_steps(name, steps):
    with config_snapshot():
        configure({"TRAIN.LR_SCHEDULE": name})
        assert cfg.TRAIN.LR_SCHEDULE == steps


def test_max_size_is_rounded_up_to_the_padding_multiple():
    with config_snapshot():
        configure({"PREPROC.MAX_SIZE": 1333.0}, tiny=False)
        assert cfg.PREPROC.MAX_SIZE == 1344.0


def test_every_paper_preset_applies_and_finalises_with_the_paper_setup():
    for name in {row for rows in TABLES.values() for row in rows} | {"maskplus-all"}:
        with config_snapshot():
            cfg.update_args(preset_overrides(name))
            configure({}, tiny=False)
            assert cfg.TRAIN.LR_SCHEDULE == [240000, 320000, 360000]  # 360k iterations
            assert cfg.FRCNN.BATCH_PER_IM == 512 and cfg.FRCNN.FG_RATIO == 0.25


def test_the_cpu_demo_preset_finalises():
    with config_snapshot():
        cfg.update_args(preset_overrides("demo-cpu"))
        configure({}, tiny=False)
        assert cfg.BACKBONE.NORM == "GN" and cfg.MASKPLUS.BOUNDARY_REFINEMENT == "improved"


def test_a_presets_model_overrides_build_its_model_without_its_training_data_or_techniques():
    # what scripts/benchmark.py --quick times as "the CPU demo's model"
    model_keys = ("MODE_MASK", "BACKBONE.NORM", "FPN.NUM_CHANNEL", "FPN.FRCNN_HEAD_FUNC", "MRCNN.HEAD_DIM",
                  "RPN.TEST_PER_LEVEL_NMS_TOPK", "FRCNN.FG_RATIO", "PREPROC.MAX_SIZE")
    with config_snapshot():
        cfg.update_args(preset_overrides("demo-cpu"))
        configure({}, tiny=False)
        demo = {key: cfg.get(key) for key in model_keys + ("TRAIN.BASE_LR", "MASKPLUS.CONTEXT_FUSION")}
    with config_snapshot():
        cfg.update_args(model_overrides("demo-cpu"))
        configure({}, tiny=False)
        model = {key: cfg.get(key) for key in model_keys + ("TRAIN.BASE_LR", "MASKPLUS.CONTEXT_FUSION")}
    assert demo["FPN.NUM_CHANNEL"] == 64 and demo["FPN.FRCNN_HEAD_FUNC"] == "fastrcnn_4conv1fc_gn_head"
    assert {k: model[k] for k in model_keys} == {k: demo[k] for k in model_keys}
    assert (model["TRAIN.BASE_LR"], model["MASKPLUS.CONTEXT_FUSION"]) == (0.01, False)  # the defaults


def test_every_table_row_is_a_preset_and_unknown_presets_are_named():
    assert all(row in PRESETS for rows in TABLES.values() for row in rows)
    with pytest.raises(ConfigError, match="Unknown preset 'nope'.*maskplus-all"):
        preset_overrides("nope")


def _learning_rates(decay, steps, schedule=(50, 75, 100)):
    from maskplus.engine.schedules import Schedule
    with config_snapshot():
        configure({"TRAIN.LR_SCHEDULE": list(schedule), "TRAIN.LR_DECAY": decay, "TRAIN.NUM_GPUS": 8,
                   "TRAIN.LR_SCHEDULE_ROUNDING": "step",
                   "TRAIN.BASE_LR": 0.1, "TRAIN.WARMUP": 20, "TRAIN.WARMUP_INIT_LR": 0.01})
        schedule = Schedule.from_config(cfg)
        return [round(schedule.lr_at(s), 6) for s in steps]


def test_learning_rate_warms_up_then_drops_tenfold_at_each_boundary():
    assert _learning_rates("step", [0, 10, 20, 49, 50, 74, 75, 99]) == [0.01, 0.055, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


@pytest.mark.parametrize("decay, expected", [("linear", [0.1, 0.075, 0.05, 0.025, 0.0, 0.0]),
                                             ("cosine", [0.1, 0.085355, 0.05, 0.014645, 0.0, 0.0])])
def test_smooth_decays_fall_from_the_base_rate_after_warm_up_to_zero_at_the_last_boundary(decay, expected):
    # warm-up as for "step"; the middle boundaries play no part
    assert _learning_rates(decay, [0, 10])[1] == 0.055
    assert _learning_rates(decay, [20, 40, 60, 80, 100, 120]) == expected


def test_fractional_schedule_steps_are_kept():
    # the demo's 600 one-image steps are 75 batch-8 steps with a drop at 72.75 (582 steps), not 72
    with config_snapshot():
        configure({"TRAIN.LR_SCHEDULE": [66, 72.75, 75]})
        assert cfg.TRAIN.LR_SCHEDULE == [66, 72.75, 75]


@pytest.mark.parametrize("arg, message", [
    ("TRAIN.STEPS_PER_EPOCH=0", "TRAIN.STEPS_PER_EPOCH=0: must be an integer >= 1"),  # ZeroDivisionError before
    ("TRAIN.CHECKPOINT_PERIOD=0", "TRAIN.CHECKPOINT_PERIOD=0: must be an integer >= 1 (epochs)"),
    ("TRAIN.EVAL_PERIOD=-1", "TRAIN.EVAL_PERIOD=-1: must be an integer >= 0 (epochs; 0: never evaluate)"),
    ("TRAIN.BASE_LR=-0.01", "TRAIN.BASE_LR=-0.01: must be a number > 0"),
    ("TRAIN.BASE_LR=1e999", "TRAIN.BASE_LR=inf: must be a number > 0"),
    ("DATA.NUM_WORKERS=-2", "DATA.NUM_WORKERS=-2: must be an integer >= 0"),
    ("DATA.SEED=-5", "DATA.SEED=-5: must be an integer in [0, 2**32) or -1 (not seeded)"),
    ("DATA.LOADER_MAX_SKIPPED=1.5", "DATA.LOADER_MAX_SKIPPED=1.5: must be a fraction of the training images in [0, 1]"),
    ("RPN.POSITIVE_ANCHOR_THRESH=1.5", "RPN.POSITIVE_ANCHOR_THRESH=1.5: must be a number in (0, 1]"),
    ("TEST.RESULTS_PER_IM=0", "TEST.RESULTS_PER_IM=0: must be an integer >= 1"),
    ("PREPROC.PIXEL_STD=[58.4,0,57.4]", "PREPROC.PIXEL_STD=[58.4, 0, 57.4]: must be 3 numbers > 0"),
    ("BACKBONE.RESNET_NUM_BLOCKS=[1,'a',1,1]", "BACKBONE.RESNET_NUM_BLOCKS=[1, 'a', 1, 1]: must be 4 integers >= 1"),
    ("MASKPLUS.MASK_LOSS_ALPHA=[[0,-1.5]]", "MASKPLUS.MASK_LOSS_ALPHA=[[0, -1.5]]: must be [[step, alpha], ...]"),
    ("TRAIN.LR_SCHEDULE=[0,10,20]", "TRAIN.LR_SCHEDULE=[0, 10, 20]: must be '1x'..'9x' or a list of step counts > 0"),
    ("TEST.AUGMENT.SHORT_EDGE_SIZES=[800,0]", "TEST.AUGMENT.SHORT_EDGE_SIZES=[800, 0]: must be a list of short-edge "
                                              "sizes > 0 ([]: PREPROC.TEST_SHORT_EDGE_SIZE alone)"),
    ("TEST.AUGMENT.MAX_SIZE=-1", "TEST.AUGMENT.MAX_SIZE=-1: must be a number >= 0 (0: PREPROC.MAX_SIZE)"),
])
def test_out_of_range_numbers_are_config_errors_naming_the_key_and_the_allowed_values(arg, message):
    with config_snapshot(), pytest.raises(ConfigError) as e:
        cfg.update_args([arg])
        configure({}, tiny=False)
    assert message in str(e.value), str(e.value)
    assert str(e.value).startswith("Invalid configuration:")


def test_every_numeric_key_has_its_allowed_values():
    """A new numeric key without a range check fails here."""
    import config as config_module
    from tests.helpers import config_snapshot as snapshot
    with snapshot():
        numeric = []
        for key, value in cfg.items_flat():
            values = value if isinstance(value, (list, tuple)) else [value]
            flat = [v for x in values for v in (x if isinstance(x, (list, tuple)) else [x])]
            if key == "TRAIN.NUM_GPUS" or (flat and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in flat)):
                numeric.append(key)
    # derived at finalisation, or (FPN.ANCHOR_STRIDES) required to be exactly P2-P6's strides
    derived = {"DATA.NUM_CLASS", "RPN.NUM_ANCHOR", "FPN.RESOLUTION_REQUIREMENT", "FPN.ANCHOR_STRIDES"}
    assert len(numeric) > 50
    assert [k for k in numeric if k not in config_module._RANGES and k not in derived] == []


@pytest.mark.parametrize("value", ["abc", "[1]", "2.5", "True", "'2'"])
def test_the_tower_count_accepts_only_an_integer(value):
    # its default is None ("all visible GPUs"), so the default's type cannot check it
    with config_snapshot(), pytest.raises(ConfigError, match="Config key 'TRAIN.NUM_GPUS' expects int or None"):
        cfg.update_args([f"TRAIN.NUM_GPUS={value}"])
    with config_snapshot():
        cfg.update_args(["TRAIN.NUM_GPUS=2"])
        assert cfg.TRAIN.NUM_GPUS == 2


def test_freezing_the_affine_parameters_of_a_non_frozen_norm_is_a_config_error_even_under_python_O():
    with config_snapshot(), pytest.raises(ConfigError, match="BACKBONE.FREEZE_AFFINE=True only works with "
                                                             "BACKBONE.NORM=FreezeBN, got 'GN'"):
        configure({"BACKBONE.FREEZE_AFFINE": True})


# ------------------------------------------------------------------ snapshot / restore (the tests' config fixtures)
def _small_tree():
    from config import AttrDict
    tree = AttrDict()
    tree.MODE_MASK = True
    tree.TRAIN.BASE_LR = 0.01
    tree.TRAIN.LR_SCHEDULE = [10, 20, 30]
    tree.DATA.TRAIN = ("coco_train2017",)
    # a plain dict value with upper-case keys, not a sub-tree: it must come back as a dict
    tree.DATA.CUSTOM = {"mine": ["a.json", "images"], "OTHER": {"KEY": 1}}
    return tree


def test_restore_brings_back_values_removes_added_keys_and_unfreezes_what_was_unfrozen():
    tree = _small_tree()
    expected = {"MODE_MASK": True, "TRAIN": {"BASE_LR": 0.01, "LR_SCHEDULE": [10, 20, 30]},
                "DATA": {"TRAIN": ("coco_train2017",), "CUSTOM": {"mine": ["a.json", "images"], "OTHER": {"KEY": 1}}}}
    train_node = tree.TRAIN
    saved = tree.snapshot()
    tree.TRAIN.BASE_LR = 0.5
    tree.TRAIN.LR_SCHEDULE.append(40)            # changed in place
    tree.DATA.CUSTOM["OTHER"]["KEY"] = 2
    tree.DATA.CUSTOM["new"] = ["b.json", "more"]
    tree.TRAIN.ADDED = 3                         # an added key ...
    tree.EXTRA.DEEP.KEY = 4                      # ... and an added sub-tree
    tree.MODE_MASK = {"NOT": "a node"}           # a value replaced by a dict
    tree.freeze()
    tree.restore(saved)
    assert tree.to_dict() == expected
    assert type(tree.DATA.CUSTOM) is dict and type(tree.DATA.CUSTOM["OTHER"]) is dict
    assert "EXTRA" not in tree and "ADDED" not in tree.TRAIN
    assert tree.TRAIN is train_node              # refilled in place for whoever holds the sub-tree
    tree.TRAIN.BASE_LR = 0.2                     # unfrozen again, every node
    tree.DATA.NEW.KEY = 1
    tree.TRAIN.LR_SCHEDULE.append(50)
    tree.restore(saved)                          # the snapshot is not consumed or shared
    assert tree.to_dict() == expected


def test_restore_refreezes_a_tree_that_was_frozen_at_the_snapshot():
    tree = _small_tree()
    tree.freeze()
    saved = tree.snapshot()
    tree.freeze(False)
    tree.TRAIN.BASE_LR = 0.5
    tree.ADDED.KEY = 1
    tree.restore(saved)
    assert tree.TRAIN.BASE_LR == 0.01 and "ADDED" not in tree
    for node, key in ((tree, "MODE_MASK"), (tree.TRAIN, "BASE_LR"), (tree.DATA, "TRAIN")):
        with pytest.raises(ConfigError, match=f"Config is frozen: cannot set '{key}'"):
            setattr(node, key, None)
    with pytest.raises(AttributeError):
        tree.NEW_NODE  # a frozen tree creates no sub-tree on reading


def test_config_snapshot_restores_the_global_config_after_finalisation():
    before, was_frozen = cfg.snapshot().to_dict(), cfg._frozen
    with config_snapshot():
        configure({"DATA.CUSTOM": {"mine": ["a.json", "images"]}})  # adds DATA.NUM_CLASS, freezes
        assert cfg._frozen and "NUM_CLASS" in cfg.DATA
    assert cfg.to_dict() == before and cfg._frozen == was_frozen and cfg.TRAIN._frozen == was_frozen


# -------------------- the Tensorpack example's rule (faithfulness): named schedules
@pytest.mark.faithfulness
@pytest.mark.parametrize("name, steps", [
    ("1x", [120000, 160000, 180000]), ("2x", [240000, 320000, 360000]), ("3x", [420000, 500000, 540000]),
    ("6x", [960000, 1040000, 1080000]), ("9x", [1500000, 1580000, 1620000])])
def test_named_schedules_follow_the_examples_formula(name, steps):
    with config_snapshot():
        configure({"TRAIN.LR_SCHEDULE": name})
        assert cfg.TRAIN.LR_SCHEDULE == steps


# -------------------- the Tensorpack example's rule (faithfulness): tower counts
@pytest.mark.faithfulness
@pytest.mark.parametrize("towers", [3, 5, 6, 7, 12])
def test_tower_counts_that_do_not_divide_a_batch_of_8_are_rejected(towers):
    with config_snapshot(), pytest.raises(ConfigError, match=rf"TRAIN.NUM_GPUS={towers}: training needs 1, 2, 4 "
                                                            r"or a multiple of 8 towers"):
        configure({"TRAIN.NUM_GPUS": towers})


# -------------------- the Tensorpack example's rule (faithfulness): cuDNN autotuning by phase
@pytest.mark.faithfulness
def test_the_example_sets_cudnn_autotuning_by_phase(monkeypatch):
    env = os.environ
    for key in ("TF_AUTOTUNE_THRESHOLD", "TF_CUDNN_USE_AUTOTUNE"):
        monkeypatch.delenv(key, raising=False)
    with config_snapshot():
        configure({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [640, 800]})  # multi-scale: shapes change every image
    assert (env.get("TF_AUTOTUNE_THRESHOLD"), env.get("TF_CUDNN_USE_AUTOTUNE")) == ("1", "0")
    monkeypatch.delenv("TF_CUDNN_USE_AUTOTUNE")
    with config_snapshot():
        configure({"PREPROC.TRAIN_SHORT_EDGE_SIZE": [800, 800]})
    assert env.get("TF_CUDNN_USE_AUTOTUNE") is None
    with config_snapshot():
        configure({}, training=False)  # inference: never autotune
    assert env.get("TF_CUDNN_USE_AUTOTUNE") == "0"


def test_test_time_augmentation_is_off_by_default_and_its_keys_take_python_literals():
    assert cfg.TEST.AUGMENT.ENABLED is False  # the paper's numbers are single-scale
    with config_snapshot():
        cfg.update_args(["TEST.AUGMENT.ENABLED=True", "TEST.AUGMENT.FLIP=False",
                         "TEST.AUGMENT.SHORT_EDGE_SIZES=[600,800,1000]", "TEST.AUGMENT.MAX_SIZE=1667"])
        configure({}, tiny=False, training=False)
        assert cfg.TEST.AUGMENT.SHORT_EDGE_SIZES == [600, 800, 1000] and cfg.TEST.AUGMENT.FLIP is False
    with config_snapshot(), pytest.raises(ConfigError, match="'TEST.AUGMENT.FLIP' expects a value like True"):
        cfg.update_args(["TEST.AUGMENT.FLIP=yes"])


def test_a_test_size_listed_twice_is_a_config_error():
    with config_snapshot(), pytest.raises(ConfigError, match=r"TEST.AUGMENT.SHORT_EDGE_SIZES=\[800, 600, 800\] "
                                                             r"lists \[800\] twice"):
        configure({"TEST.AUGMENT.SHORT_EDGE_SIZES": [800, 600, 800]}, tiny=False, training=False)


def test_training_refuses_test_time_augmentation_and_says_where_it_runs():
    with config_snapshot(), pytest.raises(ConfigError, match="TEST.AUGMENT.ENABLED=True: the evaluations during "
                                                             "training see one view.*predict.py --evaluate"):
        configure({"TEST.AUGMENT.ENABLED": True}, tiny=False, training=True)
