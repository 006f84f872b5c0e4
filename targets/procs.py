"""Child processes of a cluster: each in its own process group, logged to a file, killed as a group.

A cluster is a handful of servers that must never outlive the test or command that started
them (the machine is shared, ports are few). Every child gets its own session, so one
``killpg`` reaches anything it forks, and -- when started from the main thread -- a parent-death
signal, so even a SIGKILLed supervisor leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from contract.pdeathsig import die_with_parent
from targets.cgroups import attach_self


class ChildStartError(RuntimeError):
    """A child that could not be set up before exec (e.g. it could not join its cgroup)."""


def _child_setup(pdeathsig: bool, parent_pid: int, cgroup_procs: tuple[str, ...] = (),
                 death_signal: int = signal.SIGKILL) -> None:
    # Runs in the child between fork and exec. The cgroup comes first: the program must never
    # run a single instruction outside its limits (an exception here aborts the exec).
    # PDEATHSIG fires when the *thread* that forked dies, so it is only armed for children
    # started from the main thread. die_with_parent also covers a supervisor SIGKILLed between
    # the fork and this call (the child then ends itself).
    if cgroup_procs:
        attach_self(list(cgroup_procs))
    if pdeathsig:
        die_with_parent(parent_pid, death_signal)


@dataclass
class Child:
    """One supervised process: its command, log file and the port it must bind."""

    name: str
    argv: list[str]
    log_path: Path
    port: int | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    # cgroup.procs files the child writes its own pid into before exec (targets.cgroups.NodeGroup)
    cgroup_procs: tuple[str, ...] = ()
    # What the child gets when the supervisor dies. SIGKILL, except for a child that must pass it
    # on: nginx's master, whose worker outlives a SIGKILLed master but not a SIGTERMed one.
    death_signal: int = signal.SIGKILL
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        """Spawn the child; ChildStartError when its setup (cgroup) failed, so it never ran."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for procs in self.cgroup_procs:
            # Checked here too: under gevent's monkey-patched subprocess (Locust imported in this
            # process) an exception in preexec_fn surfaces as the exec's OSError ("No such file:
            # /bin/sh"), which would name the wrong thing. The child still joins before exec.
            if not os.access(procs, os.W_OK):
                raise ChildStartError(f"{self.name} could not join its cgroup ({procs} is not writable); "
                                      "run as root with the cgroup controllers writable")
        log = open(self.log_path, "ab")  # handed to the child, closed below
        setup = _make_setup(threading.current_thread() is threading.main_thread(), os.getpid(), self.cgroup_procs,
                            self.death_signal)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=setup,
            )
        except subprocess.SubprocessError as e:
            # Popen only says "Exception occurred in preexec_fn"; name what the setup was doing.
            if not self.cgroup_procs:
                raise
            raise ChildStartError(f"{self.name} could not join its cgroup ({', '.join(self.cgroup_procs)}) "
                                  f"before exec: {e}; run as root with the cgroup controllers writable") from None
        finally:
            log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def log_tail(self, lines: int = 3) -> str:
        """The last non-empty lines of the log, for one-line error messages."""
        return " | ".join(self.log_lines(lines))

    def log_lines(self, lines: int = 10, max_bytes: int = 64 * 1024) -> list[str]:
        """The last non-empty lines of the log, read from its last `max_bytes` only.

        Why bounded: a node's log under load can be large, and this runs while the rest of the
        cluster is still serving.
        """
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        rows = [r.strip() for r in text.splitlines() if r.strip()]
        return rows[-lines:] if lines > 0 else []


def _make_setup(pdeathsig: bool, parent_pid: int, cgroup_procs: tuple[str, ...] = (),
                death_signal: int = signal.SIGKILL):  # a closure for Popen
    return lambda: _child_setup(pdeathsig, parent_pid, cgroup_procs, death_signal)


def stop_all(children: list[Child], grace: float = 2.0) -> None:
    """SIGTERM every group at once, SIGKILL whatever is left after `grace` seconds, reap all.

    Terminating all groups before waiting on any keeps a full stop under ~grace seconds however
    many children there are (the CLI promises to be gone within 5 s of Ctrl-C).
    """
    live = [c for c in children if c.proc is not None]
    for c in live:
        c.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for c in live:
        assert c.proc is not None
        try:
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # The group may hold more than the leader (e.g. a shell); kill it even if the leader exited.
        c.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.proc.wait(timeout=2.0)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind host:port now (TIME_WAIT leftovers do not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def wait_port_free(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if port_is_free(port, host):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
