"""scripts/demo.py (what `make demo` runs) end to end on a tiny generated dataset."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", os.path.join(ROOT, "scripts", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.machine  # auto: bf16 with AVX512_BF16/AMX, float32 elsewhere
def test_demo_trains_for_its_budget_evaluates_draws_and_keeps_the_console_short(tmp_path):
    demo = _demo_module()
    out, data, minutes = tmp_path / "out", tmp_path / "shapes", 1.6
    start = time.time()
    proc = subprocess.run([sys.executable, "scripts/demo.py", "--out", str(out), "--data", str(data),
                           "--train-images", "12", "--val-images", "4", "--minutes", str(minutes), "--pictures", "2",
                           "--config", "TEST.RESULT_SCORE_THRESH_VIS=0.3"],
                          cwd=ROOT, capture_output=True, timeout=900)
    elapsed = time.time() - start
    # bytes: text mode would turn a progress bar's in-place updates ("\r") into lines
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    (run,) = [d for d in out.iterdir() if d.name.startswith("run-")]
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["000000000001.png", "000000000002.png"]
    with open(run / "run.json") as f:
        steps = json.load(f)["schedule"]["total_steps"]  # as fitted to the budget
    assert (run / "curves.png").is_file() and (run / f"model-{steps}.index").is_file()
    # the evaluation of the last checkpoint made during training is reused, not repeated
    assert (run / f"outputs{steps}-coco_val2017-metrics.json").is_file() and not (run / "eval").exists()
    # and it is the only one: the preset evaluates at the end, which the console says
    assert len(list(run.glob("outputs*-metrics.json"))) == 1
    # training got what the budget left after the dataset, less the reserve for the pictures
    # (that training ends near its own budget is tests/engine/test_time_budget.py's; so small a one is
    # overrun by the graph building and the 25 calibration steps on a loaded machine, and ends early on a
    # quiet one, whose later steps beat the warm-up speed its only plan is fitted on: so only a lower bound)
    log = (run / "demo.log").read_text()
    (train_cmd,) = [line for line in log.splitlines() if line.startswith("+ ") and "train.py" in line]
    given = float(train_cmd.split("--minutes ")[1].split()[0])
    assert 0.5 <= given <= minutes - demo.OUTSIDE_TRAINING_SECONDS / 60 and elapsed > 0.6 * 60 * given
    # --config reaches train.py and predict.py, last (after the preset and the dataset's folder)
    commands = [line for line in log.splitlines() if line.startswith("+ ") and ("train.py" in line or "predict.py" in line)]
    assert len(commands) == 2 and all(c.endswith(" TEST.RESULT_SCORE_THRESH_VIS=0.3") for c in commands), commands

    # the console: progress bars (one line each, updated in place) and a few lines per phase
    console = [line for line in (stdout + stderr).split("\n") if line.strip()]
    assert len(console) <= 40, "\n".join(console)
    last = stdout.rstrip("\n").split("\n")[-14:]
    table = "\n".join(last)
    assert "MaskPlus demo: COCO metrics" in table and all(f"| {kind}" in table for kind in ("bbox", "segm", "boundary"))
    assert any(f"in {run}" in line for line in last) and last[-2].endswith(str(run / "demo.log"))
    assert last[-1].startswith("Total demo time:") and f"Training took" in table
    assert any("step" in line and "segm AP" in line for line in console)  # AP after the evaluation
    assert any("steps fit, evaluated at the end (fitted again" in line for line in console)
    from maskplus.precision import describe, resolve
    assert any("Training 1 tower on the CPU" in line and line.rstrip().endswith(
        f" in {describe(resolve('auto'))}.") for line in console)  # the demo's precision, and why
    # everything else is in the run's log: the config, the model summary, TensorFlow's messages
    assert "Config:" in log and "'conv0' input" in log and "Loaded" in log and "Time budget at step" in log
    assert "Config:" not in stdout + stderr and "'conv0' input" not in stdout + stderr


def test_a_second_demo_run_gets_a_fresh_directory_and_reuses_the_dataset(tmp_path):
    demo = _demo_module()
    first = demo.run_directory(str(tmp_path), resume=False)
    os.makedirs(first)
    second = demo.run_directory(str(tmp_path), resume=False)  # in the same second as the first
    assert second != first and not os.path.exists(second)
    assert demo.run_directory(str(tmp_path), resume=True) == first
    # a dataset counts as there only with both splits' annotations (written after the images)
    ann = tmp_path / "shapes" / "annotations"
    ann.mkdir(parents=True)
    (ann / "instances_train2017.json").write_text("{}")
    assert not demo.dataset_ready(str(tmp_path / "shapes"))
    (ann / "instances_val2017.json").write_text("{}")
    assert demo.dataset_ready(str(tmp_path / "shapes"))


def test_the_curves_name_each_evaluation_by_its_step_and_draw_a_run_stopped_early(tmp_path):
    demo = _demo_module()
    stats = [{"global_step": 400, "elapsed_seconds": 150.0, "total_cost": 2.5},
             {"global_step": 800, "elapsed_seconds": 303.0, "total_cost": 1.9, "coco_val2017/segm/AP": 0.2125},
             {"global_step": 1100, "elapsed_seconds": 420.0, "total_cost": 1.7}]  # stopped: no evaluation at the end
    assert demo.ap_points(stats, "segm") == [(5.05, 21.25, 800)]
    assert demo.ap_points(stats, "bbox") == []
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    out = demo.plot_curves(str(tmp_path), str(tmp_path / "curves.png"))
    assert out == str(tmp_path / "curves.png") and os.path.getsize(out) > 1000


def test_the_progress_bar_rate_leaves_out_the_evaluations_between_epochs(monkeypatch):
    import io
    from types import SimpleNamespace
    from maskplus import console
    from maskplus.engine.callbacks import RunProgress
    monkeypatch.setattr(console, "stream", io.StringIO)
    clock = [1000.0]
    progress = RunProgress(lambda: 100)
    progress.trainer = SimpleNamespace(global_step=0)
    progress._before_train()
    bar = progress._bar
    bar._time = lambda: clock[0]
    bar.start_t = bar.last_print_t = clock[0]

    def steps(n):
        for _ in range(n):
            clock[0] += 0.5
            progress.trainer.global_step += 1
            progress._trigger_step()

    progress._before_epoch()
    steps(20)
    clock[0] += 60  # an evaluation
    progress._before_epoch()
    steps(20)
    assert abs(bar.format_dict["rate"] - 2.0) < 0.2  # steps per second of training, not of the pause
    assert abs(bar.format_dict["elapsed"] - 20) < 1.5
    progress._after_train()


_FAKE_TRAINING = """
import signal, sys, time
def stop(signum, frame):
    time.sleep(1.0)  # a checkpoint takes a while to write: a SIGKILL 0.25 s later would lose it
    with open({marker!r}, "w") as f:
        f.write(signal.Signals(signum).name)
    sys.exit(128 + signum)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
print("ready to be stopped", flush=True)
while True:
    time.sleep(0.1)
"""

_DEMO_RUNNING_IT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("demo", {demo!r})
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)
runner = demo.Runner({log!r}, quiet=True, resume_hint=" (resume hint)")
runner.run([sys.executable, {train!r}])
print("the demo went on", flush=True)
"""


def test_ctrl_c_reaches_training_as_sigint_and_the_demo_waits_for_its_checkpoint(tmp_path):
    """A terminal's Ctrl-C goes to its foreground process group: here the demo's. The demo passes
    it on to train.py (in a group of its own) and waits; subprocess.run would SIGKILL it 0.25 s later."""
    import signal
    marker, log = tmp_path / "stopped-by", tmp_path / "demo.log"
    (tmp_path / "train.py").write_text(_FAKE_TRAINING.format(marker=str(marker)))
    script = _DEMO_RUNNING_IT.format(demo=os.path.join(ROOT, "scripts", "demo.py"), log=str(log),
                                     train=str(tmp_path / "train.py"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, process_group=0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (log.exists() and "ready to be stopped" in log.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
    stdout, stderr = proc.communicate(timeout=60)
    assert marker.read_text() == "SIGINT"  # the training's handler ran to its end
    assert proc.returncode == 128 + signal.SIGINT and "the demo went on" not in stdout
    assert "demo: stopped on SIGINT (resume hint)" in stderr and "Traceback" not in stderr
