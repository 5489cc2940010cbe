"""The few lines a user sees when scripts/demo.py keeps the console quiet.

demo.py runs train.py and predict.py with all their output (TensorFlow's, Tensorpack's, ours)
going to the run's log file, and hands them its console as the file descriptor named by
``MASKPLUS_CONSOLE_FD``. Without that variable (train.py run directly, where everything is on
the console anyway) :func:`stream` is None and :func:`say` writes nothing.
"""
import os

CONSOLE_FD = "MASKPLUS_CONSOLE_FD"
_stream = None


def stream():
    """The console as a text stream in a quiet run, else None."""
    global _stream
    fd = os.environ.get(CONSOLE_FD)
    if _stream is None and fd:
        _stream = os.fdopen(int(fd), "w", buffering=1, closefd=False)
    return _stream


def say(line):
    """Write ``line`` on the console of a quiet run, without breaking a progress bar on it."""
    out = stream()
    if out is not None:
        from tqdm import tqdm
        tqdm.write(line, file=out)
