#!/usr/bin/env bash
# Build and install Horovod 0.28.1 (TensorFlow + Gloo; + NCCL with HOROVOD_GPU=1) into the venv,
# against the TensorFlow already installed there.
#
#   PYTHON=.venv/bin/python bash scripts/install_horovod.sh
#
# Two things keep the stock sdist from building against TF 2.21:
#  * pip's build isolation would build against a different TensorFlow: --no-build-isolation;
#  * horovod/tensorflow/xla_mpi_ops.cc includes XLA headers that need highwayhash, which the TF
#    wheel does not ship. Those optional XLA ops are compiled out (the file becomes empty).
# HOROVOD_GPU=1 (scripts/install_gpu.sh) builds it with NCCL for GPU all-reduce, against the NCCL
# of TensorFlow's CUDA extra and the CUDA toolkit in HOROVOD_CUDA_HOME (default /usr/local/cuda).
# Idempotent: does nothing when horovod.tensorflow 0.28.1 already imports (with NCCL if asked).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
VERSION=0.28.1
GPU=${HOROVOD_GPU:-0}

if "$PYTHON" - <<PY 2>/dev/null
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import horovod, horovod.tensorflow as hvd
assert horovod.__version__ == "$VERSION"
assert "$GPU" != "1" or hvd.nccl_built()
PY
then
  echo "horovod $VERSION is already installed for $PYTHON"; exit 0
fi

command -v cmake >/dev/null || { echo "error: cmake is required to build Horovod (apt-get install cmake)" >&2; exit 1; }
command -v g++ >/dev/null || { echo "error: g++ is required to build Horovod (apt-get install g++)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip install --quiet "setuptools<81" wheel "cmake>=3.13" cloudpickle psutil pyyaml packaging
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "horovod==$VERSION" -d "$work"
tar -xzf "$work/horovod-$VERSION.tar.gz" -C "$work"
src="$work/horovod-$VERSION"
xla="$src/horovod/tensorflow/xla_mpi_ops.cc"
[ -f "$xla" ] || { echo "error: $xla not found: unexpected sdist layout" >&2; exit 1; }
{ echo "#if 0  // compiled out by scripts/install_horovod.sh: TF's headers lack highwayhash"; cat "$xla"; echo "#endif"; } > "$xla.new"
mv "$xla.new" "$xla"

export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1
if [ "$GPU" = 1 ]; then
  nccl=$("$PYTHON" -c 'import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])') || {
    echo "error: no NCCL in the venv: install TensorFlow's CUDA extra first (scripts/install_gpu.sh)" >&2; exit 1; }
  ln -sf libnccl.so.2 "$nccl/lib/libnccl.so"  # the pip package ships only the versioned name
  export HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_HOME="$nccl" HOROVOD_CUDA_HOME=${HOROVOD_CUDA_HOME:-/usr/local/cuda}
  "$PYTHON" -m pip uninstall --quiet -y horovod 2>/dev/null || true  # a CPU build of the same version
fi
export MAKEFLAGS="-j$(nproc)"
echo "building horovod $VERSION against $("$PYTHON" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null) (a few minutes)..."
"$PYTHON" -m pip install --no-build-isolation --no-cache-dir "$src" > "$work/build.log" 2>&1 || {
  echo "error: the Horovod build failed; last lines of the log:" >&2; tail -40 "$work/build.log" >&2; exit 1; }
"$PYTHON" - <<PY
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import horovod.tensorflow as hvd
print("horovod", hvd.__version__ if hasattr(hvd, "__version__") else "$VERSION", "installed; gloo built:", hvd.gloo_built(),
      "; nccl built:", hvd.nccl_built())
assert "$GPU" != "1" or hvd.nccl_built(), "the NCCL build did not take"
PY
