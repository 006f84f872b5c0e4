"""Locust workers die with their master: PR_SET_PDEATHSIG armed in every forked worker.

Why: `locust --processes N` forks its workers from the master (locust/main.py, `gevent.fork()`
in the main thread, after the locustfiles are imported). sioscale starts the master with a
parent-death signal, so a SIGKILLed `sioscale run` takes the master down at once -- but that
setting is cleared by fork, so the workers were left running under PID 1 until their heartbeat
to the dead master timed out (~60 s), still loading the servers.

Importing this module (locustfiles/sio/__init__.py does) registers an at-fork hook in the
process that will fork: the parent records its pid just before each fork, and the child arms
the parent-death signal with that pid (contract.pdeathsig.die_with_parent, the same helper the
cluster's children use), ending itself at once if the master already died during the fork.
The master forks from its main thread, the thread the signal follows, so it fires exactly when
the master exits -- after Locust's own shutdown has waited for its workers.
"""

from __future__ import annotations

import os
import threading

from contract.pdeathsig import die_with_parent

_forking_pid: int | None = None
_registered = False


def _before_fork() -> None:
    global _forking_pid  # read by the child, which gets a copy of this module
    # The signal follows the forking *OS thread*: armed from any other thread it would fire when
    # that thread ends, killing a healthy child. On Linux the main thread's id is the pid (and
    # gevent's greenlets all run on it, so Locust's fork qualifies whichever greenlet calls it).
    _forking_pid = os.getpid() if threading.get_native_id() == os.getpid() else None


def _after_fork_in_child() -> None:
    if _forking_pid is not None:
        die_with_parent(_forking_pid)


def register() -> bool:
    """Install the hooks once (hooks cannot be removed, so a second call must not add more).

    Returns True when this call installed them.
    """
    global _registered
    if _registered:
        return False
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    _registered = True
    return True


register()
