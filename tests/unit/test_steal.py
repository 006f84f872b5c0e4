"""tests/steal.py: two pytest processes share a folder's files, each file run exactly once, whole, in order."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from tests import steal

ROOT = Path(__file__).resolve().parents[2]


def _items(*ids: str) -> list:
    return [SimpleNamespace(nodeid=i) for i in ids]


def test_owned_tests_first_then_shared_files_front_or_back() -> None:
    items = _items("tests/hostile/test_h.py::t", "tests/integration/test_a.py::t1", "tests/integration/test_a.py::t2",
                   "tests/integration/test_b.py::t")
    front = steal.groups(items, "tests/integration", from_back=False)
    back = steal.groups(items, "tests/integration", from_back=True)
    assert [n for n, _ in front] == [None, "tests/integration/test_a.py", "tests/integration/test_b.py"]
    assert [n for n, _ in back] == [None, "tests/integration/test_b.py", "tests/integration/test_a.py"]
    assert [i.nodeid for i in back[2][1]] == ["tests/integration/test_a.py::t1", "tests/integration/test_a.py::t2"]


def test_a_claim_is_won_once(tmp_path: Path) -> None:
    assert steal.claim(tmp_path, "tests/integration/test_a.py")
    assert not steal.claim(tmp_path, "tests/integration/test_a.py")
    assert steal.claim(tmp_path, "tests/integration/test_b.py")


def test_two_processes_run_each_shared_test_once(tmp_path: Path) -> None:
    """Real pytest processes at once: every test of the shared folder runs exactly once, a file's tests together."""
    shared = tmp_path / "tests" / "shared"
    shared.mkdir(parents=True)
    log = tmp_path / "ran.log"
    for f in range(6):
        (shared / f"test_f{f}.py").write_text(
            "import os, time\n"
            + "".join(f"def test_{t}():\n    time.sleep(0.05)\n"
                      f"    with open({str(log)!r}, 'a') as fh: fh.write('f{f}.{t} ' + os.environ['SIDE'] + chr(10))\n"
                      for t in range(3)))
    claims = tmp_path / "claims"
    claims.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), steal.ENV_DIR: str(claims), steal.ENV_UNDER: "tests/shared"}
    ps = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "tests.steal", "-p", "no:cacheprovider",
                            "tests/shared"], cwd=tmp_path, env={**env, steal.ENV_FROM: side, "SIDE": side},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
          for side in ("front", "back")]
    outs = [p.communicate(timeout=60)[0] for p in ps]
    assert all(p.returncode in (0, 5) for p in ps), outs
    ran = [line.split() for line in log.read_text().splitlines()]
    assert sorted(t for t, _ in ran) == sorted(f"f{f}.{t}" for f in range(6) for t in range(3))
    by_file = {}
    for t, side in ran:
        by_file.setdefault(t.split(".")[0], set()).add(side)
    assert all(len(sides) == 1 for sides in by_file.values()), by_file
    per_file_order = {}
    for t, _ in ran:
        per_file_order.setdefault(t.split(".")[0], []).append(t)
    assert all(v == sorted(v) for v in per_file_order.values())
