"""maskplus/console.py: the lines a quiet run's console shows, and exceptions told in one line."""
import io

import cv2
import pytest

from maskplus import console


def test_a_line_goes_to_the_log_given_and_indented_to_a_quiet_console(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(console, "stream", lambda: screen)
    logged = []
    console.say("Weights: none", logged.append)
    console.say("step 7: segm AP 1.2")
    assert logged == ["Weights: none"]
    assert screen.getvalue() == "  Weights: none\n  step 7: segm AP 1.2\n"


def test_without_a_quiet_console_a_line_only_goes_to_the_log(monkeypatch):
    monkeypatch.delenv(console.CONSOLE_FD, raising=False)
    monkeypatch.setattr(console, "_stream", None)
    logged = []
    console.say("Weights: none", logged.append)
    assert logged == ["Weights: none"] and console.stream() is None


def test_an_error_in_one_line_is_its_first_line_folded():
    # TensorFlow's errors go on with the node and the stack where the op was made
    error = ValueError("\n  Checksum does not match:\tstored 2581 vs.  calculated 3960\n\n\t [[{{node save/RestoreV2}}]]\n")
    assert console.one_line(error) == "Checksum does not match: stored 2581 vs. calculated 3960"
    assert console.one_line(error, kind=True) == "ValueError: Checksum does not match: stored 2581 vs. calculated 3960"


@pytest.mark.parametrize("error, kind, expected", [
    (cv2.error("OpenCV(5.1.0) resize.cpp:3590: error: (-215:Assertion failed)"), True,
     "cv2.error: OpenCV(5.1.0) resize.cpp:3590: error: (-215:Assertion failed)"),
    (MemoryError(), True, "MemoryError: (no message)"),
    (KeyError(), False, "KeyError"),
    (OSError("x" * 301), False, "x" * 300),
])
def test_an_error_in_one_line_names_its_kind_when_asked(error, kind, expected):
    assert console.one_line(error, kind=kind) == expected
