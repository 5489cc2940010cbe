"""scripts/install_gpu.sh (make gpu): what it would run, checked with --dry-run; the installs
themselves need an NVIDIA GPU and CUDA toolkit this machine does not have (README says so)."""
import os
import re
import subprocess

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "scripts", "install_gpu.sh")


def _run(*args):
    # a python that does not exist: a dry run must not execute anything
    env = dict(os.environ, PYTHON="/nonexistent/python")
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_gpu_install_scripts_are_valid_bash():
    for name in ("install_gpu.sh", "install_horovod.sh"):
        proc = subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", name)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_dry_run_installs_the_pinned_tensorflow_with_cuda_then_horovod_with_nccl():
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        (pin,) = re.findall(r"^tensorflow==(\S+)", f.read(), re.M)
    proc = _run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"+ /nonexistent/python -m pip install --quiet tensorflow[and-cuda]=={pin}",
        "+ env PYTHON=/nonexistent/python HOROVOD_GPU=1 HOROVOD_CUDA_HOME=/usr/local/cuda bash scripts/install_horovod.sh",
        "+ /nonexistent/python -c '<check that TensorFlow sees a GPU>'"]
    without = _run("--dry-run", "--no-horovod")
    assert without.returncode == 0 and "install_horovod" not in without.stdout


def test_an_unknown_option_is_refused():
    proc = _run("--gpu=yes")
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown option '--gpu=yes'") and not proc.stdout
