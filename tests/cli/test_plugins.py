"""A plug-in technique from outside the package, end to end: train.py --plugin imports it and adds
its config keys, run.json records it, and predict.py --load RUN_DIR imports it again, so that the
run is evaluated with the model it trained; a plug-in that is missing or registers nothing is
refused in one line naming it."""
import json
import os
import subprocess
import sys

import pytest

from tests.cli.test_predict import dataset  # noqa: F401  (the tiny set pycocotools can score)
from tests.engine.test_training import ROOT, TINY_ARGS

PLUGIN = '''
from maskplus.compat import tf, tfv1
from maskplus.techniques.registry import register


@register
class OutputGain:
    """Mask logits times a learnt per-class gain."""
    name = "output_gain"
    order = 3.35
    enable = {"MASKPLUS.OUTPUT_GAIN": True}
    keys = {"MASKPLUS.OUTPUT_GAIN": False, "MASKPLUS.OUTPUT_GAIN_INIT": 1.5}

    def __init__(self, init):
        self.init = init

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.MASKPLUS.OUTPUT_GAIN_INIT) if cfg.MASKPLUS.OUTPUT_GAIN else None

    def logits(self, x):
        gain = tfv1.get_variable("output_gain/gain", [1, x.shape.as_list()[1], 1, 1],
                                 initializer=tfv1.constant_initializer(self.init))
        return tf.multiply(x, gain)
'''
TRAINING = ["TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.WARMUP=1",
            "TRAIN.LR_SCHEDULE=[0.25,0.25,0.25]", "TRAIN.STEPS_PER_EPOCH=2", "TRAIN.CHECKPOINT_PERIOD=1"]


def _run(script, *args, path=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "gain_plugin.py").write_text(PLUGIN)
    (folder / "no_technique.py").write_text("VALUE = 1\n")
    return str(folder)


@pytest.mark.slow
@pytest.mark.cli
def test_a_plug_in_trains_is_recorded_and_is_imported_again_to_evaluate_its_run(dataset, plugin_dir,  # noqa: F811
                                                                                tmp_path):
    logdir = tmp_path / "run"
    proc = _run("train.py", "--plugin", "gain_plugin", "--logdir", str(logdir), "--config", f"DATA.BASEDIR={dataset}",
                *TINY_ARGS, *TRAINING, "MASKPLUS.OUTPUT_GAIN=True", "MASKPLUS.OUTPUT_GAIN_INIT=1.25", path=plugin_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.load(open(logdir / "run.json"))
    assert info["plugins"] == ["gain_plugin"]
    assert info["config"]["MASKPLUS"]["OUTPUT_GAIN"] is True and info["config"]["MASKPLUS"]["OUTPUT_GAIN_INIT"] == 1.25
    # evaluated from its run directory alone: the plug-in comes back, and the strict load (which refuses a
    # checkpoint holding variables the graph lacks) takes its gain
    out = tmp_path / "eval.json"
    proc = _run("predict.py", "--load", str(logdir), "--evaluate", str(out), "--config", f"DATA.BASEDIR={dataset}",
                "TEST.RESULT_SCORE_THRESH=0.001", path=plugin_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.path.isfile(tmp_path / "eval-metrics.json")
    # without the module on the path: one line naming the run's record and the module, nothing evaluated
    gone = tmp_path / "gone.json"
    proc = _run("predict.py", "--load", str(logdir), "--evaluate", str(gone), "--config", f"DATA.BASEDIR={dataset}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert (f"{logdir / 'run.json'} records the plug-in gain_plugin: cannot import it (ModuleNotFoundError: "
            f"No module named 'gain_plugin'). Is it on PYTHONPATH?") in proc.stderr
    assert not gone.exists()


@pytest.mark.cli
@pytest.mark.parametrize("module, message", [
    ("no_such_plugin", "--plugin no_such_plugin: cannot import it (ModuleNotFoundError: No module named "
                       "'no_such_plugin'). Is it on PYTHONPATH?"),
    ("no_technique", "--plugin no_technique: it registers no technique (decorate its class with "
                     "maskplus.techniques.registry.register)."),
])
def test_a_plug_in_that_cannot_be_imported_or_registers_nothing_is_refused_by_name(plugin_dir, module, message):
    proc = _run("train.py", "--plugin", module, "--print-config", path=plugin_dir)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr


@pytest.mark.cli
def test_print_config_shows_a_plug_ins_keys(plugin_dir):
    proc = _run("train.py", "--plugin", "gain_plugin", "--print-config", "--config", "MASKPLUS.OUTPUT_GAIN_INIT=0.75",
                path=plugin_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MASKPLUS.OUTPUT_GAIN = False" in proc.stdout and "MASKPLUS.OUTPUT_GAIN_INIT = 0.75" in proc.stdout
