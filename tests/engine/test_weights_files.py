"""Weights files that cannot be used, each one line naming the file and what is wrong: a tiny
model's .npz truncated, holding a pickle, or arrays of another dtype; a TF checkpoint whose bytes
changed. Checked before a log directory is touched (BACKBONE.WEIGHTS, --load)."""
import os
import pickle

import numpy as np
import pytest

from maskplus.engine.checkpoint import CheckpointError, CheckpointInit, read_checkpoint
from tests.helpers import config_snapshot, configure, restore_into_tiny_graph, write_checkpoint, write_random_model

SOME_WEIGHT = "fpn/posthoc_3x3_p2/W:0"


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("weights") / "tiny.npz")
    with config_snapshot():
        configure({}, training=False)
        write_random_model(path, seed=3)
    with np.load(path) as f:
        return path, {k: f[k] for k in f.files}


def _npz(tmp_path, arrays, name="weights.npz", allow_pickle=False):
    path = str(tmp_path / name)
    np.savez(path, allow_pickle=allow_pickle, **arrays) if allow_pickle else np.savez(path, **arrays)
    return path


def test_a_truncated_npz_is_named_with_its_size_and_stops_a_run_before_its_log_directory(
        tiny_npz, tmp_path, cfg_override):
    from maskplus.engine.trainer import check_initial_weights
    source, _ = tiny_npz
    path = tmp_path / "ImageNet-R50-AlignPadding.npz"
    data = open(source, "rb").read()
    path.write_bytes(data[:len(data) * 2 // 3])
    message = (f"'{path}' is not a readable .npz weights file: truncated: a zip archive without its end (directory), "
               f"{len(data) * 2 // 3} bytes.")
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(path))
    assert str(e.value) == message
    cfg_override({"BACKBONE.WEIGHTS": str(path)})
    with pytest.raises(CheckpointError) as e:
        check_initial_weights(None, str(tmp_path / "run"), "resume")
    assert str(e.value) == message and not (tmp_path / "run").exists()


class _Payload:
    """Unpickling it creates a file: a pickle runs code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_inside_an_npz_is_refused_without_being_unpickled(tiny_npz, tmp_path, cfg_override):
    from maskplus.engine.trainer import check_initial_weights
    _, arrays = tiny_npz
    marker = tmp_path / "unpickled"
    payload = np.empty(1, dtype=object)
    payload[0] = _Payload(str(marker))
    path = _npz(tmp_path, dict(arrays, **{SOME_WEIGHT: payload}), allow_pickle=True)
    message = (f"'{path}' is not a readable .npz weights file: it holds a pickled Python object in '{SOME_WEIGHT}' "
               f"(not loaded: unpickling could run code; weights are arrays of numbers).")
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(e.value) == message
    cfg_override({"BACKBONE.WEIGHTS": path})
    with pytest.raises(CheckpointError) as e:
        check_initial_weights(None, str(tmp_path / "run"), "resume")
    assert str(e.value) == message
    assert not marker.exists()


def test_a_pickle_named_npz_is_called_a_pickle(tiny_npz, tmp_path):
    _, arrays = tiny_npz
    path = tmp_path / "weights.npz"
    with open(path, "wb") as f:
        pickle.dump(arrays, f)
    with pytest.raises(CheckpointError, match=r"weights.npz' is not a readable .npz weights file: a Python pickle, "
                                              r"not a .npz archive"):
        read_checkpoint(str(path))


def test_an_array_of_text_is_refused_when_read(tiny_npz, tmp_path):
    _, arrays = tiny_npz
    path = _npz(tmp_path, dict(arrays, **{SOME_WEIGHT: np.array(["0.1", "0.2"])}))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert str(e.value) == f"'{path}' is not a readable .npz weights file: '{SOME_WEIGHT}' is an array of dtype <U3, " \
                           f"not of numbers."


def _restore(path):
    return restore_into_tiny_graph(lambda: CheckpointInit(path))[1]


def test_integer_arrays_for_float_weights_are_refused_and_float64_ones_cast(tiny_npz, tmp_path):
    _, arrays = tiny_npz
    as_int = dict(arrays, **{SOME_WEIGHT: np.round(arrays[SOME_WEIGHT] * 100).astype(np.int32),
                             "rpn/conv0/b:0": arrays["rpn/conv0/b:0"].astype(np.int64)})
    wrong = _npz(tmp_path, as_int, "int.npz")
    double = arrays[SOME_WEIGHT].astype(np.float64) + 1e-9
    as_double = _npz(tmp_path, dict(arrays, **{SOME_WEIGHT: double}), "double.npz")
    with config_snapshot():
        configure({}, training=False)
        with pytest.raises(CheckpointError) as e:
            _restore(wrong)
        values = _restore(as_double)
    assert str(e.value) == (f"'{wrong}' holds 2 array(s) of another dtype than the graph's variables "
                            f"(fpn/posthoc_3x3_p2/W: file int32 vs graph float32; rpn/conv0/b: file int64 vs graph "
                            f"float32): it is not a weights file of this model.")
    np.testing.assert_array_equal(values["fpn/posthoc_3x3_p2/W"], double.astype(np.float32))


def test_a_checkpoint_whose_bytes_changed_fails_its_checksum_in_one_line(tmp_path):
    arrays = write_checkpoint(tmp_path / "model-16", shape=(64, 64))
    data = tmp_path / "model-16.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: the cheap check passes, the tensor's checksum does not
    data.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(tmp_path / "model-16"))
    text = str(e.value)
    assert text.startswith(f"'{tmp_path}/model-16' is not a readable TensorFlow checkpoint: corrupt: tensor 'w' "
                           f"cannot be read (") and "\n" not in text
    assert "checksum" in text.lower()
    assert arrays["w"].nbytes == 64 * 64 * 4


@pytest.mark.parametrize("files, reason", [
    ({"model-16.index"}, "data file missing (model-16.data-00000-of-00001)"),
    ({"model-16.data-00000-of-00001"}, "index file missing"),
])
def test_a_checkpoint_missing_one_of_its_files_is_named(tmp_path, files, reason):
    write_checkpoint(tmp_path / "model-16")
    for f in {"model-16.index", "model-16.data-00000-of-00001"} - files:
        os.remove(tmp_path / f)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(tmp_path / "model-16"))
    assert str(e.value) == f"Checkpoint '{tmp_path}/model-16' is damaged: {reason}."
