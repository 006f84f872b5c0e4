"""generator.csv from real Locust runners (local and `--processes 2`) against a real one-node cluster.

What is checked are facts of the run, not shapes: the samples are Locust's own per-process
CPU readings, one a second per process, within 0..100×cores, in time order per process, and
the user counts they carry are the users Locust really ran (5, split over the workers).
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

from analysis.runfiles import read_rows
from contract.config import ClusterConfig
from tests.integration.support import ROOT, Procs, log_of, processes

pytestmark = pytest.mark.slow

USERS = 5
BURN = Path(__file__).parent / "locustfiles_el" / "burn.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from targets.cluster import Cluster

    with Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct"),
                 workdir=tmp_path_factory.mktemp("cluster")) as c:
        yield c


def _run(procs: Procs, tmp_path: Path, url: str, *extra: str) -> Path:
    run = tmp_path / "run"
    p = procs.start([str(ROOT / ".venv/bin/locust"), "-f", str(ROOT / "locustfiles/hold.py"), "--host", url,
                     "--headless", "-u", str(USERS), "-r", str(USERS), "-t", "5s", *extra,
                     "--sio-run-dir", str(run)], "locust")
    assert p.wait(timeout=90) == 0, log_of(tmp_path)
    return run


def _samples(run: Path) -> dict[str, list[tuple[float, float, int]]]:
    path = run / "generator.csv"
    assert path.exists(), "generator.csv was not written"
    with path.open(newline="") as f:
        r = csv.reader(f)
        assert next(r) == ["ts", "worker", "cpu_percent", "users"]
        per: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
        for ts, worker, cpu, users in r:
            per[worker].append((float(ts), float(cpu), int(users)))
    return dict(per)


def _plausible(rows: list[tuple[float, float, int]], t0: float, t1: float) -> None:
    ts = [r[0] for r in rows]
    assert ts == sorted(ts) and len(set(ts)) == len(ts), "timestamps must increase"
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert all(0.5 < g < 3.0 for g in gaps), gaps  # about one sample a second
    assert all(t0 - 1 <= t <= t1 + 1 for t in ts)
    assert all(0.0 <= r[1] <= 100.0 * (os.cpu_count() or 1) for r in rows)
    assert all(0 <= r[2] <= USERS for r in rows)


def _run_window(run: Path) -> tuple[float, float]:
    meta = json.loads((run / "meta.json").read_text())
    assert meta["locust"]["generator_cpu"]["samples"] > 0
    return float(meta["started"]), float(meta["ended"])


def test_local_runner_writes_one_sample_a_second(procs: Procs, tmp_path: Path, cluster) -> None:
    run = _run(procs, tmp_path, cluster.info["url"])
    per = _samples(run)
    assert set(per) == {"local"}
    rows = per["local"]
    assert len(rows) >= 3, rows  # 5 s of load: a sample a second (the first reading is skipped)
    _plausible(rows, *_run_window(run))
    assert max(r[2] for r in rows) == USERS  # the users Locust ran, as it counted them


def test_a_busy_generator_shows_as_saturated(procs: Procs, tmp_path: Path) -> None:
    """A user burning its process's CPU: the samples show it, and the analysis calls it saturated."""
    run = tmp_path / "run"
    p = procs.start([str(ROOT / ".venv/bin/locust"), "-f", str(BURN), "--headless", "-u", "1", "-r", "1",
                     "-t", "5s", "--sio-run-dir", str(run)], "locust")
    assert p.wait(timeout=60) == 0, log_of(tmp_path)
    rows = _samples(run)["local"]
    _plausible(rows, *_run_window(run))
    busy = [r[1] for r in rows if r[2] == 1]
    # ~90% of a core when it has one; the machine is shared, so only "clearly busy" is asserted
    assert busy and max(busy) >= 50, rows
    from analysis.capacity import generator_summary
    from analysis.load import load_run

    g = load_run(run).generator
    assert len(g) == len(rows) and g["cpu_percent"].max() == max(r[1] for r in rows)
    s = generator_summary(g)
    assert s["cpu_max"] == max(r[1] for r in rows)
    assert s["saturated"] == (s["cpu_max"] >= 90)


def test_processes_2_writes_every_worker_and_the_master(procs: Procs, tmp_path: Path, cluster) -> None:
    run = _run(procs, tmp_path, cluster.info["url"], *processes(2))
    per = _samples(run)
    workers = sorted(w for w in per if w != "master")
    assert "master" in per and len(workers) == 2, sorted(per)
    t0, t1 = _run_window(run)
    for w in (*workers, "master"):
        assert len(per[w]) >= 2, (w, per[w])
        _plausible(per[w], t0, t1)
    # the users each worker reported while running add up to the 5 users the master ran
    assert sum(max(r[2] for r in per[w]) for w in workers) == USERS
    assert max(r[2] for r in per["master"]) == USERS
    # worker ids are the ones the kept event rows carry, so both files can be joined per process
    assert set(read_rows(run, ["worker"])["worker"].astype(str)) == set(workers)
