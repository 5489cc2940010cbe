"""The documentation stays true (CONTRIBUTING.md, "Documentation that stays true").

Every fenced ``bash``/``sh``/``console`` block of README.md, docs/*.md and CONTRIBUTING.md is read
and each of our commands in it is checked against the code: ``python train.py``, ``predict.py``,
``scripts/*.py`` and ``maskplus-*`` through the entry point's own ``build_parser()`` (flags parse;
every ``--preset`` exists; every ``--config`` key exists and its value passes the config's
finalisation, on a machine that could run any precision), ``python -m maskplus...``, shell scripts
(each flag given is one of the script's ``case`` labels), ``make`` (targets and variables), and
every repository path named. Commands that need COCO, weights or a GPU are checked in this dry
form. ``console`` blocks show what a command prints: those run for real and are compared (``...``
marks left-out lines). A ``bash`` block that begins by generating the shapes dataset is a
tutorial: it runs for real, with fewer images and steps.

The docs cite measurements by quoting a heading of BENCHMARKS.md or RESULTS.md (which names the
date, commit and CPU); no commit or dated figure stands anywhere else in README.md or docs/.
"""
import contextlib
import glob
import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib
import types

import pytest

from tests.conftest import ROOT

DOC_FILES = sorted(["README.md", "CONTRIBUTING.md"]
                   + [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))])
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
#: top-level names a command or a code span can mean as a path inside the repository
REPO_DIRS = ("maskplus/", "scripts/", "tests/", "docs/", ".ci/")
REPO_FILES = {"train.py", "predict.py", "config.py", "Makefile", "pyproject.toml", "requirements.txt",
              "pytest.ini", "README.md", "CONTRIBUTING.md", "BENCHMARKS.md", "RESULTS.md", "LICENSE", "NOTICE"}
#: the shapes dataset's generator: a block that starts with it is a tutorial that runs here
SHAPES_GENERATOR = "scripts/make_shapes_dataset.py"
MONTHS = re.compile(r"(January|February|March|April|May|June|July|August|September|October|November|December) "
                    r"20[0-9][0-9]|[0-9]{1,2} (Nov|Dec)[a-z]* 20[0-9][0-9]")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def _read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


# ------------------------------------------------------------------------------ reading the docs
class Command:
    """One command of a doc: where it is, its words (variables of the block expanded, environment
    assignments and wrappers such as horovodrun removed) and, in a console block, its output."""

    def __init__(self, doc, line, text, words, env, ranks=None, output=None):
        self.doc, self.line, self.text, self.words, self.env = doc, line, text, words, env
        self.ranks, self.output = ranks, output

    def __repr__(self):
        return f"{self.doc}:{self.line}: {self.text}"


def fenced_blocks(text):
    """(language, first line number, lines) of every fenced block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i])
                i += 1
            indent = min((len(l) - len(l.lstrip()) for l in body if l.strip()), default=0)
            out.append((m.group(1), start + 1, [l[indent:] for l in body]))
        i += 1
    return out


def _logical_lines(lines, first_line):
    """Lines with their backslash continuations joined: (line number, text)."""
    out, buf, start = [], "", None
    for k, line in enumerate(lines):
        if start is None:
            start = first_line + k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf, start = "", None
    return out


def _split(text):
    """Shell words of one line, comments dropped, split at ``&&``, ``||`` and ``;``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    parts, current = [], []
    for word in lexer:
        if word in ("&&", "||", ";", "|", "&"):
            parts.append(current)
            current = []
        else:
            current.append(word)
    return [p for p in parts + [current] if p]


def _expand(word, env):
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), m.group(0)), word)


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def commands_of(doc):
    """Every command of the doc's shell blocks, and the tutorial blocks (lists of commands)."""
    commands, tutorials = [], []
    for language, first, lines in fenced_blocks(_read(doc)):
        if language not in SHELL_LANGUAGES:
            continue
        env, block = {}, []
        if language == "console":
            logical, current = [], None
            for number, line in _logical_lines(lines, first):
                if line.startswith("$ "):
                    current = [number, line[2:], []]
                    logical.append(current)
                elif current is not None:
                    current[2].append(line)
        else:
            logical = [[number, line, None] for number, line in _logical_lines(lines, first)]
        for number, line, output in logical:
            for words in _split(line):
                if words[0] == "export":
                    env.update(w.split("=", 1) for w in words[1:] if "=" in w)
                    continue
                words = [_expand(w, env) for w in words]
                prefix_env = {}
                while words and _ASSIGNMENT.match(words[0]):
                    key, value = words.pop(0).split("=", 1)
                    prefix_env[key] = value
                ranks = None
                if words and words[0] == "horovodrun":
                    ranks = int(words[words.index("-np") + 1]) if "-np" in words else None
                    k = next((k for k, w in enumerate(words) if _is_python(w)), len(words))
                    words = words[k:]
                if words:
                    block.append(Command(doc, number, line.strip(), words, prefix_env, ranks, output))
        commands += block
        if block and _script_of(block[0]) == SHAPES_GENERATOR:
            tutorials.append(block)
    return commands, tutorials


def _is_python(word):
    return re.fullmatch(r"python(3(\.\d+)?)?", os.path.basename(word)) is not None


def _script_of(command):
    """The repository file a command runs (train.py, scripts/x.py, scripts/x.sh), if any."""
    words = command.words
    if _is_python(words[0]) and len(words) > 1 and not words[1].startswith("-"):
        return words[1]
    if words[0] in ("bash", "sh") and len(words) > 1:
        return words[1]
    if words[0].startswith("scripts/"):
        return words[0]
    return None


ALL_COMMANDS, TUTORIALS = [], []
for _doc in DOC_FILES:
    _commands, _tutorials = commands_of(_doc)
    ALL_COMMANDS += _commands
    TUTORIALS += _tutorials
CONSOLE_COMMANDS = [c for c in ALL_COMMANDS if c.output is not None]


# ------------------------------------------------------------------------------ the dry checks
def _console_scripts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def _entry_point(command):
    """(module name, the rest of the words) for our Python command lines, else None."""
    words = command.words
    if words[0] in _console_scripts():
        return _console_scripts()[words[0]].split(":")[0], words[1:]
    script = _script_of(command)
    if script and script.endswith(".py") and _is_python(words[0]):
        return script[:-3].replace("/", "."), words[2:]
    return None


@contextlib.contextmanager
def _config_sandbox(monkeypatch, horovod_ranks):
    """The global config and the environment restored afterwards; precision checked as on a machine
    that has every capability (a CPU with native bf16 or GPUs of compute capability 8.0: the docs'
    commands are meant for one or the other); Horovod's rank count faked."""
    import config
    from maskplus import precision
    saved, environ = config.config.snapshot(), dict(os.environ)

    def any_machine(c, is_training):
        key = "TRAIN.PRECISION" if is_training else "TEST.PRECISION"
        errors = []
        for flags, gpus in ((set(precision.NATIVE_BF16_FLAGS), []), (set(), [(8, 0)])):
            try:
                return precision.choose(c.get(key), flags, gpus, key)
            except precision.PrecisionError as e:
                errors.append(str(e))
        raise config.ConfigError(errors[0])

    monkeypatch.setattr(config, "_check_precision", any_machine)
    hvd = types.ModuleType("horovod.tensorflow")
    hvd.size = lambda: horovod_ranks or 8
    monkeypatch.setitem(sys.modules, "horovod", types.ModuleType("horovod"))
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", hvd)
    try:
        yield config
    finally:
        config.config.restore(saved)
        os.environ.clear()
        os.environ.update(environ)


def check_entry_point(command, monkeypatch):
    module_name, argv = _entry_point(command)
    module = importlib.import_module(module_name)
    assert hasattr(module, "build_parser"), f"{module_name} has no build_parser() to check {command} with"
    parser = module.build_parser()
    errors = []
    parser.error = lambda message: errors.append(message) or (_ for _ in ()).throw(SystemExit(2))
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"{command}: its flags do not parse ({'; '.join(errors) or 'exit'})")
    config_args = getattr(args, "config", None)
    preset = getattr(args, "preset", None) or ("demo-cpu" if module_name == "scripts.demo" else None)
    if config_args is None and preset is None:
        return
    from maskplus.data.coco_classes import COCO_CLASS_NAMES
    from maskplus.presets import preset_overrides
    with _config_sandbox(monkeypatch, command.ranks) as config:
        try:
            if preset:
                config.config.update_args(preset_overrides(preset))
            config.config.update_args(config_args or [])
            config.finalize_configs(is_training=module_name in ("train", "scripts.demo"),
                                    class_names=lambda: list(COCO_CLASS_NAMES))
        except config.ConfigError as e:
            pytest.fail(f"{command}: {e}")


def check_module_run(command):
    words = command.words
    module = words[words.index("-m") + 1]
    if not module.startswith("maskplus"):
        return  # python -m pytest ...: only its paths are checked
    assert importlib.util.find_spec(module) is not None, f"{command}: no module {module}"
    if module == "maskplus.presets":
        from maskplus.presets import cpu_scale_overrides
        assert words[words.index("-m") + 2] == "--cpu-scale", command
        for name in words[words.index("-m") + 3:]:
            cpu_scale_overrides(name)


def check_shell_script(command):
    script = _script_of(command)
    text = _read(script)
    for flag in [w for w in command.words if w.startswith("--")]:
        label = re.compile(rf"(?m)^\s*(?:[-\w]+\|)*{re.escape(flag)}(?:\|[-\w]+)*\)")
        assert label.search(text), f"{command}: {script} has no option {flag}"


def check_make(command):
    text = _read("Makefile")
    targets = set(re.findall(r"(?m)^([A-Za-z0-9_.-]+)\s*:(?!=)", text))
    variables = set(re.findall(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=", text)) | set(re.findall(r"\$\((\w+)\)", text))
    for word in command.words[1:]:
        if "=" in word:
            assert word.split("=")[0] in variables, f"{command}: the Makefile has no variable {word.split('=')[0]}"
        elif not word.startswith("-"):
            assert word in targets, f"{command}: the Makefile has no target {word}"


def repository_paths(words):
    """The words (or the values after '=') that name a file or folder of the repository."""
    for word in words:
        for candidate in (word, word.split("=", 1)[-1]):
            candidate = candidate.split("::")[0]
            if any(ch in candidate for ch in "*?<>{}[]$"):
                continue
            if candidate.startswith(REPO_DIRS) or candidate in REPO_FILES:
                yield candidate
                break


def _ours(command):
    words = command.words
    return (_entry_point(command) is not None or words[0] == "make" or words[0].startswith("maskplus-")
            or (_is_python(words[0]) and len(words) > 2 and words[1] == "-m")
            or (_script_of(command) or "").endswith(".sh"))


def _shows_an_error(command):
    """A console example of a mistake (its output an error line): the output check runs it."""
    return any(line.startswith(("Config error:", "Error:", "usage:")) for line in command.output or [])


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=repr)
def test_each_documented_command_agrees_with_the_code(command, monkeypatch):
    words = command.words
    for path in repository_paths(words):
        assert os.path.exists(os.path.join(ROOT, path)), f"{command}: {path} does not exist"
    if _shows_an_error(command):
        return
    if words[0].startswith("maskplus-"):
        assert words[0] in _console_scripts(), f"{command}: pyproject.toml installs no {words[0]}"
    if _entry_point(command):
        check_entry_point(command, monkeypatch)
    elif _is_python(words[0]) and "-m" in words[1:2]:
        check_module_run(command)
    elif (_script_of(command) or "").endswith(".sh"):
        check_shell_script(command)
    elif words[0] == "make":
        check_make(command)


def test_the_docs_show_our_commands():
    """The reader above finds them (a change of fence or prompt style would silently check nothing)."""
    ours = [c for c in ALL_COMMANDS if _ours(c)]
    scripts = {c.words[1] for c in ours if _is_python(c.words[0]) and len(c.words) > 1}
    assert {"train.py", "predict.py", "scripts/demo.py", SHAPES_GENERATOR} <= scripts
    assert any(c.words[:2] == ["make", "demo"] for c in ours) and any(c.words[:2] == ["make", "test"] for c in ours)
    assert CONSOLE_COMMANDS and TUTORIALS


#: the first words of a command line of ours
COMMAND_START = re.compile(r"^\s*(\$ )?(\S+=\S+ )*(python\S* (train|predict)\.py|python\S* scripts/|python\S* -m maskplus|"
                           r"maskplus-|make |bash scripts/|horovodrun )")


@pytest.mark.parametrize("doc", DOC_FILES)
def test_no_command_hides_in_a_block_the_reader_skips(doc):
    """A command in a fence without a shell language would be read by users and checked by nobody."""
    hidden = [f"{doc}:{first + k}: {line}" for language, first, lines in fenced_blocks(_read(doc))
              if language not in SHELL_LANGUAGES for k, line in enumerate(lines) if COMMAND_START.match(line)]
    assert hidden == [], "label these blocks bash (commands) or console ($ command, then its output):\n" + \
        "\n".join(hidden)


@pytest.mark.parametrize("doc", DOC_FILES)
def test_every_repository_path_in_a_code_span_exists(doc):
    spans = re.findall(r"`([^`\n]+)`", _read(doc))
    missing = sorted({p for span in spans for p in repository_paths(span.split())
                      if not os.path.exists(os.path.join(ROOT, p.rstrip(".,:;)")))})
    assert missing == [], f"{doc} names {missing}"


# ------------------------------------------------------------------------------ measurements
def _headings(rel):
    return {re.sub(r"\s+", " ", line.lstrip("#").strip()) for line in _read(rel).splitlines() if line.startswith("#")}


def _tensorpack_reference_commit():
    return re.search(r"examples/FasterRCNN at ([0-9a-f]{7,})", _read("pytest.ini")).group(1)


@pytest.mark.parametrize("doc", DOC_FILES)
def test_measurements_are_cited_by_their_heading_and_nothing_dated_stands_elsewhere(doc):
    text = re.sub(r"\s+", " ", _read(doc))
    headings = _headings("BENCHMARKS.md") | _headings("RESULTS.md")
    quoted = [q for q in re.findall(r'"([^"]+)"', text)
              if re.match(r"20\d\d-\d\d-\d\d", q) or "commit" in q or "CPU-scale sanity ablation" in q]
    assert [q for q in quoted if q not in headings] == [], f"{doc} cites headings BENCHMARKS.md/RESULTS.md lack"
    rest = text
    for q in quoted:
        rest = rest.replace(f'"{q}"', "")
    assert MONTHS.findall(rest) == [], f"{doc}: a dated figure belongs in BENCHMARKS.md or RESULTS.md"
    commits = set(COMMIT.findall(rest)) - {_tensorpack_reference_commit()}
    assert commits == set(), f"{doc} names commits {sorted(commits)} outside a quoted BENCHMARKS/RESULTS heading"


def test_the_readme_is_a_short_manual_and_the_licence_is_there():
    assert len(_read("README.md").splitlines()) <= 250
    assert "Apache License" in _read("LICENSE") and "Version 2.0" in _read("LICENSE")
    assert "independent implementation" in _read("NOTICE") and "Tensorpack" in _read("NOTICE")


# ------------------------------------------------------------------------------ run for real
def _argv(words):
    """The command line as run from anywhere: our interpreter, the repository's files."""
    words = list(words)
    if words[0].startswith("maskplus-"):
        module = _console_scripts()[words[0]].split(":")[0]
        words = ["python", module.replace(".", "/") + ".py"] + words[1:]
    if _is_python(words[0]):
        words[0] = sys.executable
        if len(words) > 1 and os.path.isfile(os.path.join(ROOT, words[1])):
            words[1] = os.path.join(ROOT, words[1])
    return words


def _matches(shown, printed):
    """``shown`` (with '...' for left-out lines) is ``printed``: the parts between '...' appear in
    order as runs of whole lines, the first and last part at the ends unless '...' is there."""
    parts, part = [], []
    for line in shown:
        if line.strip() == "...":
            parts.append(part)
            part = []
        else:
            part.append(line.rstrip())
    parts.append(part)
    printed = [line.rstrip() for line in printed]
    at = 0
    for k, part in enumerate(parts):
        if not part:
            continue
        starts = [i for i in range(at, len(printed) - len(part) + 1) if printed[i:i + len(part)] == part]
        if not starts or (k == 0 and starts[0] != 0):
            return False
        at = starts[0] + len(part)
        if k == len(parts) - 1 and at != len(printed):
            return False
    return True


def test_the_output_matcher_reads_ellipses_as_gaps():
    printed = ["TF noise", "a = 1", "b = 2", "c = 3", "Schedule:"]
    assert _matches(["...", "b = 2", "...", "Schedule:"], printed)
    assert _matches(["...", "a = 1", "b = 2", "..."], printed)
    assert not _matches(["...", "b = 2", "a = 1", "..."], printed)  # order
    assert not _matches(["a = 1", "..."], printed)                  # not the first line
    assert not _matches(["...", "c = 3"], printed)                  # not the last line
    assert not _matches(["...", "b = 3", "..."], printed)


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize("command", CONSOLE_COMMANDS, ids=repr)
def test_each_shown_output_is_what_the_command_prints(command):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **command.env)
    proc = subprocess.run(_argv(command.words), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    assert _matches(command.output, proc.stdout.splitlines()), (
        f"{command} prints (exit {proc.returncode}):\n{proc.stdout[-3000:]}\nnot what {command.doc} shows:\n"
        + "\n".join(command.output))


#: what makes a tutorial short: fewer images, a few steps (batch-8 steps: 4 real steps on one tower)
SHORTER = {SHAPES_GENERATOR: ["--train", "6", "--val", "3", "--workers", "1"]}
SHORTER_CONFIG = {"train.py": ["TRAIN.LR_SCHEDULE=[0.25,0.375,0.5]"]}


def _shortened(words):
    script = words[1] if len(words) > 1 else ""
    words = list(words) + SHORTER.get(script, [])
    extra = SHORTER_CONFIG.get(script, [])
    if extra:
        if "--config" not in words:
            return words + ["--config", *extra]
        end = next((k for k in range(words.index("--config") + 1, len(words)) if words[k].startswith("--")), len(words))
        words[end:end] = extra
    return words


def _promised_outputs(words, cwd):
    """What a predict.py command says it writes, as paths to check."""
    out = []
    for flag, suffix in (("--evaluate", "-metrics.json"), ("--export-npz", ""), ("--export-pb", "")):
        if flag in words:
            path = words[words.index(flag) + 1]
            out.append(os.path.join(cwd, path[:-len(".json")] + suffix if suffix else path))
    return out


@pytest.mark.slow
@pytest.mark.cli
@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda t: repr(t[0]))
def test_each_tutorial_on_the_shapes_data_runs(tutorial, tmp_path):
    for command in tutorial:
        argv = _argv(_shortened(command.words))
        proc = subprocess.run(argv, cwd=tmp_path, env=dict(os.environ, **command.env), capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"{command} (run as {argv}) failed:\n{proc.stderr[-4000:]}"
        for path in _promised_outputs(command.words, str(tmp_path)):
            assert os.path.exists(path), f"{command} wrote no {path}"
        if "--predict" in command.words:
            out = os.path.join(tmp_path, command.words[command.words.index("--output-dir") + 1]
                               if "--output-dir" in command.words else "predictions")
            assert glob.glob(os.path.join(out, "**", "*.png"), recursive=True), f"{command} drew nothing"
