"""The benchmark's precision comparison (`scripts/benchmark.py --precision`) on a tiny model: every
precision asked for is either measured or listed with the reason it cannot run here, and bf16 on
a CPU without AVX-512 is measured when MASKPLUS_BF16_WITHOUT_AVX512=1 asks for it."""
import pytest

from maskplus import precision
from maskplus.testing import TINY
from scripts.benchmark import precision_comparison


@pytest.mark.slow
@pytest.mark.machine  # bf16 native, emulated with AVX-512 or on Eigen's kernels without
def test_each_precision_is_measured_or_said_why_not(monkeypatch):
    from tests.helpers import restore_eigen_bf16_environment_afterwards
    restore_eigen_bf16_environment_afterwards(monkeypatch)  # resolve() sets them
    monkeypatch.setenv(precision.EIGEN_BF16_SWITCH, "1")
    lines = precision_comparison(["fp32", "bf16", "fp16", "auto"], TINY, [(64, 96)], repeats=1)
    text = "\n".join(lines)
    flags = precision.cpu_flags()
    assert precision.cpu_model_name() in lines[1]
    # no GPU here: fp16 is listed with the reason, not measured
    assert "- fp16: not run: fp16 needs a GPU" in text and "| fp16 |" not in text
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "x96" not in line}
    assert set(rows) == {"fp32", "bf16", "auto"}, text
    # bf16 runs on any CPU with the switch, and says how when it is not native
    bf16 = precision.cpu_bf16(flags)
    assert ("Eigen kernels" in text) == (bf16 is None) and ("emulated" in text) == (bf16 == "emulated")
    # one cell per column (2 train steps + 2 networks of one size: 1 each), bf16 and auto as ratios to fp32
    for name, row in rows.items():
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert len(cells) == 2 and all(c.endswith(" s") != (name != "fp32") for c in cells), row
        assert all(float(c.split()[0]) > 0 for c in cells)
    assert "x fp32)" in rows["bf16"] and "bf16 " in lines[1] and "fp32 " in lines[1]  # matmul rates of both
