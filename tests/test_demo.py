"""scripts/demo.py (what `make demo` runs) end to end on a tiny generated dataset."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_evaluates_and_draws(tmp_path):
    out, data = tmp_path / "out", tmp_path / "shapes"
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--out", str(out), "--data", str(data),
                           "--train-images", "12", "--val-images", "4", "--steps", "8", "--pictures", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [d for d in out.iterdir() if d.name.startswith("run-")]
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["000000000001.png", "000000000002.png"]
    assert (run / "curves.png").is_file() and (run / "model-8.index").is_file()
    # the evaluation of the last checkpoint made during training is reused, not repeated
    assert (run / "outputs8-coco_val2017-metrics.json").is_file() and not (run / "eval").exists()
    table = proc.stdout[proc.stdout.index("MaskPlus demo: COCO metrics"):]
    assert all(f"| {kind}" in table for kind in ("bbox", "segm", "boundary"))
    assert "Total demo time:" in proc.stdout
