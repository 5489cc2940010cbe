"""What a user reads of a run: the few lines a quiet console shows, and exceptions in one line.

scripts/demo.py runs train.py and predict.py with all their output (TensorFlow's, Tensorpack's, ours)
going to the run's log file, and hands them its console as the file descriptor named by
``MASKPLUS_CONSOLE_FD``. Without that variable (train.py run directly, where everything is on
the console anyway) :func:`stream` is None and :func:`say` writes only to the log it is given.
Standard library only: scripts/demo.py imports it without loading TensorFlow.
"""
import os

CONSOLE_FD = "MASKPLUS_CONSOLE_FD"
#: the longest message :func:`one_line` keeps
ONE_LINE_CHARS = 300
_stream = None


def stream():
    """The console as a text stream in a quiet run, else None."""
    global _stream
    fd = os.environ.get(CONSOLE_FD)
    if _stream is None and fd:
        _stream = os.fdopen(int(fd), "w", buffering=1, closefd=False)
    return _stream


def say(line, log=None):
    """Write ``line`` on the console of a quiet run, indented under the demo's own lines and without
    breaking a progress bar on it; ``log`` (e.g. Tensorpack's ``logger.info``) also logs it."""
    if log is not None:
        log(line)
    out = stream()
    if out is not None:
        from tqdm import tqdm
        tqdm.write("  " + line, file=out)


def one_line(error, kind=False):
    """An exception's message as one line: its first non-blank line, white space folded, at most
    :data:`ONE_LINE_CHARS` characters (TensorFlow's messages go on with node and stack lines).
    With ``kind``, after the exception's type: ``cv2.error: ...``, ``MemoryError: ...``."""
    lines = (" ".join(line.split()) for line in str(error).splitlines())
    text = next((line for line in lines if line), "")[:ONE_LINE_CHARS]
    if not kind:
        return text or type(error).__name__
    cls = type(error)
    name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
    return f"{name}: {text or '(no message)'}"
