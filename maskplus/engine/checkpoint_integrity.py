"""Can a weights file be read at all, and is it complete? The file-level checks behind every
weights read (``--load``, ``BACKBONE.WEIGHTS``, a resume, an export) and every checkpoint save.

Each check returns the reason a file is unusable, in words a user can act on ("data file
truncated: 42.3 of 105.8 MB"), or None; the callers name the file and raise. The cheap checks
read an index or a zip directory and compare file sizes, never the tensors: a TensorFlow
checkpoint's data file holds its tensors back to back, so the index says how many bytes it must
have; a flipped bit inside is found by the checksums when the tensors are read.
"""
import glob
import os
import re
import zipfile

import numpy as np
from maskplus.compat import tf, tfv1  # first: its shims precede Tensorpack's TensorFlow

from maskplus.console import one_line

#: the name of a TensorFlow checkpoint file: ``<prefix>.index`` or ``<prefix>.data-00000-of-00001``
CHECKPOINT_FILE = re.compile(r"^(?P<prefix>.+?)\.(index|data-(?P<shard>\d{5})-of-(?P<shards>\d{5}))$")
#: the checkpoints train.py writes: ``model-<step>``
STEP_PREFIX = re.compile(r"^model-(\d+)$")
#: the state file naming a directory's latest checkpoint
STATE_FILE = "checkpoint"
#: array kinds a weights file may hold: floats, signed and unsigned integers, booleans
_NUMBER_KINDS = "fiub"


def size_text(have, want):
    """``'42.3 of 105.8 MB'`` (``'120 of 2048 bytes'`` for small files)."""
    if want >= 100_000:
        return f"{have / 1e6:.1f} of {want / 1e6:.1f} MB"
    return f"{have} of {want} bytes"


def data_files(prefix):
    """The data shards present for the checkpoint ``prefix``."""
    return sorted(glob.glob(glob.escape(prefix) + ".data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"))


def checkpoint_files(prefix):
    """Every file of the checkpoint ``prefix`` that exists (its index and data shards)."""
    index = prefix + ".index"
    return ([index] if os.path.isfile(index) else []) + data_files(prefix)


def tf_checkpoint_damage(prefix):
    """Why the TensorFlow checkpoint ``prefix`` cannot be read completely, or None: its index
    opens, and every data shard is there with at least the bytes its tensors take."""
    shards = data_files(prefix)
    name = os.path.basename(prefix)
    if not os.path.isfile(prefix + ".index"):
        return "index file missing"
    try:
        reader = tfv1.train.NewCheckpointReader(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except Exception as e:  # noqa: BLE001  (TensorFlow says "not an sstable", "corrupted", ...)
        return f"index file unreadable: {one_line(e)}"
    counts = {int(CHECKPOINT_FILE.match(os.path.basename(s)).group("shards")) for s in shards}
    expected = [f"{name}.data-{k:05d}-of-{n:05d}" for n in (counts or {1}) for k in range(n)]
    missing = [f for f in expected if not os.path.isfile(os.path.join(os.path.dirname(prefix), f))]
    if missing:
        return f"data file missing ({', '.join(missing[:3])})"
    # tensors are written back to back, unpadded; strings have no fixed size and count for nothing
    want = sum(int(np.prod(shape, dtype=np.int64)) * dtypes[n].size for n, shape in shapes.items()
               if dtypes[n] != tf.string)
    have = sum(os.path.getsize(s) for s in shards)
    if have < want:
        return f"data file{'s' * (len(shards) > 1)} truncated: {size_text(have, want)}"
    return None


def read_tf_arrays(prefix):
    """{name: array} of a TensorFlow checkpoint; raises ValueError saying what is wrong
    (a tensor failing its checksum, a short data file)."""
    damage = tf_checkpoint_damage(prefix)
    if damage:
        raise ValueError(damage)
    reader = tfv1.train.NewCheckpointReader(prefix)
    values = {}
    for name in reader.get_variable_to_shape_map():
        try:
            values[name] = reader.get_tensor(name)
        except Exception as e:  # noqa: BLE001  (DataLossError on a checksum, IndexError on a short read)
            raise ValueError(f"corrupt: tensor '{name}' cannot be read ({one_line(e)})") from None
    return values


# ---------------------------------------------------------------------------------- .npz files
def _what_it_is(head):
    """What a file that is not a zip archive looks like, from its first bytes."""
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy), not a .npz archive of named arrays"
    if head[:1] == b"\x80":
        return "a Python pickle, not a .npz archive (weights are not unpickled: that could run code)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras .h5?), not a .npz archive"
    if not head:
        return "empty (0 bytes)"
    return f"not a .npz (zip) archive: it starts with {head[:8]!r}"


def npz_damage(path):
    """Why ``path`` is not a usable .npz weights file, or None; reads the zip's directory (at the
    end of the file: a truncated file has none) and each array's header, not the arrays."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        size = os.path.getsize(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK\x03\x04"):
            return f"truncated: a zip archive without its end (directory), {size} bytes"
        return _what_it_is(head)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                problem = _member_problem(archive, info)
                if problem:
                    return problem
                if info.header_offset + info.compress_size > size:
                    return f"truncated: '{info.filename}' ends beyond the file's {size} bytes"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"corrupt: {one_line(e)}"
    return None


def _member_problem(archive, info):
    key = info.filename[:-len(".npy")] if info.filename.endswith(".npy") else None
    if key is None:
        return f"it holds '{info.filename}', which is not a NumPy array (.npy)"
    with archive.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError:
            return f"'{key}' is not a NumPy array (no .npy header)"
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:  # a later .npy version: the full read decides
            return None
        _, _, dtype = reader(f)
    return dtype_problem(key, dtype)


def dtype_problem(key, dtype):
    """Why an array of ``dtype`` is no weight value, or None."""
    if dtype.hasobject:
        return (f"it holds a pickled Python object in '{key}' (not loaded: unpickling could run code; weights are "
                f"arrays of numbers)")
    if dtype.kind not in _NUMBER_KINDS:
        return f"'{key}' is an array of dtype {dtype.str}, not of numbers"
    return None


def read_npz_arrays(path):
    """{key: array} of a .npz weights file; raises ValueError saying what is wrong."""
    damage = npz_damage(path)
    if damage:
        raise ValueError(damage)
    values = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                value = data[key]
                problem = dtype_problem(key, value.dtype) if isinstance(value, np.ndarray) else \
                    f"'{key}' is not a NumPy array"
                if problem:
                    raise ValueError(problem)
                values[key] = value
    except zipfile.BadZipFile as e:  # a CRC mismatch: the bytes changed after writing
        raise ValueError(f"corrupt: {one_line(e)}") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"corrupt: {one_line(e)}") from None
    return values


# ---------------------------------------------------------------------------------- values vs graph
def _castable(to_dtype, value_dtype):
    """As Tensorpack's loads: floats to any float, integers to an integer type holding them all."""
    source = tf.as_dtype(value_dtype)
    if source.is_floating and to_dtype.is_floating:
        return True
    if source.is_integer and to_dtype.is_integer:
        return to_dtype.min <= source.min and to_dtype.max >= source.max
    return source == to_dtype


def dtype_mismatches(pairs):
    """``[(name, file dtype, graph dtype)]`` of the (variable, value) pairs whose value cannot
    become the variable's dtype without changing what it means (an integer array for a float
    variable, a float for a step counter)."""
    out = []
    for var, value in pairs:
        want = var.dtype.base_dtype
        got = np.asarray(value).dtype
        if not _castable(want, got):
            out.append((var.op.name, got.name, want.name))
    return out


# ---------------------------------------------------------------------------------- directories
def checkpoints_in(directory):
    """``{step: prefix}`` of the ``model-<step>`` checkpoints with any file in ``directory``."""
    found = {}
    for f in (os.listdir(directory) if os.path.isdir(directory) else []):
        m = CHECKPOINT_FILE.match(f)
        step = STEP_PREFIX.match(m.group("prefix")) if m else None
        if step:
            found[int(step.group(1))] = os.path.join(directory, m.group("prefix"))
    return found


def newest_intact(directory, besides=None):
    """The newest ``model-<step>`` checkpoint of ``directory`` that passes the cheap check (other
    than ``besides``), or None."""
    for _, prefix in sorted(checkpoints_in(directory).items(), reverse=True):
        if os.path.abspath(prefix) != os.path.abspath(besides or "") and not tf_checkpoint_damage(prefix):
            return prefix
    return None


def state_file_latest(directory):
    """(the checkpoint the directory's state file names, None) or (None, why it cannot be read);
    (None, None) without a state file."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        return None, None
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as e:  # noqa: BLE001  (a text-format parse error)
        return None, f"its checkpoint state file {path} is unreadable ({one_line(e)})"
    if state is None or not state.model_checkpoint_path:
        return None, f"its checkpoint state file {path} names no checkpoint"
    named = state.model_checkpoint_path
    return (named if os.path.isabs(named) else os.path.join(directory, named)), None
