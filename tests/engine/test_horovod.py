"""Two Horovod ranks over Gloo train on the CPU and keep identical weights.

Each rank dumps its variables at the end (MASKPLUS_DUMP_VARIABLES); the test compares the two
dumps itself and checks that the weights moved from the ``--load`` file both ranks started from.
Under ``make test`` (MASKPLUS_REQUIRE_HOROVOD=1) a missing Horovod is a failure, not a skip.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from maskplus.engine.callbacks import DUMP_VARIABLES_ENV
from tests.engine.test_replicated_equivalence import _initial_npz
from tests.engine.test_training import ROOT, TINY_ARGS

HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")

pytestmark = [pytest.mark.horovod, pytest.mark.cli, pytest.mark.slow]


def _horovod_available():
    proc = subprocess.run([sys.executable, "-c", "import maskplus.compat, horovod.tensorflow"], capture_output=True)
    return proc.returncode == 0 and os.path.exists(HOROVODRUN)


def test_two_gloo_ranks_train_with_finite_losses_and_agree_on_the_variables(dataset, tmp_path):
    if not _horovod_available():
        if os.environ.get("MASKPLUS_REQUIRE_HOROVOD") or os.environ.get("CI"):
            pytest.fail("Horovod is not installed: `make test` runs scripts/install_horovod.sh")
        pytest.skip("Horovod not installed (bash scripts/install_horovod.sh)")
    cmd = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, os.path.join(ROOT, "train.py"),
           "--logdir", str(tmp_path), "--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAINER=horovod",
           "TRAIN.LR_SCHEDULE=[2,3,4]", "TRAIN.STEPS_PER_EPOCH=4", "TRAIN.WARMUP=2", "--load", str(tmp_path / "init.npz")]
    init = _initial_npz(str(tmp_path / "init.npz"))
    env = dict(os.environ, **{DUMP_VARIABLES_ENV: str(tmp_path / "dump")})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    agree = [l for l in out.splitlines() if "variable checksums of all ranks" in l]
    assert any("Horovod rank 0" in l for l in agree) and any("Horovod rank 1" in l for l in agree)
    assert all("the ranks agree" in l for l in agree) and len(agree) == 2 * 4  # both ranks, 4 epochs
    stats = [e for e in json.load(open(tmp_path / "stats.json")) if "total_cost" in e]
    assert stats[-1]["global_step"] == 16  # 4 batch-8 steps at 2 images per step
    assert all(e["total_cost"] == e["total_cost"] for e in stats)
    ranks = []
    for r in (0, 1):
        with np.load(tmp_path / "dump" / f"variables-rank{r}.npz") as f:
            ranks.append({k: f[k] for k in f.files})
    assert set(init) <= set(ranks[0]) and set(init) <= set(ranks[1])
    for name in init:
        np.testing.assert_allclose(ranks[1][name], ranks[0][name], rtol=1e-5, atol=1e-6, err_msg=name)
    moved = [n for n in init if not np.allclose(ranks[0][n], init[n], rtol=0, atol=1e-7)]
    assert len(moved) > 0.75 * len(init), (len(moved), len(init))  # P4-P6 get no gradient on 64-px images
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 16


def test_every_rank_stops_with_rank_0_when_it_refuses_the_log_directory(dataset, tmp_path):
    """Only rank 0 reads, writes and locks the log directory; the others follow its decision, so
    that none waits forever in the first all-reduce for a rank that has exited."""
    if not _horovod_available():
        if os.environ.get("MASKPLUS_REQUIRE_HOROVOD") or os.environ.get("CI"):
            pytest.fail("Horovod is not installed: `make test` runs scripts/install_horovod.sh")
        pytest.skip("Horovod not installed (bash scripts/install_horovod.sh)")
    from tests.cli.test_train_refusals import _record_a_finished_run
    logdir = tmp_path / "run"
    _record_a_finished_run(dataset, logdir, None, ["TRAIN.BASE_LR=0.01"])
    cmd = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, os.path.join(ROOT, "train.py"),
           "--logdir", str(logdir), "--config", f"DATA.BASEDIR={dataset}", *TINY_ARGS, "TRAINER=horovod"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    refusals = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "holds another run" in line]
    assert any(line.startswith("[0]") for line in refusals) and any(line.startswith("[1]") for line in refusals)
    assert "TRAINER 'replicated' -> 'horovod'" in refusals[0]
    assert sorted(os.listdir(logdir)) == ["checkpoint", "model-16.index", "run.json"]
