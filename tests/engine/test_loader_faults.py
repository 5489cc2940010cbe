"""train.py with the default loader processes and an image that fails in them (1000x1 pixels:
0 rows once resized): the image is skipped once, named, and the run trains its whole schedule;
past DATA.LOADER_MAX_SKIPPED the run stops with a checkpoint, the list and a non-zero exit. Never
a hang, never exit 0 with fewer steps, and no loader process outlives the run."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, write_tiny_coco
from tests.engine.test_training import TINY_ARGS, stats

pytestmark = [pytest.mark.cli, pytest.mark.slow]

#: TINY_ARGS with the loader processes users get (DATA.NUM_WORKERS's default, 4)
WITH_LOADER_PROCESSES = [a for a in TINY_ARGS if not a.startswith("DATA.NUM_WORKERS")]


@pytest.fixture(scope="module")
def dataset_with_a_strip(tmp_path_factory):
    root = tmp_path_factory.mktemp("strip")
    json_path, image_dir = write_tiny_coco(str(root))
    cv2.imwrite(os.path.join(image_dir, "strip.png"), np.full((1, 1000, 3), 90, np.uint8))
    with open(json_path) as f:
        data = json.load(f)
    data["images"].append({"id": 4, "file_name": "strip.png", "width": 1000, "height": 1})
    data["annotations"].append({"id": 8, "image_id": 4, "category_id": 2, "bbox": [10, 0, 100, 1], "area": 100.0,
                                "segmentation": [[10, 0, 110, 0, 110, 1, 10, 1]], "iscrowd": 0})
    with open(json_path, "w") as f:
        json.dump(data, f)
    return str(root)


def _train(dataset, logdir, *config):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--logdir", str(logdir), "--config",
           f"DATA.BASEDIR={dataset}", *WITH_LOADER_PROCESSES, "TRAIN.NUM_GPUS=1", "TRAIN.STEPS_PER_EPOCH=8", *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def processes_of(logdir):
    """Processes whose command line names ``logdir`` (train.py and its forked loader processes)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(logdir) in line]


def test_an_image_failing_in_a_loader_process_is_skipped_once_and_the_run_trains_its_schedule(
        dataset_with_a_strip, tmp_path):
    proc = _train(dataset_with_a_strip, tmp_path, "TRAIN.LR_SCHEDULE=[2,3,4]")  # 4 epochs of 8 steps
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    strip = os.path.join(dataset_with_a_strip, "train2017", "strip.png")
    skips = [line for line in out.splitlines() if f"Data loader: skipped {strip} (image id 4): cv2.error" in line]
    assert len(skips) == 1, skips  # left out of the later epochs: no warning per epoch
    assert "(1 skipped, 1 allowed by DATA.LOADER_MAX_SKIPPED=0.01 of 3 images)" in skips[0]
    assert [e["global_step"] for e in stats(tmp_path)] == [8, 16, 24, 32]
    assert all(e["loader_skipped_images"] == 1 for e in stats(tmp_path, "loader_skipped_images"))
    assert (tmp_path / "model-32.index").is_file() and "Traceback" not in out
    assert processes_of(tmp_path) == []


def test_more_failing_images_than_allowed_stop_the_run_with_the_list_a_checkpoint_and_an_error(
        dataset_with_a_strip, tmp_path):
    proc = _train(dataset_with_a_strip, tmp_path, "TRAIN.LR_SCHEDULE=[20,30,40]", "DATA.LOADER_MAX_SKIPPED=0")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    strip = os.path.join(dataset_with_a_strip, "train2017", "strip.png")
    assert ("Error: The data loader could not use 1 of the 3 training images, more than "
            "DATA.LOADER_MAX_SKIPPED=0 allows (0):") in proc.stderr
    assert f"  {strip} (image id 4): cv2.error" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "input_deque" not in proc.stdout
    saved = [f for f in os.listdir(tmp_path) if f.endswith(".index")]
    assert len(saved) == 1 and f"the last checkpoint is {tmp_path / saved[0][:-6]}" in proc.stderr
    assert stats(tmp_path, "global_step") == [] or stats(tmp_path, "global_step")[-1]["global_step"] < 40 * 8
    assert processes_of(tmp_path) == []
