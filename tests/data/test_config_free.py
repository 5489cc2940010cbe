"""maskplus/data/ never reads the global config: what a function needs is an argument (a
``from_config(cfg)`` constructor takes the config as one), datasets are registered by the
command lines."""
import ast
import os

from tests.conftest import ROOT

DATA = os.path.join(ROOT, "maskplus", "data")


def config_imports(source, path="<source>"):
    """``[(line, statement)]`` of every import of the ``config`` module in ``source``, at any depth
    (a function's lazy import too), including ``__import__("config")`` and ``importlib.import_module``."""
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            names = [node.args[0].value] if called in ("__import__", "import_module") else []
        else:
            continue
        if any(name == "config" or str(name).startswith("config.") for name in names):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_module_of_maskplus_data_imports_the_config():
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(DATA) for f in fs if f.endswith(".py"))
    assert len(files) >= 8  # coco, pipeline, anchors, validate, transforms, ...
    offenders = []
    for path in files:
        with open(path) as f:
            found = config_imports(f.read(), path)
        offenders += [f"{os.path.relpath(path, ROOT)}:{line}: {code}" for line, code in found]
    assert offenders == []


def test_the_import_finder_sees_every_way_of_importing_the_config():
    source = ("def f():\n    from config import config as cfg\n"
              "import config\nimport numpy, config.sub\n__import__('config')\nimportlib.import_module('config')\n"
              "from maskplus.data import coco\nfrom .config import x\nimport configparser\n")
    assert sorted(line for line, _ in config_imports(source)) == [2, 3, 4, 5, 6]
