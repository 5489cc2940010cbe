"""The arithmetic precision of training and inference: which one a run asks for and gets, and why.

``fp32`` is the paper's arithmetic and every preset's default. ``bf16`` is TensorFlow's oneDNN
grappler rewrite for CPUs: convolutions, matrix products and the element-wise ops between them
run in bfloat16, variables and everything the rewrite's lists keep out (losses, box decoding,
NMS, RoIAlign's coordinates, gradient sums) stay float32; bfloat16 has float32's range, so no
loss scaling. ``fp16`` is TensorFlow's CUDA rewrite (``auto_mixed_precision``) plus dynamic loss
scaling (:mod:`maskplus.modeling.loss_scale`); it acts on GPU ops only. ``auto`` picks bf16 on a
CPU with native bfloat16 instructions, fp16 on GPUs of compute capability 7.0 or more, else fp32.

Why the float32 islands hold (maskplus/modeling/float32_island.py). Both rewrites sort ops into
lists: an allow list (convolutions, matrix products) always converted, an infer list (Add, Mul,
Sigmoid...) and a clear list (Select, Neg, GreaterEqual, Minimum, TopKV2, Reshape, Transpose...)
converted when their neighbours are, a deny list kept float32. Clear-list ops next to a converted
convolution are converted too, so an RPN logit's loss, a box delta's clip or a score's top-k would
follow the convolution that produced them into bf16/fp16, whatever name scope they sit in. An op
on no list is never converted: the islands' float32 inputs and outputs pass through a ``Cast``
from float32 to float32 (numerically the identity), which no list names, so a conversion stops
there and the island's ops see float32. TensorFlow's ``tf.cast`` makes no node for a cast to the
same type, hence the raw op; the rewrite runs before the arithmetic optimiser removes the no-op
casts, so they cost nothing at run time. Before this boundary the islands held only where the
NHWC layout's transposes happened to separate them (AVX2 CPUs), not in the NCHW layout of
AVX-512 CPUs and GPUs; tests/engine/test_session.py checks both layouts offline.

What TensorFlow 2.21 does where the hardware lacks them (found on an AVX2-only AMD EPYC):
* bf16 without AVX-512: oneDNN has no bfloat16 kernels ("oneDNN supports DT_BFLOAT16 only on
  platforms with AVX-512"), TensorFlow falls back to its Eigen kernels, which cannot run the NCHW
  pooling and transposed convolutions of these models ("Default MaxPoolingOp only supports NHWC
  on device type CPU"). So an explicit bf16 there is a configuration error, unless
  ``MASKPLUS_BF16_WITHOUT_AVX512=1`` asks for it anyway: those NCHW ops are then kept float32
  (TensorFlow's ``TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_*`` list edits) and the rest runs in
  Eigen's bfloat16, which keeps about float32's speed there (``scripts/benchmark.py
  --precision``; BENCHMARKS.md). It is there to measure what bf16 costs such a CPU and to check bf16's numbers on
  it (tests, scripts/benchmark.py): with its backward convolutions in float32 it is not the
  arithmetic of a bf16 CPU, so ``auto`` never picks it.
* bf16 with AVX-512 but without AVX512_BF16/AMX: oneDNN emulates bfloat16 with AVX-512
  instructions; it runs, but is not expected to be faster than float32 (a warning says so).
* fp16 without a GPU (or on GPUs below compute capability 7.0): the rewrite skips every op
  ("No (suitable) GPUs detected"), i.e. the run would be float32: a configuration error.
"""
import functools
import os
from collections import namedtuple

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16 with dynamic loss scaling"}
#: /proc/cpuinfo flags of native bfloat16 arithmetic (AVX-512 BF16: Cooper Lake, Zen 4; AMX: Sapphire Rapids)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: the environment variable that lets an explicit bf16 run on a CPU without AVX-512 (Eigen's kernels)
EIGEN_BF16_SWITCH = "MASKPLUS_BF16_WITHOUT_AVX512"
#: the ops Eigen's kernels cannot run in bf16 in these models' NCHW layout: kept float32 there
EIGEN_NCHW_OPS = "MaxPool,AvgPool,MaxPoolGrad,AvgPoolGrad,Conv2DBackpropInput,Conv2DBackpropFilter"
#: the first compute capability whose tensor cores TensorFlow's float16 rewrite targets (Volta)
MIN_FP16_CAPABILITY = (7, 0)

#: What a run gets: ``precision`` (fp32, bf16 or fp16) and ``reason`` (why, or "" when asked for).
Choice = namedtuple("Choice", ["precision", "reason"])


class PrecisionError(ValueError):
    """The requested precision cannot run here; the message says why and what to use instead."""


def read_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def cpu_flags(cpuinfo=None):
    """The set of CPU flags in ``/proc/cpuinfo`` text (the first processor's)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model_name(cpuinfo=None):
    """The CPU's model name; a name without a model number (a VM's "AMD EPYC") with its family and
    model numbers, which tell its generation apart (AMD family 25 model 17 is a Zen 4)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    name = _cpuinfo_field(text, "model name")
    if name is None:
        return "unknown CPU"
    family, model = _cpuinfo_field(text, "cpu family"), _cpuinfo_field(text, "model")
    if not any(c.isdigit() for c in name) and family and model:
        return f"{name} (family {family}, model {model})"
    return name


def _cpuinfo_field(text, name):
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def nominal_peak_gflops(cpuinfo=None, cpus=None):
    """(float32 GFLOP/s, how it was computed) of ``cpus`` logical CPUs at the clock /proc/cpuinfo
    gives, or (None, why not): cpus x 2 FMA units x float32 lanes x 2 FLOPs x clock. The lanes are
    16 with AVX-512, except on Zen 3/4 (AMD family 25), which run AVX-512 on 256-bit halves, 8 with
    AVX2/FMA. An upper bound: turbo clocks aside, two hyperthreads share one core's units."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text)
    mhz = _cpuinfo_field(text, "cpu MHz")
    if not mhz:
        return None, "no clock in /proc/cpuinfo"
    if "avx512f" in flags:
        amd_half_width = _cpuinfo_field(text, "vendor_id") == "AuthenticAMD" and _cpuinfo_field(text, "cpu family") == "25"
        lanes = 8 if amd_half_width else 16
    elif "fma" in flags:
        lanes = 8
    else:
        return None, "neither AVX-512 nor FMA"
    cpus = cpus or os.cpu_count() or 1
    gflops = cpus * 2 * lanes * 2 * float(mhz) / 1000.0
    return gflops, f"{cpus} CPUs x 2 FMA units x {lanes} float32 lanes x 2 x {float(mhz) / 1000:.2f} GHz"


def cpu_bf16(flags):
    """'native' (bfloat16 instructions), 'emulated' (oneDNN emulates them with AVX-512) or None."""
    if any(f in flags for f in NATIVE_BF16_FLAGS):
        return "native"
    return "emulated" if "avx512f" in flags else None


def gpu_capabilities():
    """[(major, minor), ...]: the compute capability of each GPU TensorFlow sees."""
    from maskplus.compat import tf
    caps = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        caps.append(tuple(details.get("compute_capability") or (0, 0)))
    return caps


def _capability(cap):
    return f"{cap[0]}.{cap[1]}"


def eigen_bf16_environment():
    """The TensorFlow variables that keep :data:`EIGEN_NCHW_OPS` out of the bf16 rewrite (read when
    grappler rewrites a graph, so setting them before a session is made is enough)."""
    return {f"TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_{edit}": EIGEN_NCHW_OPS
            for edit in ("ALLOWLIST_REMOVE", "INFERLIST_REMOVE", "CLEARLIST_REMOVE", "DENYLIST_ADD")}


def choose(requested, flags, gpus, key="TRAIN.PRECISION", eigen_bf16=False):
    """The :class:`Choice` for ``requested`` on a CPU with ``flags`` and GPUs of compute capabilities
    ``gpus`` (pure: tests pass faked flags). Raises :class:`PrecisionError` where it cannot run;
    ``eigen_bf16`` lets an explicit bf16 run without AVX-512 (module docstring)."""
    if requested not in PRECISIONS:
        raise PrecisionError(f"{key} must be one of {', '.join(PRECISIONS)}, got '{requested}'.")
    bf16 = cpu_bf16(flags)
    oldest = min(gpus) if gpus else None
    if requested == "auto":
        if gpus:
            if oldest >= MIN_FP16_CAPABILITY:
                return Choice("fp16", f"auto: GPUs of compute capability {_capability(oldest)}")
            return Choice("fp32", f"auto: a GPU of compute capability {_capability(oldest)} has no "
                                  f"float16 tensor cores")
        if bf16 == "native":
            found = [f for f in NATIVE_BF16_FLAGS if f in flags]
            return Choice("bf16", f"auto: this CPU has native bf16 ({', '.join(found)})")
        return Choice("fp32", "auto: this CPU has no native bf16")
    if requested == "bf16":
        if gpus:
            raise PrecisionError(f"{key}=bf16 is TensorFlow's CPU (oneDNN) rewrite; on GPUs use fp16 or auto.")
        if bf16 is None and eigen_bf16:
            return Choice("bf16", f"through TensorFlow's Eigen kernels ({EIGEN_BF16_SWITCH}=1; this CPU has no "
                                  f"AVX-512), backward convolutions in float32: for measurements")
        if bf16 is None:
            raise PrecisionError(
                f"{key}=bf16 cannot run on this CPU: it has no AVX-512, so oneDNN has no bfloat16 kernels and "
                f"TensorFlow's fallback ones cannot run this model's NCHW layers. Use fp32 or auto "
                f"(auto picks bf16 where the CPU has avx512_bf16 or amx_bf16).")
        if bf16 == "emulated":
            return Choice("bf16", "emulated with AVX-512: this CPU has no native bf16, expect it no faster "
                                  "than float32")
        return Choice("bf16", "")
    if requested == "fp16":
        if not gpus:
            raise PrecisionError(f"{key}=fp16 needs a GPU: TensorFlow's float16 rewrite leaves CPU ops alone, so "
                                 f"this run would be float32. On a CPU use bf16 or auto.")
        if oldest < MIN_FP16_CAPABILITY:
            raise PrecisionError(f"{key}=fp16 needs GPUs of compute capability >= 7.0: TensorFlow's float16 "
                                 f"rewrite skips a GPU of {_capability(oldest)}, so this run would be float32.")
        return Choice("fp16", "")
    return Choice("fp32", "")


def resolve(requested, key="TRAIN.PRECISION"):
    """The :class:`Choice` for ``requested`` on this machine (its CPU flags and visible GPUs, and
    :data:`EIGEN_BF16_SWITCH` in the environment). A bf16 that runs on Eigen's kernels sets
    :func:`eigen_bf16_environment` in this process (and its children)."""
    eigen_bf16 = os.environ.get(EIGEN_BF16_SWITCH) == "1"
    choice = _resolve(requested, key, eigen_bf16)
    if eigen_bf16 and choice.precision == "bf16" and cpu_bf16(cpu_flags()) is None:
        os.environ.update(eigen_bf16_environment())
    return choice


@functools.lru_cache(maxsize=None)
def _resolve(requested, key, eigen_bf16):
    if requested not in ("bf16", "fp16", "auto"):  # fp32, or an error that needs no look at the machine
        return choose(requested, set(), [], key)
    flags = cpu_flags()
    choice = choose(requested, flags, gpu_capabilities(), key, eigen_bf16)
    if choice.precision == "bf16" and cpu_bf16(flags) != "native":  # said once per process
        from maskplus import compat  # noqa: F401  (its shims before Tensorpack imports TensorFlow)
        from tensorpack.utils import logger
        logger.warn(f"{key}=bf16 is {choice.reason}.")
    return choice


def describe(choice):
    """'float32 (auto: this CPU has no native bf16)', 'bfloat16', ..."""
    name = NAMES[choice.precision]
    return f"{name} ({choice.reason})" if choice.reason else name
