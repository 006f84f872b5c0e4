"""A pytest plugin for `make test`: two pytest processes share tests/integration's files, one file at a time.

Why: the integration tests start real processes and run one at a time in their process; one process
alone takes over ten minutes, most of it waiting on sockets and timers rather than using both cores.
tests.parallel starts two pytest processes; each runs the tests it owns (tests/hostile in one, tests/unit
in the other) and then takes tests/integration's files, the first process from the front of the list and
the second from the back, until they meet. A file is taken by creating a claim file in a directory both
share (O_CREAT | O_EXCL, so exactly one process wins it); a file's tests always run together, in one
process, in their order, so module fixtures and a file's assumptions stay as they were.

Why not pytest-xdist: see tests/parallel.py (Locust's gevent patching deadlocks its worker channel).

Environment: SIOSCALE_STEAL_DIR (the shared claim directory; without it the plugin does nothing),
SIOSCALE_STEAL_FROM ("front" or "back") and SIOSCALE_STEAL_UNDER (the shared folder, tests/integration).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV_DIR, ENV_FROM, ENV_UNDER = "SIOSCALE_STEAL_DIR", "SIOSCALE_STEAL_FROM", "SIOSCALE_STEAL_UNDER"


def groups(items: list[pytest.Item], under: str, from_back: bool) -> list[tuple[str | None, list[pytest.Item]]]:
    """The run's plan: the owned tests (name None, always run) first, then the shared files in turn.

    A shared file's tests keep their collection order; only the order of the files is reversed for the
    process that works from the back.
    """
    prefix = under.rstrip("/") + "/"
    own = [i for i in items if not i.nodeid.startswith(prefix)]
    files: dict[str, list[pytest.Item]] = {}
    for i in items:
        if i.nodeid.startswith(prefix):
            files.setdefault(i.nodeid.split("::", 1)[0], []).append(i)
    shared = list(files.items())
    if from_back:
        shared.reverse()
    return [(None, own), *shared]


def claim(directory: Path, name: str) -> bool:
    """True if this process is the first to take `name` (one file created exclusively per name)."""
    try:
        os.close(os.open(directory / name.replace("/", "__"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _taken(plan: list[tuple[str | None, list[pytest.Item]]], directory: Path) -> Iterator[list[pytest.Item]]:
    """The groups this process runs, each claimed only when the one before it is about to end."""
    for name, its in plan:
        if its and (name is None or claim(directory, name)):
            yield its


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    """pytest's own loop (main.pytest_runtestloop), over the groups this process takes."""
    directory = os.environ.get(ENV_DIR)
    if not directory or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                                  "during collection")
    plan = groups(session.items, os.environ.get(ENV_UNDER, "tests/integration"),
                  os.environ.get(ENV_FROM, "front") == "back")
    taken = _taken(plan, Path(directory))
    current = next(taken, None)
    while current:
        following = None
        for n, item in enumerate(current):
            if n + 1 < len(current):
                nextitem: pytest.Item | None = current[n + 1]
            else:
                # claim the next file before this one's last test ends, so pytest knows what comes next
                # and tears down only what that next test does not share
                following = next(taken, None)
                nextitem = following[0] if following else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        current = following
    return True
