"""maskplus/atomic.py: a file is replaced whole or not at all, whatever writes it (JSON, an .npz,
a figure), and nothing of a failed write stays behind."""
import json
import os
import stat

import numpy as np
import pytest

from maskplus import atomic


def test_a_write_that_fails_midway_leaves_the_earlier_file_and_no_partial_one(tmp_path):
    path = str(tmp_path / "run.json")
    atomic.write_json(path, {"step": 100})
    with pytest.raises(TypeError):  # a value JSON cannot hold, after part of the file is written
        atomic.write_json(path, {"step": 200, "then": object()})
    assert json.load(open(path)) == {"step": 100}
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_the_new_file_takes_the_name_only_once_complete(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("[1, 2]")
    with atomic.writing(str(path)) as f:
        f.write("[3, ")
        f.flush()
        assert path.read_text() == "[1, 2]"  # a reader meanwhile sees the earlier file
        f.write("4]")
    assert path.read_text() == "[3, 4]"
    assert sorted(os.listdir(tmp_path)) == ["results.json"]


def test_binary_files_keep_the_name_given_and_its_folder_is_made(tmp_path):
    path = tmp_path / "new" / "weights"  # no .npz: numpy would append one to a file name
    with atomic.writing(str(path), binary=True) as f:
        np.savez_compressed(f, w=np.arange(3.5, 7.5))
    assert os.listdir(tmp_path / "new") == ["weights"]
    np.testing.assert_array_equal(np.load(path)["w"], [3.5, 4.5, 5.5, 6.5])


def test_the_file_is_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_json(str(tmp_path / "metrics.json"), {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "metrics.json").st_mode) == 0o644  # not a private temporary file's 0o600
