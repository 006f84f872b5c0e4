"""`make test`: the whole suite as two pytest processes at once, the unit tests beside the ones that start processes.

Why not pytest-xdist: Locust monkey-patches the test process with gevent, and xdist's worker channel (execnet's
threads) then blocks for good (gevent.exceptions.LoopExit), so it cannot run this suite.
Why two processes are safe: tests/unit starts no cluster and binds no fixed port (pure and CPU-bound, about
2 minutes); tests/integration and tests/hostile start real processes, wait on them and count what they leave,
and still run one at a time, as before. The two share nothing but the CPU, and the unit tests get it last
(nice 10), so the timing of the real-process tests moves as little as a busy machine moves it.
Ctrl-C or SIGTERM stops both (each pytest gets SIGINT and tears its fixtures down; what is left after 60 s is
killed), and the exit code is the worse of the two.

    python -m tests.parallel [pytest args for both]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNIT = ["tests/unit"]
PROCESSES = ["tests/hostile", "tests/integration"]  # hostile first: its RSS and stall bounds assume a fresh process
GRACE_S = 60.0


def _start(paths: list[str], args: list[str], out: object = None, nice: int = 0) -> subprocess.Popen:
    """One pytest in its own session (a terminal's Ctrl-C reaches only this runner, which passes it on)."""
    def lower() -> None:
        if nice:
            os.nice(nice)

    return subprocess.Popen([sys.executable, "-m", "pytest", *paths, *args], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT if out is not None else None, start_new_session=True,
                            preexec_fn=lower)


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT to each pytest's process group (pytest tears its fixtures down on it), SIGKILL after GRACE_S."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    for p in procs:
        try:
            p.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main(args: list[str]) -> int:
    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryFile(mode="w+") as unit_out:
        try:
            procs.append(_start(UNIT, ["-q", *args], out=unit_out, nice=10))
            procs.append(_start(PROCESSES, args))
            rc_rest = procs[1].wait()
            rc_unit = procs[0].wait()
        except KeyboardInterrupt:
            _stop(procs)
            print("\ninterrupted: both pytest processes stopped", file=sys.stderr)
            return 130
        finally:
            _stop(procs)
        unit_out.seek(0)
        print(f"\n===== {' '.join(UNIT)} (run beside the above) =====")
        sys.stdout.write(unit_out.read())
    print(f"\n===== exit codes: {' '.join(PROCESSES)} {rc_rest}, {' '.join(UNIT)} {rc_unit} =====")
    return max(rc_rest, rc_unit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
