"""Die with the parent: Linux's PR_SET_PDEATHSIG, armed race-free. Stdlib only.

Why this lives in `contract/`: two sides need the very same call and neither may import the
other -- `targets/procs.py` arms it in every cluster child (nodes, balancer, Redis, the Locust
master) and `locustfiles/sio/lifeline.py` arms it in every Locust worker that `--processes`
forks. Both stand on the ground layer `contract` (which imports neither of them), so one
helper here serves both without a second copy.

Two properties of the kernel feature decide how it is used:
- the setting is cleared by fork(), so it must be armed *in* the child, after the fork;
- the signal fires when the parent *thread* that forked the child exits, not the process.
And one race: a parent that dies between the fork and the prctl() leaves the child already
orphaned, and arming the signal then does nothing. So after arming, the child compares its
parent with the one that forked it and, if that one is gone, gives itself the same signal.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def _load_prctl():  # returns a ctypes function pointer, or None
    # Resolved once, in the parent at import: dlopen() after a fork of a threaded process may
    # deadlock on the loader's lock, so the forked child must only call, never load.
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


_PRCTL = _load_prctl()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent thread exits.

    Returns False where the kernel has no such feature (not Linux), so callers can tell a
    guarantee from a best effort.
    """
    if _PRCTL is None:
        return False
    try:
        return int(_PRCTL(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except Exception:  # noqa: BLE001 -- runs between fork and exec: it must never raise there
        return False


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Arm the parent-death signal, then close the race with a parent that is already gone.

    `parent_pid` is the pid of the process that forked this one, taken *before* the fork (after
    it, os.getppid() would already name the reaper if the parent had died). If the parent has
    died meanwhile, this process sends itself `sig` -- the fate the kernel would have dealt.
    Returns whether the signal is armed (False only where the kernel lacks the feature).
    """
    armed = set_parent_death_signal(sig)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
        os._exit(128 + int(sig))  # a caught or ignored `sig` still must not outlive the parent
    return armed
