"""Child processes that end with their parent, however the parent ends (SIGKILL and the OOM
killer included): Linux's parent-death signal, ``prctl(PR_SET_PDEATHSIG)``, through ctypes.

Tensorpack asks for it in its data-loading processes through python-prctl, which is not a
dependency; without it they outlive a killed trainer. No imports beyond the standard library:
scripts/demo.py uses it without loading TensorFlow.
"""
import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid, sig=signal.SIGKILL):
    """Have the kernel send ``sig`` to this process when its parent (``parent_pid``) ends.
    Returns False where that cannot be asked (not Linux); exits at once if the parent has
    already gone (it ended between the fork and this call)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:
        os._exit(1)
    return True
