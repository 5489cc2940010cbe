"""TRAIN.DETERMINISTIC: two runs of one command train bit-identical weights on the CPU with loader
processes (two default runs of different seeds do not); its refusals; an op without a
deterministic kernel (on a GPU) named in one line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from maskplus.compat import tf, tfv1
from maskplus.engine.callbacks import DUMP_VARIABLES_ENV
from maskplus.engine.determinism import (DeterminismError, determinism_failure,
                                        ops_without_deterministic_kernels_named)
from tests.engine.test_training import ROOT, TINY_ARGS

# 6 steps of one image, each one an update (no accumulation), two loader processes
SHORT = ["TRAIN.NUM_GPUS=1", "TRAIN.GRADIENT_ACCUMULATION=False", "TRAIN.LR_SCHEDULE=[0.75,0.75,0.75]",
         "TRAIN.STEPS_PER_EPOCH=3", "TRAIN.WARMUP=2", "TRAIN.BASE_LR=0.02", "TRAIN.CHECKPOINT_PERIOD=2"]


def train_and_dump(dataset, logdir, *config):
    """Every variable after training (variables-rank0.npz), but the input queue's fill level: a
    running average of timing that no weight depends on; and the state before the first step."""
    env = dict(os.environ, **{DUMP_VARIABLES_ENV: str(logdir / "dump")})
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(logdir), "--config",
           f"DATA.BASEDIR={dataset}", *TINY_ARGS, *SHORT, *config]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def load(name):
        with np.load(logdir / "dump" / name) as f:
            return {k: f[k] for k in f.files if "queue_size" not in k}
    return load("variables-rank0.npz"), load("variables-rank0-start.npz")


def differing(a, b):
    assert a.keys() == b.keys()
    return sorted(k for k in a if not np.array_equal(a[k], b[k]))


def where_runs_part(a, b, start_a, start_b):
    """Where two runs' records first differ: the state before the first step, then each epoch's
    logged scalars (stats.json), then the loader's skip reports; for a failure message."""
    found = []
    if differing(start_a, start_b):
        found.append(f"the states before the first step differ in {len(differing(start_a, start_b))} variables, "
                     f"e.g. {differing(start_a, start_b)[:3]}")
    stats = [json.load(open(d / "stats.json")) if (d / "stats.json").is_file() else [] for d in (a, b)]
    clock = ("queue_size", "throughput", "elapsed", "time", "speed", "rss")  # what wall time or memory moves
    for x, y in zip(*stats):
        keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k) and not any(c in k.lower() for c in clock))
        if keys:
            found.append(f"at step {x.get('global_step')} the logs differ first in {keys[:4]}: "
                         f"{[x.get(k) for k in keys[:4]]} vs {[y.get(k) for k in keys[:4]]}")
            break
    for d in (a, b):
        logged = (d / "log.log").read_text(errors="replace") if (d / "log.log").is_file() else ""
        skips = [line for line in logged.splitlines() if "skip" in line.lower()]
        found.append(f"{d.name}: {len(skips)} log lines about skipped images{': ' + skips[-1] if skips else ''}")
    return "\n".join(found)


@pytest.mark.slow
@pytest.mark.cli
def test_two_deterministic_runs_with_loader_processes_train_bit_identical_weights(dataset, tmp_path):
    deterministic = ["TRAIN.DETERMINISTIC=True", "DATA.SEED=3", "DATA.NUM_WORKERS=2"]
    first, start = train_and_dump(dataset, tmp_path / "a", *deterministic)
    second, start_b = train_and_dump(dataset, tmp_path / "b", *deterministic)
    assert len(differing(first, start)) > 100  # the weights moved: six real updates
    assert differing(first, second) == [], where_runs_part(tmp_path / "a", tmp_path / "b", start, start_b)


@pytest.mark.slow
@pytest.mark.cli
def test_two_default_runs_of_different_seeds_train_different_weights(dataset, tmp_path):
    # the control: the comparison above can see a difference
    one, _ = train_and_dump(dataset, tmp_path / "a", "DATA.SEED=1")
    two, _ = train_and_dump(dataset, tmp_path / "b", "DATA.SEED=2")
    assert len(differing(one, two)) > 100


@pytest.mark.slow
@pytest.mark.cli
def test_deterministic_training_refuses_an_unseeded_run_a_time_budget_and_two_towers(dataset, tmp_path):
    def refused(*args):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(tmp_path / "run"),
                               *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "run").exists()
        return proc.stderr.strip().splitlines()[-1]
    common = ["--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAIN.DETERMINISTIC=True"]
    assert refused(*common, "DATA.SEED=-1").startswith("Config error: TRAIN.DETERMINISTIC=True needs DATA.SEED >= 0")
    assert "--minutes fits the schedule to the measured speed" in refused("--minutes", "1", *common)
    assert "TRAIN.DETERMINISTIC=True trains one tower, not 2" in refused(*common, "TRAIN.NUM_GPUS=2")


# ------------------------------------------------------------------ ops without a deterministic kernel
def _gpu_error(message):
    """The error TensorFlow raises running RoIAlign's gradient on a GPU under op determinism (its
    text as the kernel words it), with the graph's real node."""
    graph = tf.Graph()
    with graph.as_default():
        image = tfv1.placeholder(tf.float32, [1, 8, 8, 4])
        crops = tf.image.crop_and_resize(image, [[0.0, 0.0, 1.0, 1.0]], [0], [4, 4])
        grad = tf.gradients(crops, image)[0]
    node = grad.op.node_def
    node.device = "/job:localhost/replica:0/task:0/device:GPU:0"
    return tf.errors.UnimplementedError(node, grad.op, message)


def test_an_op_without_a_deterministic_gpu_kernel_is_named_with_the_option():
    error = _gpu_error("A deterministic GPU implementation of CropAndResizeBackpropImage is not currently available.")
    with pytest.raises(DeterminismError) as raised:
        with ops_without_deterministic_kernels_named(True):
            raise error
    message = str(raised.value)
    assert message.count("\n") == 0
    assert "no deterministic kernel for op CropAndResizeGradImage ('gradients/CropAndResize_grad/CropAndResizeGradImage'" \
           in message and "device:GPU:0" in message
    assert "A deterministic GPU implementation of CropAndResizeBackpropImage is not currently available." in message
    assert "TRAIN.DETERMINISTIC=False" in message


def test_other_errors_and_runs_without_the_option_pass_unchanged():
    error = _gpu_error("A deterministic GPU implementation of CropAndResizeBackpropImage is not currently available.")
    with pytest.raises(tf.errors.UnimplementedError):
        with ops_without_deterministic_kernels_named(False):  # the option off: TensorFlow's own error
            raise error
    other = _gpu_error("Conv2D on this device needs NHWC.")
    assert determinism_failure(other) is None
    with pytest.raises(tf.errors.UnimplementedError):
        with ops_without_deterministic_kernels_named(True):
            raise other
    assert determinism_failure(ValueError("deterministic")) is None
