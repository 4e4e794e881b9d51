"""Child processes that end with the process that started them."""

from __future__ import annotations

import os
import sys


def die_with_parent() -> None:
    """In a child before exec (``Popen(preexec_fn=...)``): SIGTERM when the parent ends, however it ends
    (Linux's PR_SET_PDEATHSIG; does nothing elsewhere).

    Linux sends it when the *thread* that started the child ends, so start such children from a thread that
    lives as long as their use (e.g. the main thread)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent ended before the call: end now
        os._exit(1)
