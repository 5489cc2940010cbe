"""scripts/measurements.py: the commit a benchmark names and the section it appends."""
import subprocess

from scripts import measurements


def test_report_appends_one_section_per_measurement_under_one_title(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(measurements, "ROOT", str(tmp_path))
    measurements.report("## first\n\nline", write=True)
    measurements.report("## second\n", write=True)
    measurements.report("## not written", write=False)
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert text == "# Benchmarks\n\nAppended by the benchmark scripts; newest last.\n\n## first\n\nline\n\n## second\n"
    assert "## not written" in capsys.readouterr().out


def test_the_commit_names_uncommitted_changes_and_is_unknown_outside_git(tmp_path, monkeypatch):
    monkeypatch.setattr(measurements, "ROOT", str(tmp_path))
    assert measurements.commit() == "unknown"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("1")
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "a"], check=True)
    head = subprocess.run(git[:3] + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert measurements.commit() == head
    (tmp_path / "a.txt").write_text("2")
    assert measurements.commit() == head + "-dirty"
