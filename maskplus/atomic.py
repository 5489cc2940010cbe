"""Files written whole or not at all: what is written goes to ``<path>.tmp`` and takes the name
only once complete, so that a reader, or a run killed mid-write, never finds half a file at
``path`` (an earlier version stays there until the new one replaces it). Standard library only.
"""
import contextlib
import json
import os


@contextlib.contextmanager
def writing(path, binary=False):
    """``with writing(path) as f:`` an open file that becomes ``path`` when the block ends without
    an error; with an error, ``path`` is left as it was and the partial file removed. The folder
    is created if needed. The temporary name ends in ``.tmp``, so that no reader that looks for
    ``*.json``, ``*.npz`` or ``*.png`` takes one for a result."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb" if binary else "w") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj, **options):
    """``json.dump(obj, **options)`` into ``path``, atomically."""
    with writing(path) as f:
        json.dump(obj, f, **options)
