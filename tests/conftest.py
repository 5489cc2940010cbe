"""Shared test fixtures: temporary config overrides, a tiny COCO set; the markers given by path
(``cli``) and the check that only ``cli`` tests start command lines.

The tests import this checkout (pytest.ini's ``pythonpath``), and so do the command lines they
start: PYTHONPATH names it, ahead of any installed copy (``pip install -e`` of another checkout, or
the original of a mutation check's scratch copy)."""
import json
import os
import subprocess

import cv2
import numpy as np
import pytest

from config import config as _cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


# ---------------------------------------------------------------------- session set-up and markers
def _only_schedules(config):
    """True in pytest-xdist's controller (``-n N``), which hands the tests to worker processes and
    runs none itself (xdist's own rule for starting its distributed session)."""
    option = config.option
    return (not hasattr(config, "workerinput") and not option.collectonly
            and getattr(option, "dist", "no") != "no" and bool(getattr(option, "tx", None)))


def pytest_configure(config):
    """The compat shims before any test module imports TensorFlow, in every process that runs tests.
    Not in xdist's controller: TensorFlow's start-up log (printed on import, whatever
    TF_CPP_MIN_LOG_LEVEL says) would be held by pytest's capture until exit and printed after the
    summary line. Where tests run, the log is captured like the rest of collection's output."""
    if _only_schedules(config):
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.resume_global_capture()
    try:
        from maskplus import compat  # noqa: F401
    finally:
        if capture is not None:
            capture.suspend_global_capture()
    _record_command_lines()


_CLI_DIR = os.path.join(ROOT, "tests", "cli") + os.sep


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(_CLI_DIR):
            item.add_marker(pytest.mark.cli)


def _a_command_line(args):
    """The command of ``subprocess.Popen(args)`` if it is one of ours (a Python program or snippet, a
    shell script, horovodrun), else None: tools such as `ps`, `git` or `nvidia-smi` do not count."""
    argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
    words = str(argv[0]).split() if argv else []
    program = os.path.basename(words[0]) if words else ""
    if program.startswith("python") or program in ("bash", "sh", "horovodrun"):
        return " ".join(map(str, argv))[:200]
    return None


#: The command lines started in the current phase of the current test (setup, fixtures of any scope
#: included, or call); subprocess.Popen records them while tests run.
_COMMAND_LINES_STARTED = []


def _record_command_lines():
    real_init = subprocess.Popen.__init__

    def init(self, args, *rest, **kwargs):
        command = _a_command_line(args)
        if command:
            _COMMAND_LINES_STARTED.append(command)
        real_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = init


def _command_lines_need_the_cli_marker(item):
    """A test that starts a command line (in its own fixtures too) without the ``cli`` marker fails,
    so that `-m "not cli"` (`make test-fast`) really leaves every one of them out."""
    del _COMMAND_LINES_STARTED[:]
    result = yield
    if _COMMAND_LINES_STARTED and not item.get_closest_marker("cli"):
        raise AssertionError(f"this test starts a command line, so it must be marked cli: {_COMMAND_LINES_STARTED}")
    return result


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_command_lines_need_the_cli_marker)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_command_lines_need_the_cli_marker)


@pytest.fixture
def cfg_override():
    """``cfg_override({"DATA.BASEDIR": "/x", ...})`` sets config keys (Python values, not strings);
    after the test the whole config is restored (values, added keys, frozen state), whatever else
    the test changed in it."""
    saved = _cfg.snapshot()

    def apply(values=None, **kwargs):
        _cfg.freeze(False)
        for key, value in dict(values or {}, **kwargs).items():
            _cfg.set(key, value)
        return _cfg

    yield apply
    _cfg.restore(saved)


# ---------------------------------------------------------------------- the tiny dataset
#: (width, height) of each image id
TINY_IMAGES = {1: (80, 60), 2: (50, 70), 3: (40, 40)}
#: category list deliberately out of id order: names by id are ["cat", "dog"]
TINY_CATEGORIES = [{"id": 7, "name": "dog"}, {"id": 2, "name": "cat"}]
RECT = [10, 10, 30, 10, 30, 20, 10, 20]          # image 1, cat: box [10, 10, 30, 20], 200 px
TRIANGLE = [40, 40, 70, 40, 55, 55]              # image 1, dog
RECT2 = [5, 30, 45, 30, 45, 60, 5, 60]           # image 2, dog


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE of a binary mask (column-major run lengths starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def _ann(ann_id, image_id, cat, bbox, seg, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox,
            "segmentation": seg, "iscrowd": iscrowd, "area": float(bbox[2] * bbox[3])}


def write_tiny_coco(root, split="train2017"):
    """Writes ``root/annotations/instances_<split>.json`` and ``root/<split>/*.jpg``.

    Image 1 (80x60): a cat rectangle, a dog triangle, a crowd RLE region, and a zero-width box.
    Image 2 (50x70): a dog rectangle and a non-crowd "polygon" of two points (unusable).
    Image 3 (40x40): only a crowd annotation (an empty image for FILTER_EMPTY_ANNOTATIONS).
    """
    img_dir = os.path.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    rng = np.random.RandomState(0)
    images = []
    for img_id, (w, h) in TINY_IMAGES.items():
        img = (rng.rand(h, w, 3) * 60 + 40).astype(np.uint8)
        img[:, : w // 2, 0] = 200  # asymmetric content, so a flip is visible
        name = f"{img_id:012d}.jpg"
        cv2.imwrite(os.path.join(img_dir, name), img)
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
    crowd_mask = np.zeros((60, 80), np.uint8)
    crowd_mask[40:58, 2:20] = 1
    crowd3 = np.zeros((40, 40), np.uint8)
    crowd3[5:30, 5:30] = 1
    anns = [
        _ann(1, 1, 2, [10, 10, 20, 10], [RECT]),
        _ann(2, 1, 7, [40, 40, 30, 15], [TRIANGLE]),
        _ann(3, 1, 2, [2, 40, 18, 18], _uncompressed_rle(crowd_mask), iscrowd=1),
        _ann(4, 1, 7, [50, 5, 0, 10], [[50, 5, 50, 15, 50, 10]]),          # zero width
        _ann(5, 2, 7, [5, 30, 40, 30], [RECT2]),
        _ann(6, 2, 2, [1, 1, 10, 10], [[1, 1, 11, 11]]),                   # 2 points only
        _ann(7, 3, 2, [5, 5, 25, 25], _uncompressed_rle(crowd3), iscrowd=1),
    ]
    data = {"images": images, "annotations": anns, "categories": TINY_CATEGORIES}
    json_path = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path, img_dir


@pytest.fixture(autouse=True)
def _no_registered_datasets():
    """Every test starts with an empty dataset registry: names are registered explicitly (as the
    command lines do), never left over from another test."""
    from maskplus.data.coco import clear_registry
    clear_registry()
    yield
    clear_registry()


@pytest.fixture
def tiny_coco(tmp_path, cfg_override):
    """A hand-made COCO dataset registered as ``coco_train2017`` (DATA.BASEDIR = tmp_path);
    returns tmp_path. Small images: short edge kept at 60 px, no worker processes. A split
    written later is found after registering the folder again (``register_coco(tmp_path)``)."""
    from maskplus.data.coco import register_coco
    write_tiny_coco(str(tmp_path))
    cfg_override({"DATA.BASEDIR": str(tmp_path), "DATA.TRAIN": ("coco_train2017",),
                  "DATA.CUSTOM": {}, "DATA.NUM_WORKERS": 0, "DATA.SEED": 1,
                  "DATA.FILTER_EMPTY_ANNOTATIONS": True, "DATA.ABSOLUTE_COORD": True,
                  "MODE_MASK": True, "PREPROC.TRAIN_SHORT_EDGE_SIZE": [60, 60],
                  "PREPROC.MAX_SIZE": 1000.0})
    register_coco(str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The tiny COCO set in a folder of its own, for tests that run train.py/predict.py (which
    register it from DATA.BASEDIR; a test using it in-process registers it: ``register_coco``)."""
    root = tmp_path_factory.mktemp("coco")
    write_tiny_coco(str(root))
    return str(root)


# ---------------------------------------------------------------------- the tests' own sessions
@pytest.fixture(autouse=True, scope="session")
def _tests_own_sessions_skip_grappler():
    """A session a test opens itself (``tfv1.Session()``, no config) skips Grappler's graph rewrites:
    they cost ~7 s per training graph, most of a tiny model test, and change no result beyond
    round-off. Sessions the code under test opens pass their config and keep every rewrite (the
    mixed-precision rewrite is one: tests/engine/test_session.py), as do train.py and predict.py."""
    from maskplus.compat import tfv1
    original = tfv1.Session.__init__

    def without_grappler(self, target="", graph=None, config=None):
        if config is None:
            config = tfv1.ConfigProto()
            config.graph_options.rewrite_options.disable_meta_optimizer = True
        original(self, target, graph, config)

    tfv1.Session.__init__ = without_grappler
    yield
    tfv1.Session.__init__ = original
