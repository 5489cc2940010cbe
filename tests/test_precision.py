"""What each precision request gets on a given CPU and GPUs (faked /proc/cpuinfo text and compute
capabilities), and the errors where it cannot run. Expected values from the rules in
maskplus/precision.py's docstring: native bf16 = avx512_bf16 or amx_bf16 flags; oneDNN emulates
bf16 with avx512f alone; TensorFlow's float16 rewrite acts on GPUs of compute capability >= 7.0."""
import os

import pytest

from config import ConfigError, finalize_configs
from maskplus import precision
from maskplus.precision import (Choice, PrecisionError, choose, cpu_bf16, cpu_flags, cpu_model_name, describe,
                                nominal_peak_gflops)

_COMMON = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma f16c"
AVX2_EPYC = f"processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: {_COMMON} sse4a\n\nprocessor\t: 1\n"
SKYLAKE = f"model name\t: Intel(R) Xeon(R) Gold 6148\nflags\t\t: {_COMMON} avx512f avx512bw avx512vl\n"
ZEN4 = f"model name\t: AMD EPYC 9R14\nflags\t\t: {_COMMON} avx512f avx512_vnni avx512_bf16\n"
SAPPHIRE_RAPIDS = f"model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: {_COMMON} avx512f amx_bf16 amx_tile\n"


def test_cpu_flags_and_model_name_are_read_from_cpuinfo_text():
    assert "avx2" in cpu_flags(AVX2_EPYC) and "avx512f" not in cpu_flags(AVX2_EPYC)
    assert "avx512_bf16" in cpu_flags(ZEN4)
    assert cpu_model_name(ZEN4) == "AMD EPYC 9R14"
    # a VM's name without a model number: the family and model numbers tell the generation
    assert cpu_model_name("cpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n") == "AMD EPYC (family 25, model 17)"
    assert cpu_flags("") == set() and cpu_model_name("") == "unknown CPU"
    # a flag whose name contains another one's is not mistaken for it
    assert cpu_bf16({"avx512_bf16_like"}) is None


@pytest.mark.parametrize("cpuinfo, support", [(AVX2_EPYC, None), (SKYLAKE, "emulated"), (ZEN4, "native"),
                                              (SAPPHIRE_RAPIDS, "native")])
def test_bf16_support_by_cpu(cpuinfo, support):
    assert cpu_bf16(cpu_flags(cpuinfo)) == support


def test_auto_picks_bf16_only_on_cpus_with_native_bf16():
    assert choose("auto", cpu_flags(ZEN4), []) == Choice("bf16", "auto: this CPU has native bf16 (avx512_bf16)")
    assert choose("auto", cpu_flags(SAPPHIRE_RAPIDS), []).precision == "bf16"
    # emulated bf16 would slow training down: auto never takes it, nor on an AVX2-only CPU
    assert choose("auto", cpu_flags(SKYLAKE), []) == Choice("fp32", "auto: this CPU has no native bf16")
    assert choose("auto", cpu_flags(AVX2_EPYC), []) == Choice("fp32", "auto: this CPU has no native bf16")


def test_auto_picks_fp16_on_gpus_of_compute_capability_7_or_more():
    assert choose("auto", cpu_flags(ZEN4), [(7, 0), (8, 0)]) == Choice("fp16", "auto: GPUs of compute capability 7.0")
    # the oldest GPU decides: a Pascal one (6.1) has no float16 tensor cores
    got = choose("auto", cpu_flags(ZEN4), [(8, 6), (6, 1)])
    assert got.precision == "fp32" and "6.1" in got.reason


def test_explicit_requests_where_they_run():
    assert choose("fp32", cpu_flags(AVX2_EPYC), []) == Choice("fp32", "")
    assert choose("bf16", cpu_flags(ZEN4), []) == Choice("bf16", "")
    emulated = choose("bf16", cpu_flags(SKYLAKE), [])
    assert emulated.precision == "bf16" and emulated.reason.startswith("emulated")
    assert choose("fp16", set(), [(7, 5)]) == Choice("fp16", "")


@pytest.mark.parametrize("requested, cpuinfo, gpus, message", [
    ("bf16", AVX2_EPYC, [], "TRAIN.PRECISION=bf16 cannot run on this CPU: it has no AVX-512"),
    ("bf16", ZEN4, [(8, 0)], "on GPUs use fp16"),
    ("fp16", ZEN4, [], "TRAIN.PRECISION=fp16 needs a GPU"),
    ("fp16", ZEN4, [(6, 1)], "compute capability >= 7.0"),
    ("float16", ZEN4, [(8, 0)], "TRAIN.PRECISION must be one of fp32, bf16, fp16, auto, got 'float16'"),
])
def test_requests_that_cannot_run_here_are_refused(requested, cpuinfo, gpus, message):
    with pytest.raises(PrecisionError, match=message.replace(".", r"\.").replace("(", r"\(")):
        choose(requested, cpu_flags(cpuinfo), gpus)


def test_the_eigen_switch_lets_only_an_explicit_bf16_run_without_avx512():
    flags = cpu_flags(AVX2_EPYC)
    got = choose("bf16", flags, [], eigen_bf16=True)
    assert got.precision == "bf16" and "MASKPLUS_BF16_WITHOUT_AVX512=1" in got.reason and "backward convolutions in float32" in got.reason
    # auto still takes float32 there, and the switch changes nothing where oneDNN has bf16
    assert choose("auto", flags, [], eigen_bf16=True) == Choice("fp32", "auto: this CPU has no native bf16")
    assert choose("bf16", cpu_flags(ZEN4), [], eigen_bf16=True) == Choice("bf16", "")
    assert choose("bf16", cpu_flags(SKYLAKE), [], eigen_bf16=True).reason.startswith("emulated")
    with pytest.raises(PrecisionError, match="on GPUs use fp16"):
        choose("bf16", flags, [(8, 0)], eigen_bf16=True)


def test_describe_names_the_precision_and_why_auto_chose_it():
    assert describe(Choice("fp32", "auto: this CPU has no native bf16")) == \
        "float32 (auto: this CPU has no native bf16)"
    assert describe(Choice("bf16", "")) == "bfloat16"
    assert describe(Choice("fp16", "")) == "float16 with dynamic loss scaling"


@pytest.fixture
def fake_machine(monkeypatch):
    """This process's precision lookups see the given cpuinfo text and GPUs."""
    def apply(cpuinfo, gpus=()):
        monkeypatch.setattr(precision, "read_cpuinfo", lambda: cpuinfo)
        monkeypatch.setattr(precision, "gpu_capabilities", lambda: list(gpus))
        precision._resolve.cache_clear()
    yield apply
    precision._resolve.cache_clear()


def test_finalize_refuses_a_precision_that_cannot_run_naming_the_key(fake_machine, cfg_override):
    from tests.helpers import config_snapshot
    fake_machine(AVX2_EPYC)
    with config_snapshot():
        cfg_override({"DATA.CLASS_NAMES": ["a"], "TEST.PRECISION": "fp16"})
        with pytest.raises(ConfigError, match="TEST.PRECISION=fp16 needs a GPU"):
            finalize_configs(is_training=False)
    with config_snapshot():
        cfg_override({"DATA.CLASS_NAMES": ["a"], "TEST.PRECISION": "auto"})
        finalize_configs(is_training=False)  # auto always runs: float32 here
        assert precision.resolve("auto", "TEST.PRECISION") == Choice("fp32", "auto: this CPU has no native bf16")


def test_resolve_reads_the_eigen_switch_and_keeps_the_nchw_ops_out_of_the_rewrite(fake_machine, monkeypatch):
    lists = precision.eigen_bf16_environment()
    assert len(lists) == 4 and all(v == precision.EIGEN_NCHW_OPS for v in lists.values())
    assert {"MaxPool", "Conv2DBackpropInput"} <= set(precision.EIGEN_NCHW_OPS.split(","))
    from tests.helpers import restore_eigen_bf16_environment_afterwards
    restore_eigen_bf16_environment_afterwards(monkeypatch)
    fake_machine(AVX2_EPYC)
    monkeypatch.delenv("MASKPLUS_BF16_WITHOUT_AVX512", raising=False)
    with pytest.raises(PrecisionError, match="no AVX-512"):
        precision.resolve("bf16")
    monkeypatch.setenv("MASKPLUS_BF16_WITHOUT_AVX512", "1")
    assert precision.resolve("bf16").precision == "bf16"
    assert {name: os.environ.get(name) for name in lists} == lists
    # where oneDNN has bf16 kernels the lists are left alone
    for name in lists:
        del os.environ[name]
    fake_machine(ZEN4)
    assert precision.resolve("bf16") == Choice("bf16", "")
    assert not any(name in os.environ for name in lists)


def test_the_paper_presets_and_the_config_default_to_fp32_and_the_demo_to_auto():
    from config import config as cfg
    from maskplus.presets import PRESETS
    assert cfg.TRAIN.PRECISION == "fp32" and cfg.TEST.PRECISION == "fp32"
    for name, overrides in PRESETS.items():
        keys = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides}
        expected = "auto" if name == "demo-cpu" else None  # None: the config's fp32
        assert keys.get("TRAIN.PRECISION") == expected and keys.get("TEST.PRECISION") == expected, name


def _cpuinfo(vendor, family, mhz, flags):
    return (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel name\t: X\n"
            f"cpu MHz\t\t: {mhz}\nflags\t\t: {_COMMON} {flags}\n")


@pytest.mark.parametrize("vendor, family, flags, lanes", [
    ("AuthenticAMD", 26, "avx512f avx512_bf16", 16),   # Zen 5: full-width AVX-512
    ("AuthenticAMD", 25, "avx512f avx512_bf16", 8),    # Zen 4: AVX-512 on 256-bit halves
    ("GenuineIntel", 6, "avx512f", 16),                 # Skylake-SP and later Xeons
    ("AuthenticAMD", 25, "", 8),                        # Zen 3: AVX2 + FMA
])
def test_the_nominal_peak_is_cpus_times_two_fma_units_times_lanes_times_two_times_the_clock(vendor, family, flags,
                                                                                              lanes):
    peak, how = nominal_peak_gflops(_cpuinfo(vendor, family, "2596.120", flags), cpus=3)
    assert peak == pytest.approx(3 * 2 * lanes * 2 * 2.59612)
    assert f"{lanes} float32 lanes" in how and "2.60 GHz" in how


def test_the_nominal_peak_is_unknown_without_a_clock_or_fma():
    assert nominal_peak_gflops(_cpuinfo("GenuineIntel", 6, "", "avx512f")) == (None, "no clock in /proc/cpuinfo")
    assert nominal_peak_gflops("flags\t\t: sse2\ncpu MHz\t\t: 2000\n") == (None, "neither AVX-512 nor FMA")
