"""The package (pyproject.toml): `pip install -e .` installs what requirements.txt pins, the
console scripts name functions that exist, the top-level modules and packages are the project's,
the Python it requires is the one the entry points check, and no file edits sys.path."""
import importlib
import os
import re
import tomllib

import pytest

import maskplus
from tests.conftest import ROOT


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _requirements():
    """(runtime pins, test tools) of requirements.txt, split at its '# Test tools' comment."""
    runtime, tests, current = [], [], None
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            if line.startswith("#"):
                current = tests if "test" in line.lower() else runtime
                continue
            pin = line.split("#")[0].strip()
            if pin:
                (current if current is not None else runtime).append(pin)
    return runtime, tests


def test_the_package_pins_what_requirements_txt_pins():
    runtime, tests = _requirements()
    project = _pyproject()["project"]
    assert project["dependencies"] == runtime
    assert project["optional-dependencies"]["test"] == tests


def test_the_python_required_is_the_one_the_entry_points_check():
    wanted = ".".join(map(str, maskplus.PYTHON_NEEDED))
    assert _pyproject()["project"]["requires-python"] == f">={wanted}"
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert f"sys.version_info >= {maskplus.PYTHON_NEEDED}" in f.read()


@pytest.mark.parametrize("name", ["maskplus-train", "maskplus-predict", "maskplus-demo"])
def test_each_console_script_names_a_main_function(name):
    module, function = _pyproject()["project"]["scripts"][name].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert callable(getattr(importlib.import_module(module), "build_parser"))


def test_the_installed_modules_are_the_projects():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["py-modules"] == ["config", "train", "predict"]
    for module in setuptools["py-modules"]:
        assert os.path.isfile(os.path.join(ROOT, module + ".py"))
    packages = setuptools["packages"]["find"]["include"]
    assert "maskplus" in packages and "maskplus.*" in packages and "scripts" in packages
    data = [os.path.join(ROOT, "maskplus", p) for p in setuptools["package-data"]["maskplus"]]
    assert data and all(os.path.isfile(p) for p in data)


def _python_files():
    for top in ("train.py", "predict.py", "config.py"):
        yield os.path.join(ROOT, top)
    for folder in ("maskplus", "scripts", "tests"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            yield from (os.path.join(dirpath, f) for f in files if f.endswith(".py"))


def test_no_file_edits_sys_path():
    """The package is installed (or the tests' pythonpath names the checkout): nobody needs to."""
    edit = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    offenders = []
    for path in _python_files():
        with open(path) as f:
            offenders += [f"{os.path.relpath(path, ROOT)}:{n}" for n, line in enumerate(f, 1)
                          if edit.search(line)]
    assert offenders == []
