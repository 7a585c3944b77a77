"""Child processes that end with their parent.

A SIGKILLed parent runs no cleanup: a `ProcessPoolExecutor`'s workers (the toy world's renderers) go
on with their queue and then wait forever, and torchrun's ranks, each in a session of its own, go on
training and saving beside the rerun. Linux's parent-death signal ends them with the parent.
"""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent (`parent_pid`, default the current
    one) ends; exit now if it has already ended. Elsewhere than Linux this does nothing."""
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent ended before the call above
        os._exit(1)
