#!/usr/bin/env bash
# The GPU stack, on top of the CPU install (`make venv`): the same pinned TensorFlow with its CUDA
# extra (NVIDIA's CUDA, cuDNN and NCCL libraries as pip packages), then Horovod rebuilt with NCCL
# for GPU all-reduce, then a check that TensorFlow sees the GPUs.
#
#   PYTHON=.venv/bin/python bash scripts/install_gpu.sh [--dry-run] [--no-horovod]
#
# Needs an NVIDIA driver for CUDA 12 (TensorFlow 2.21's wheels); the Horovod step also needs
# nvcc (a CUDA 12 toolkit: CUDA_HOME, default /usr/local/cuda), cmake and g++.
# --dry-run prints the commands instead of running them; --no-horovod installs TensorFlow only
# (the replicated trainer needs no Horovod: it all-reduces with NCCL through TensorFlow).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DRY_RUN=0
HOROVOD=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --no-horovod) HOROVOD=0 ;;
    *) echo "error: unknown option '$arg' (options: --dry-run, --no-horovod)" >&2; exit 2 ;;
  esac
done

run() {
  echo "+ $*"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

# the TensorFlow version requirements.txt pins, e.g. "2.21.*"
tf_version=$(sed -n 's/^tensorflow==\([^ #]*\).*/\1/p' requirements.txt)
[ -n "$tf_version" ] || { echo "error: requirements.txt pins no 'tensorflow==' version" >&2; exit 1; }

run "$PYTHON" -m pip install --quiet "tensorflow[and-cuda]==$tf_version"

if [ "$HOROVOD" = 1 ]; then
  cuda_home=${CUDA_HOME:-/usr/local/cuda}
  if [ "$DRY_RUN" = 0 ] && ! command -v nvcc >/dev/null && [ ! -x "$cuda_home/bin/nvcc" ]; then
    echo "error: Horovod's NCCL build needs nvcc (a CUDA 12 toolkit); none in PATH or $cuda_home/bin." >&2
    echo "Install one and set CUDA_HOME, or rerun with --no-horovod (the replicated trainer needs no Horovod)." >&2
    exit 1
  fi
  # NCCL's headers and library come with TensorFlow's CUDA extra (the nvidia-nccl-cu12 package)
  run env PYTHON="$PYTHON" HOROVOD_GPU=1 HOROVOD_CUDA_HOME="$cuda_home" bash scripts/install_horovod.sh
fi

check='import maskplus.compat, tensorflow as tf; gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__} sees {len(gpus)} GPU(s)"); raise SystemExit(0 if gpus else 1)'
if [ "$DRY_RUN" = 1 ]; then
  echo "+ $PYTHON -c '<check that TensorFlow sees a GPU>'"
else
  "$PYTHON" -c "$check" || {
    echo "error: TensorFlow sees no GPU: check the NVIDIA driver (nvidia-smi) and that it supports CUDA 12." >&2
    exit 1; }
fi
