"""An older Python gets one line naming the version needed, from every entry point and from the
Makefile, before anything else can fail (e.g. the demo's Popen(process_group=...), new in 3.11).
The older interpreter is pretended: sys.version_info replaced before the entry point runs."""
import os
import shutil
import subprocess
import sys

import pytest

import maskplus
from tests.conftest import ROOT

ENTRY_POINTS = ["train.py", "predict.py", "scripts/demo.py", "scripts/make_shapes_dataset.py",
                "scripts/make_random_model.py", "scripts/paper_tables.py", "scripts/benchmark.py"]
NEEDED = ".".join(map(str, maskplus.PYTHON_NEEDED))
PRETEND = "import sys, runpy; sys.version_info = (3, 10, 12, 'final', 0); sys.argv = [{path!r}, '--help']; " \
          "runpy.run_path({path!r}, run_name='__main__')"


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_an_older_python_is_told_the_version_in_one_line(entry_point):
    path = os.path.join(ROOT, entry_point)
    proc = subprocess.run([sys.executable, "-c", PRETEND.format(path=path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == f"MaskPlus needs Python >= {NEEDED}; this is Python 3.10.12 ({sys.executable}).\n"


def test_this_python_passes_the_check():
    proc = subprocess.run([sys.executable, "scripts/make_shapes_dataset.py", "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage:")


def test_make_refuses_an_older_python_before_creating_anything(tmp_path):
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    fake = tmp_path / "python3.10"  # runs `python -c CODE` as a 3.10 would; anything else is an error
    fake.write_text(f"#!/bin/sh\n[ \"$1\" = -c ] || exit 99\nexec {sys.executable} -c "
                    "\"import sys; sys.version_info = (3, 10, 12); sys.version = '3.10.12 (pretend)'\n$2\"\n")
    fake.chmod(0o755)
    proc = subprocess.run(["make", "venv", f"PYTHON={fake}"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and not (tmp_path / ".venv").exists()
    assert proc.stderr.splitlines()[0] == (f"MaskPlus needs Python >= {NEEDED}; {fake} is 3.10.12: "
                                           f"make PYTHON=python3.11 ...")
