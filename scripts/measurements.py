"""What the benchmark scripts write beside a measurement: the commit that was measured and the
BENCHMARKS.md section it appends (the docs cite measurements by their heading)."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit():
    """The measured code: ``git describe --always --dirty``, so that uncommitted changes say so;
    ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def report(text, write=True):
    """Print a measurement's text and, with ``write``, append it to BENCHMARKS.md as a section of its own."""
    print("\n" + text)
    if write:
        path = os.path.join(ROOT, "BENCHMARKS.md")
        new = not os.path.exists(path)
        with open(path, "a") as f:
            f.write("# Benchmarks\n\nAppended by the benchmark scripts; newest last.\n" if new else "")
            f.write("\n" + text.rstrip("\n") + "\n")
        print(f"appended to {path}")
