"""scripts/reproduce_table.sh --gpus: more towers than visible GPUs would run the extra ones on the
CPU (TensorFlow's soft placement), days of training at a fraction of the speed; the script refuses
before starting anything."""
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "reproduce_table.sh")


def _run(*args, tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, LOGROOT=str(tmp_path / "runs"), COCO_DIR=str(tmp_path / "coco"))
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def _visible_gpus():
    from maskplus.compat import tf
    return len(tf.config.list_physical_devices("GPU"))


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["replicated", "horovod"])
def test_more_gpus_than_visible_is_refused_in_one_line_before_anything_runs(tmp_path, trainer):
    asked = _visible_gpus() + 8 - _visible_gpus() % 8  # a valid tower count above what is here
    proc = _run("1", "--gpus", str(asked), "--trainer", trainer, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: --gpus {asked} asks for {asked} GPUs but TensorFlow sees {_visible_gpus()} "
                                   f"on this machine: give --gpus N for the N GPUs here (1, 2, 4 or a multiple of 8)")
    assert proc.stdout == "" and not (tmp_path / "runs").exists()  # no train.py started


def test_gpus_must_be_a_positive_integer(tmp_path):
    proc = _run("1", "--gpus", "two", "--dry-run", tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == "--gpus must be a positive integer, got 'two'"


def test_dry_run_prints_the_towers_asked_for_without_counting_gpus(tmp_path):
    proc = _run("2", "--gpus", "16", "--dry-run", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trains = [line for line in proc.stdout.splitlines() if " train.py " in line]
    assert len(trains) == 2 and all(line.endswith("TRAIN.NUM_GPUS=16") for line in trains)
