"""The import layers: lower floors never import higher ones, no two modules import each other
(directly or round a longer circle), and TensorFlow is never imported before ``maskplus.compat``.

Imports are read from the source (every ``import``, also those inside functions), so a lazy import
cannot hide an upward arrow. The floors, lowest first (CONTRIBUTING.md "Layout" shows the same table):

  floor 0: foundation          maskplus/__init__.py, architecture.py, atomic.py, compat.py, console.py, parent_death.py, precision.py
  floor 1: config              config.py, maskplus/presets.py
  floor 2: data                maskplus/data/
  floor 3: evaluation          maskplus/evaluation/, maskplus/viz.py
  floor 4: model               maskplus/modeling/                                        (config-free)
  floor 5: techniques          maskplus/techniques/                                      (config-free)
  floor 6: engine              maskplus/engine/ (engine/model.py gives the model its techniques)
  floor 7: front-end helpers   maskplus/cli.py, maskplus/testing.py
  floor 8: command lines       train.py, predict.py

A module may import modules of its own floor or of lower ones. The config-free modules (the model and
the techniques) never reach the config: no module they import, directly or through others, imports
it. What they need is an argument (a parameter record's ``from_config(cfg)`` is given the config).
"""
import ast
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

#: (floor, modules): a name ending in ".*" stands for every module below that package
LAYERS = [
    ("foundation", ["maskplus", "maskplus.architecture", "maskplus.atomic", "maskplus.compat", "maskplus.console",
                    "maskplus.parent_death", "maskplus.precision"]),
    ("config", ["config", "maskplus.presets"]),
    ("data", ["maskplus.data", "maskplus.data.*"]),
    ("evaluation", ["maskplus.evaluation", "maskplus.evaluation.*", "maskplus.viz"]),
    ("model", ["maskplus.modeling", "maskplus.modeling.*"]),
    ("techniques", ["maskplus.techniques", "maskplus.techniques.*"]),
    ("engine", ["maskplus.engine", "maskplus.engine.*"]),
    ("front-end helpers", ["maskplus.cli", "maskplus.testing"]),
    ("command lines", ["train", "predict"]),
]
#: the config-free floors
CONFIG_FREE = ("model", "techniques")
PROJECT_TOP = {"config", "train", "predict", "maskplus", "scripts", "tests"}
#: libraries that import TensorFlow when imported
TENSORFLOW_IMPORTERS = {"tensorflow", "tensorpack", "tf_keras", "keras", "horovod"}
COMPAT = "maskplus.compat"


def _module_file(module, root=ROOT):
    base = os.path.join(root, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def layered_modules(root=ROOT):
    """Every module the layers cover: maskplus/**, config, train, predict."""
    found = [m for m in ("config", "train", "predict") if _module_file(m, root)]
    for folder, _, files in os.walk(os.path.join(root, "maskplus")):
        package = os.path.relpath(folder, root).replace(os.sep, ".")
        for f in files:
            if f.endswith(".py"):
                found.append(package if f == "__init__.py" else f"{package}.{f[:-3]}")
    return sorted(found)


def floor_of(module):
    """The index in LAYERS of the first floor that names ``module`` (exactly, or by a ``.*``)."""
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if module == pattern or (pattern.endswith(".*") and module.startswith(pattern[:-1])):
                return index
    return None


def _imports(module, source, root):
    """[(node, [project-or-library names it imports])] for every import statement of ``source``."""
    path = _module_file(module, root) or f"{module}.py"
    tree = ast.parse(source, path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}", root)]
        else:
            continue
        parents = {".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 1)}
        out.append((node, names + sorted(parents - set(names))))  # importing a.b.c runs a and a.b too
    return tree, out


def project_imports(module, source=None, root=ROOT):
    """The project modules ``module`` imports (packages and submodules), anywhere in its source."""
    source = source if source is not None else open(_module_file(module, root)).read()
    _, imports = _imports(module, source, root)
    return {n for _, names in imports for n in names if n.split(".")[0] in PROJECT_TOP}


def import_graph(root=ROOT):
    return {m: project_imports(m, root=root) - {m} for m in layered_modules(root)}


def upward_imports(graph):
    """["a (floor) imports b (higher floor)"] for every import to a higher floor."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target in graph and floor_of(target) > floor_of(module):
                found.append(f"{module} ({LAYERS[floor_of(module)][0]}) imports {target} "
                             f"({LAYERS[floor_of(target)][0]})")
    return found


def import_circles(graph):
    """Each circle of imports as [a, b, ..., a], one per strongly connected set of modules."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(_circle_through(min(component), component, graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def _circle_through(start, component, graph):
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"no circle through {start}")


# ---------------------------------------------------------------------------------- the layers
def test_every_module_stands_on_a_floor():
    unplaced = [m for m in layered_modules() if floor_of(m) is None]
    assert unplaced == [], f"put {unplaced} on a floor of LAYERS (and CONTRIBUTING.md 'Layout')"


def test_no_module_imports_a_higher_floor():
    upward = upward_imports(import_graph())
    assert not upward, "lower floors never import higher ones:\n" + "\n".join(upward)


def test_no_import_circle():
    circles = [" -> ".join(c) for c in import_circles(import_graph())]
    assert not circles, "import circles:\n" + "\n".join(circles)


def config_free(module):
    return LAYERS[floor_of(module)][0] in CONFIG_FREE


def path_to_config(module, graph):
    """A shortest import path [module, ..., "config"], or None if ``module`` never reaches the config."""
    paths, seen = [[module]], {module}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph.get(path[-1], ())):
            if target == "config":
                return path + [target]
            if target not in seen:
                seen.add(target)
                paths.append(path + [target])
    return None


@pytest.mark.parametrize("module", [m for m in layered_modules() if config_free(m)])
def test_the_config_free_modules_never_reach_the_config(module):
    path = path_to_config(module, import_graph())
    assert path is None, f"{' -> '.join(path)}: a config-free module takes what it needs as arguments"


def test_contributing_shows_the_floors_of_this_module():
    with open(os.path.join(ROOT, "CONTRIBUTING.md")) as f:
        guide = f.read()
    layout = guide[guide.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    assert "lower floors never import higher ones" in layout.lower()
    table = [line for line in layout.splitlines() if line.startswith("  floor ")]
    assert [line.strip().split("  ")[0] for line in table] == [f"floor {i}: {name}" for i, (name, _) in enumerate(LAYERS)]
    assert table == [line for line in __doc__.splitlines() if line.startswith("  floor ")]


# ------------------------------------------------------------ who reads the global config
#: the modules that read the global config (``from config import config``, lazily too), each with why; every
#: other module takes what it needs as arguments: values, or a record's ``from_config(cfg)`` given ``cfg``
#: by one of these (``config.py`` itself and ``maskplus.presets`` import only its error and helpers)
CONFIG_READERS = {
    "train": "a command line: --preset and --config go into the config",
    "predict": "a command line: --preset and --config go into the config",
    "maskplus.cli": "the command lines' shared steps: presets, --config, finalize_configs",
    "maskplus.testing": "configures the small models of the tests and scripts",
    "maskplus.engine.trainer": "the trainer: the training run, its callbacks and their parameters",
    "maskplus.engine.inference": "the inference entry: the predictor, its session and checkpoint load",
    "maskplus.engine.export": "the export entry: the serving graph and its checkpoint load",
    "maskplus.engine.model": "the models' from_config",
}


def config_readers(root=ROOT):
    """The modules that import the global config object: ``from config import config`` or the
    whole module (``import config``), anywhere in their source."""
    found = set()
    for module in layered_modules(root):
        _, imports = _imports(module, open(_module_file(module, root)).read(), root)
        for node, _ in imports:
            whole = isinstance(node, ast.Import) and any(a.name == "config" for a in node.names)
            named = (isinstance(node, ast.ImportFrom) and node.module == "config" and not node.level
                     and any(a.name in ("config", "*") for a in node.names))
            if whole or named:
                found.add(module)
    return found


def _check_config_readers(readers):
    assert not readers - set(CONFIG_READERS), (
        f"{sorted(readers - set(CONFIG_READERS))} import the global config: take what they need as arguments "
        f"(or a record's from_config(cfg)), read by one of CONFIG_READERS")
    assert readers == set(CONFIG_READERS), f"{sorted(set(CONFIG_READERS) - readers)} no longer read it: drop them"


def test_only_the_entry_points_trainer_and_model_builders_read_the_global_config():
    _check_config_readers(config_readers())


def test_the_config_reader_sees_lazy_and_whole_module_imports_but_not_the_config_floor(tmp_path):
    root = _tree(tmp_path, {
        "config.py": "",
        "maskplus/__init__.py": "",
        "maskplus/lazy.py": "def f():\n    from config import config as cfg\n    return cfg\n",
        "maskplus/whole.py": "import config\n",
        "maskplus/floor.py": "from config import ConfigError, finalize_configs\n",
    })
    assert config_readers(root) == {"maskplus.lazy", "maskplus.whole"}


# ------------------------------------------------------------ the checks fail where they should
def _tree(tmp_path, files):
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return str(tmp_path)


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
        "maskplus", "maskplus.compat", "maskplus.modeling", "maskplus.modeling.model_box", "maskplus.modeling.layers",
        "maskplus.techniques", "config", "maskplus.engine", "maskplus.engine.export"}


def test_an_upward_import_and_a_circle_are_found_and_named(tmp_path):
    root = _tree(tmp_path, {
        "config.py": "def finalize():\n    from maskplus.data import coco\n",
        "maskplus/__init__.py": "",
        "maskplus/data/__init__.py": "",
        "maskplus/data/coco.py": "from config import finalize\n",
        "maskplus/data/pipeline.py": "def f():\n    from maskplus.engine.trainer import train\n",
        "maskplus/engine/__init__.py": "",
        "maskplus/engine/trainer.py": "from maskplus.data import pipeline\n",
    })
    graph = import_graph(root)
    assert upward_imports(graph) == [
        "config (config) imports maskplus.data (data)",
        "config (config) imports maskplus.data.coco (data)",
        "maskplus.data.pipeline (data) imports maskplus.engine (engine)",
        "maskplus.data.pipeline (data) imports maskplus.engine.trainer (engine)"]
    assert sorted(import_circles(graph)) == [
        ["config", "maskplus.data.coco", "config"],
        ["maskplus.data.pipeline", "maskplus.engine.trainer", "maskplus.data.pipeline"]]


def test_a_config_read_through_another_module_is_found(tmp_path):
    root = _tree(tmp_path, {
        "config.py": "",
        "maskplus/__init__.py": "",
        "maskplus/data/__init__.py": "",
        "maskplus/data/anchors.py": "import numpy\n",
        "maskplus/data/loader.py": "def f():\n    from config import config\n",
        "maskplus/modeling/__init__.py": "",
        "maskplus/modeling/box.py": "from maskplus.data import anchors\n",
        "maskplus/modeling/head.py": "from maskplus.modeling import box\nfrom maskplus.data import loader\n",
    })
    graph = import_graph(root)
    assert path_to_config("maskplus.modeling.box", graph) is None
    assert path_to_config("maskplus.modeling.head", graph) == ["maskplus.modeling.head", "maskplus.data.loader",
                                                               "config"]


# ------------------------------------------------------------ compat before TensorFlow
def compat_late(module, source=None, root=ROOT):
    """The imports of TensorFlow-importing libraries in ``module`` that may run before
    ``maskplus.compat`` has: ["line: statement"]. Compat counts as imported when an import of it
    precedes at module level, or (inside a function) anywhere at module level or earlier in that
    function, or when a package above the module imports it at module level."""
    source = source if source is not None else open(_module_file(module, root)).read()
    if module == COMPAT or _package_imports_compat(module, root):
        return []
    tree, imports = _imports(module, source, root)
    parent = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def function_of(node):
        while node in parent:
            node = parent[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return node
        return None

    compat_lines = {}  # function (None: module level) -> lines importing compat
    for node, names in imports:
        if COMPAT in names:
            compat_lines.setdefault(function_of(node), []).append(node.lineno)
    late = []
    for node, names in imports:
        if not any(n.split(".")[0] in TENSORFLOW_IMPORTERS for n in names):
            continue
        scope = function_of(node)
        at_module = compat_lines.get(None, [])
        if scope is None:
            ok = any(line < node.lineno for line in at_module)
        else:
            ok = bool(at_module) or any(line < node.lineno for line in compat_lines.get(scope, []))
        if not ok:
            late.append(f"{node.lineno}: {ast.unparse(node)}")
    return late


def _package_imports_compat(module, root):
    parts = module.split(".")
    for k in range(1, len(parts)):
        package = ".".join(parts[:k])
        path = _module_file(package, root)
        if path and path.endswith("__init__.py"):
            tree, imports = _imports(package, open(path).read(), root)
            if any(COMPAT in names for node, names in imports if node in tree.body):
                return True
    return False


def _entry_points():
    scripts = sorted(f"scripts.{f[:-3]}" for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py"))
    return layered_modules() + scripts


@pytest.mark.parametrize("module", _entry_points())
def test_compat_is_imported_before_anything_imports_tensorflow(module):
    assert compat_late(module) == [], \
        f"{module}: import maskplus.compat (or its package does) before TensorFlow/Tensorpack"


def test_the_compat_check_sees_a_late_compat_and_accepts_an_early_one():
    late = "from tensorpack.models import Conv2D\nfrom maskplus.compat import tf\n"
    early = "from maskplus import compat  # noqa\nfrom tensorpack.models import Conv2D\n"
    lazy_late = "def f():\n    from tensorpack.utils import logger\n    import maskplus.compat\n"
    lazy_early = "def f():\n    import maskplus.compat\n    from tensorpack.utils import logger\n"
    assert compat_late("maskplus.data.coco", late) == ["1: from tensorpack.models import Conv2D"]
    assert compat_late("maskplus.data.coco", lazy_late) == ["2: from tensorpack.utils import logger"]
    assert compat_late("maskplus.data.coco", early) == compat_late("maskplus.data.coco", lazy_early) == []
    assert compat_late("maskplus.modeling.model_fpn", late) == []  # maskplus/modeling/__init__ imports it


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "scripts")) if f.endswith(".py")))
def test_scripts_import_nothing_from_the_tests(script):
    """What a script needs of the tests' helpers lives in the package (maskplus/testing.py)."""
    test_modules = {f[:-3] for f in os.listdir(os.path.join(ROOT, "tests")) if f.endswith(".py")} | {"tests"}
    _, imports = _imports(f"scripts.{script[:-3]}", open(os.path.join(ROOT, "scripts", script)).read(), ROOT)
    from_tests = sorted({n for _, names in imports for n in names if n.split(".")[0] in test_modules})
    assert from_tests == [], f"scripts/{script} imports {from_tests}"


LIGHT_MODULES = ["config", "maskplus", "maskplus.presets", "maskplus.console", "maskplus.parent_death",
                 "maskplus.evaluation.coco_eval", "maskplus.evaluation.tables", "maskplus.data.shapes",
                 "maskplus.engine.run_dir"]


@pytest.mark.cli
def test_the_light_modules_import_without_tensorflow():
    """What scripts/demo.py, make_shapes_dataset.py and paper_tables.py import: no TensorFlow (seconds of
    start-up and its messages on the console)."""
    code = (f"import sys\nimport {', '.join(LIGHT_MODULES)}\n"
            "print(sorted(m for m in ('tensorflow', 'tensorpack', 'tf_keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
