"""`make test`: the whole suite as three pytest processes, the unit tests beside the ones that start processes.

Why not pytest-xdist: Locust monkey-patches the test process with gevent, and xdist's worker channel (execnet's
threads) then blocks for good (gevent.exceptions.LoopExit), so it cannot run this suite.
How: tests/unit (pure and CPU-bound, about 2 minutes, no cluster, no fixed port) runs at nice 10 beside
tests/hostile, which comes first in its process (its RSS and stall bounds assume a fresh process) and is then
followed by tests/integration. When the unit tests end, a third process starts on tests/integration from its
last file backwards; the two take whole files in turn until they meet (tests/steal.py), so at most two
files that start real processes run at once. Every such test binds free ports and looks only for its own
processes (by its own directory), so two can run side by side; each still waits on its own processes and
counts what they leave. Ctrl-C or SIGTERM stops all of them (each pytest gets SIGINT and tears its fixtures
down; what is left after 60 s is killed), and the exit code is the worst of them.

    python -m tests.parallel [pytest args for all]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import steal as steal_mod

ROOT = Path(__file__).resolve().parent.parent
UNIT = ["tests/unit"]
PROCESSES = ["tests/hostile", "tests/integration"]  # hostile first: its RSS and stall bounds assume a fresh process
SHARED = "tests/integration"  # its files are shared out between two processes (tests/steal.py)
GRACE_S = 60.0


def _start(paths: list[str], args: list[str], out: object = None, nice: int = 0,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """One pytest in its own session (a terminal's Ctrl-C reaches only this runner, which passes it on)."""
    def lower() -> None:
        if nice:
            os.nice(nice)

    return subprocess.Popen([sys.executable, "-m", "pytest", *paths, *args], cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT if out is not None else None, start_new_session=True,
                            preexec_fn=lower, env={**os.environ, **(env or {})})


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
    with tempfile.TemporaryFile(mode="w+") as unit_out, tempfile.TemporaryFile(mode="w+") as back_out, \
            tempfile.TemporaryDirectory(prefix="sioscale-steal-") as claims:
        steal = {steal_mod.ENV_DIR: claims, steal_mod.ENV_UNDER: SHARED}
        try:
            procs.append(_start(UNIT, ["-q", *args], out=unit_out, nice=10))
            procs.append(_start(PROCESSES, ["-p", "tests.steal", *args], env={**steal, steal_mod.ENV_FROM: "front"}))
            rc_unit = procs[0].wait()
            # the unit tests are done: a second process takes tests/integration's files from the back
            procs.append(_start([SHARED], ["-p", "tests.steal", *args], out=back_out,
                                env={**steal, steal_mod.ENV_FROM: "back"}))
            rc_rest = procs[1].wait()
            rc_back = procs[2].wait()
        except KeyboardInterrupt:
            _stop(procs)
            print("\ninterrupted: every pytest process stopped", file=sys.stderr)
            return 130
        finally:
            _stop(procs)
        for title, out in ((f"{SHARED}, files taken from the back (run beside the above)", back_out),
                           (f"{' '.join(UNIT)} (run beside the above)", unit_out)):
            out.seek(0)
            print(f"\n===== {title} =====")
            sys.stdout.write(out.read())
    # pytest's 5 is "no tests ran": the back process may find every file already taken
    rc_back = 0 if rc_back == 5 else rc_back
    print(f"\n===== exit codes: {' '.join(PROCESSES)} {rc_rest}, {SHARED} from the back {rc_back}, "
          f"{' '.join(UNIT)} {rc_unit} =====")
    return max(rc_rest, rc_back, rc_unit)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
