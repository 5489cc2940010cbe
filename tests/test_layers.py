"""Import layers: the MaskPlus techniques and the modeling primitives below them import nothing above.

The floor checked here: ``maskplus/techniques/*`` and the config-free modeling primitives
(``layers``, ``model_box``, ``mask_ops``) import, among the project's modules, only each other and
``maskplus.compat`` -- never the config, the model (heads, builders), data, engine or the
command lines. Imports are read from the source (every ``import``, also those inside functions),
so the set is closed: what the floor imports is itself on the floor.
"""
import ast
import os

import pytest

from tests.conftest import ROOT

PROJECT_TOP = {"config", "train", "predict", "maskplus", "scripts", "tests"}
PRIMITIVES = {"maskplus.modeling.layers", "maskplus.modeling.model_box", "maskplus.modeling.mask_ops"}


def _module_file(module):
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def project_imports(module, source=None):
    """The project modules ``module`` imports (packages and submodules), anywhere in its source."""
    path = _module_file(module)
    tree = ast.parse(source if source is not None else open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in PROJECT_TOP)
    return found


def floor_modules():
    techniques = sorted(f"maskplus.techniques.{f[:-3]}" for f in os.listdir(os.path.join(ROOT, "maskplus", "techniques"))
                        if f.endswith(".py") and f != "__init__.py")
    return ["maskplus.techniques"] + techniques + sorted(PRIMITIVES)


ALLOWED = set(floor_modules()) | {"maskplus", "maskplus.compat", "maskplus.modeling"}


@pytest.mark.parametrize("module", floor_modules())
def test_the_techniques_and_mask_ops_import_nothing_above_them(module):
    above = sorted(project_imports(module) - ALLOWED)
    assert above == [], f"{module} imports {above}: the techniques' floor must take them as arguments"


def test_the_import_reader_sees_every_kind_of_import():
    source = """
import numpy as np
from maskplus.compat import tf
from maskplus.modeling import model_box, layers as lay
from . import mask_ops
def f():
    from config import config as cfg
    import maskplus.engine.export
"""
    assert project_imports("maskplus.techniques.quasi_multitask", source) == {
        "maskplus.compat", "maskplus.modeling", "maskplus.modeling.model_box", "maskplus.modeling.layers",
        "maskplus.techniques", "config", "maskplus.engine.export"}
