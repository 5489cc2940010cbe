"""The config of a run directory (maskplus/engine/run_config.py): which run a --load belongs to, the
overrides that rebuild its config from the defaults (the machine's keys left out), and the console
line naming the model and what the command line changed."""
import json
import os

import pytest

from config import config as cfg
from maskplus.engine.run_config import (MACHINE_KEYS, RunConfigError, configure, describe, find_run, read_run,
                                        run_overrides)
from maskplus.presets import preset_overrides
from tests.helpers import config_snapshot, configure as configure_tiny

#: a run with techniques, a schedule, classes and machine keys of another machine
TRAINED = {"MASKPLUS.BOUNDARY_REFINEMENT": "improved", "MASKPLUS.DECONV_PYRAMID": True,
           "MASKPLUS.CONTEXT_FUSION": True, "MASKPLUS.CONTEXT_FUSION_DIMS": [32, 64],
           "TRAIN.LR_SCHEDULE": [3, 5, 6], "TEST.RESULTS_PER_IM": 37, "PREPROC.MAX_SIZE": 150,
           "DATA.NUM_WORKERS": 7, "TRAIN.NUM_GPUS": 2, "TRAIN.INTRA_OP_THREADS": 3, "DATA.BASEDIR": "/data/x"}


DERIVED = ("DATA.NUM_CLASS", "RPN.NUM_ANCHOR", "FPN.RESOLUTION_REQUIREMENT")


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "CUSTOM":
            out.update(_flat(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def _changed_keys(recorded):
    """The keys a recorded config holds with other values than the defaults (JSON's view),
    the machine's and the derived ones aside: what the run's line counts."""
    defaults = json.loads(json.dumps(_defaults(), default=str))
    return [k for k, v in _flat(recorded).items()
            if k not in MACHINE_KEYS and k not in DERIVED and v != defaults[k]
            and not (k == "PREPROC.MAX_SIZE" and v == float(defaults[k]))]


def _defaults():
    with config_snapshot():
        return dict(cfg.items_flat())


def _recorded(overrides=TRAINED):
    """What train.py's run.json records: the finalised config (as JSON) of a training run."""
    with config_snapshot():
        configure_tiny(overrides, class_names=("cat", "dog"), training=True)
        return json.loads(json.dumps(cfg.to_dict(), default=str))


def _write_run(directory, preset="boundary-refinement-improved", config=None):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "run.json"), "w") as f:
        json.dump({"preset": preset, "config": config or _recorded()}, f)
    return str(directory)


def test_the_overrides_rebuild_the_runs_config_except_the_machines_keys():
    recorded = _recorded()
    overrides, unknown = run_overrides(recorded, _defaults())
    assert unknown == []
    with config_snapshot():
        cfg.update_args(overrides)
        rebuilt = json.loads(json.dumps(cfg.to_dict(), default=str))
    want, got = _flat(recorded), _flat(rebuilt)
    differ = {k for k in want if k not in DERIVED and want[k] != got.get(k)}
    assert differ == set(MACHINE_KEYS) - {"TRAINER", "TRAIN.PRECISION"}  # the ones this run changed
    # the machine's keys are this machine's defaults; finalisation's float MAX_SIZE is the int key again
    assert got["DATA.NUM_WORKERS"] == 4 and got["TRAIN.NUM_GPUS"] is None and got["TRAIN.INTRA_OP_THREADS"] == 0
    assert got["PREPROC.MAX_SIZE"] == 160 and isinstance(got["PREPROC.MAX_SIZE"], int)  # 150 rounded up to 32s
    assert got["DATA.CLASS_NAMES"] == ["BG", "cat", "dog"] and got["DATA.BASEDIR"] == "/data/x"
    assert "MASKPLUS.BOUNDARY_REFINEMENT='improved'" in overrides


def test_keys_this_version_does_not_know_are_named_not_applied():
    recorded = _recorded({})
    recorded["MASKPLUS"]["SOME_FUTURE_TECHNIQUE"] = True
    overrides, unknown = run_overrides(recorded, _defaults())
    assert unknown == ["MASKPLUS.SOME_FUTURE_TECHNIQUE"] and not any("FUTURE" in o for o in overrides)


def test_a_removed_key_an_older_run_json_records_is_passed_over_silently():
    recorded = _recorded({})
    recorded["TRAIN"]["STARTING_EPOCH"] = 7  # run.json of a version that still had the key
    overrides, unknown = run_overrides(recorded, _defaults())
    assert unknown == [] and not any("STARTING_EPOCH" in o for o in overrides)


def test_a_checkpoint_belongs_to_the_run_whose_run_json_is_beside_it(tmp_path):
    run = _write_run(tmp_path / "run")
    for name in ("model-12.index", "model-12.data-00000-of-00001", "checkpoint", "exported.npz"):
        (tmp_path / "run" / name).write_bytes(b"")
    assert find_run(run) == run
    for load in ("model-12", "model-12.index", "model-12.data-00000-of-00001", "checkpoint", "exported.npz"):
        assert find_run(os.path.join(run, load)) == run, load
    os.makedirs(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "model-12.index").write_bytes(b"")
    assert find_run(str(tmp_path / "elsewhere" / "model-12")) is None
    assert find_run(str(tmp_path / "elsewhere")) is None and find_run(None) is None


def test_an_unreadable_run_json_is_an_error_naming_it(tmp_path):
    (tmp_path / "run.json").write_text('{"preset": "baseline", "config": ')
    with pytest.raises(RunConfigError, match=f"{tmp_path / 'run.json'} is not a readable run record"):
        read_run(str(tmp_path))


def test_the_runs_config_then_the_command_line_and_one_line_naming_both(tmp_path):
    run = _write_run(tmp_path / "run")
    count = len(_changed_keys(_recorded()))
    assert 20 < count < 40  # the tiny model's keys, the techniques, the schedule, the classes
    with config_snapshot():
        line = configure(cfg, os.path.join(run, "model-6"), preset_overrides, None,
                         ["DATA.BASEDIR=/data/coco", "TEST.RESULT_SCORE_THRESH=0.001", "MASKPLUS.DECONV_PYRAMID=False"])
        assert cfg.MASKPLUS.BOUNDARY_REFINEMENT == "improved" and cfg.MASKPLUS.DECONV_PYRAMID is False
        assert cfg.TEST.RESULTS_PER_IM == 37 and cfg.DATA.BASEDIR == "/data/coco" and cfg.DATA.NUM_WORKERS == 4
    assert line == (f"Model: the run in {run} (preset boundary-refinement-improved, {count} config changes "
                    f"recorded in its run.json); changed on the command line: MASKPLUS.DECONV_PYRAMID True -> False; "
                    f"this evaluation: DATA.BASEDIR='/data/coco', TEST.RESULT_SCORE_THRESH=0.001.")


def test_a_preset_on_the_command_line_applies_on_top_of_the_run_and_is_named(tmp_path):
    run = _write_run(tmp_path / "run")
    with config_snapshot():
        line = configure(cfg, run, preset_overrides, "deconv-pyramid", [])
        # the preset's keys replace the run's (R50 blocks, its schedule); what it does not set stays the run's
        assert cfg.BACKBONE.RESNET_NUM_BLOCKS == [3, 4, 6, 3] and cfg.MASKPLUS.BOUNDARY_REFINEMENT == "improved"
    assert "; --preset deconv-pyramid on top; changed on the command line: " in line
    assert "BACKBONE.RESNET_NUM_BLOCKS [1, 1, 1, 1] -> [3, 4, 6, 3]" in line


def test_without_a_run_the_line_says_the_config_is_the_defaults_and_the_command_lines(tmp_path):
    with config_snapshot():
        line = configure(cfg, str(tmp_path / "model.npz"), preset_overrides, "zoo-r50c4-1x",
                         ["DATA.BASEDIR=/data/coco"])
        assert cfg.MODE_FPN is False
    assert line == (f"Model: {tmp_path / 'model.npz'} (no run.json beside it: the default config, --preset "
                    f"zoo-r50c4-1x with 2 changes from the command line); model: MODE_FPN=False; this evaluation: "
                    f"DATA.BASEDIR='/data/coco'.")


def test_describe_counts_in_the_singular():
    assert describe("r", "/runs/a", None, None, ["X=1"], [], []) == (
        "Model: the run in /runs/a (preset none, 1 config change recorded in its run.json).")


def test_an_evaluation_dataset_must_have_the_models_classes_in_its_order(tiny_coco):
    """The model's classes now come from its run, not from the dataset evaluated: one of other classes
    (or of the same in another order) would be scored against the wrong categories."""
    from maskplus.engine.evaluate import EvaluationError, check_dataset_classes
    check_dataset_classes("coco_train2017", ["cat", "dog"])  # the categories by id: 2 cat, 7 dog
    for model in (["dog", "cat"], ["cat"], ["cat", "dog", "bird"]):
        with pytest.raises(EvaluationError, match="Dataset 'coco_train2017' has other classes than the model"):
            check_dataset_classes("coco_train2017", model)
