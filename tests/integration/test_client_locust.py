"""The chat scenario end to end under the real `locust` command, through HAProxy to 2 nodes."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.runfiles import read_aggregates
from contract.config import ClusterConfig
from targets.cluster import Cluster
from tests.integration.support import run_rows

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_locust_chat_headless(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with Cluster(ClusterConfig(nodes=2, balancer="haproxy", policy="cookie", adapter="redis")) as c:
        cmd = [sys.executable, "-m", "locust", "-f", "locustfiles/chat.py", "--host", c.url, "--headless",
               "-u", "10", "-r", "10", "-t", "5s", "--sio-room-size", "5", "--sio-message-rate", "2",
               "--sio-run-dir", str(run_dir), "--csv", str(tmp_path / "locust"), "--only-summary"]
        proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    rows = run_rows(run_dir)
    by_step: dict[str, list[dict]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r)
    users = {r["user"] for r in by_step["connect"] if r["ok"] == "1"}
    assert len(users) == 10, by_step.get("connect")
    assert {r["room"] for r in by_step["join"]} == {"room-0", "room-1"}
    assert len({r["node"] for r in by_step["connect"]}) == 2  # cookie stickiness spread users over nodes
    sends = {r["msg_id"]: r["room"] for r in by_step["broadcast_send"]}
    recvs = by_step["broadcast_recv"]
    assert sends and recvs
    assert all(sends.get(r["msg_id"]) == r["room"] for r in recvs if r["msg_id"] in sends)
    # with the Redis adapter a room broadcast reaches members on both nodes
    assert {r["node"] for r in recvs} == {r["node"] for r in by_step["connect"]}
    assert all(r["ok"] == "1" for r in rows if r["step"] != "disconnect"), [r for r in rows if r["ok"] != "1"][:5]
    assert len(by_step["disconnect"]) == 10
    stats = list(csv.DictReader((tmp_path / "locust_stats.csv").open()))
    # every receipt (the aggregates' exact count; the rows are sampled) followed its sender's numbered
    # stream; no fault, so nothing missed or repeated
    streams = json.loads((run_dir / "sio_stats.json").read_text())["recovery"]
    cells = read_aggregates(run_dir)
    received = int(cells.loc[cells["step"] == "broadcast_recv", "count"].sum())
    assert streams.get("stream_received") == received > 0, streams
    assert not streams.get("missed") and not streams.get("seq_duplicated"), streams
    names = {(s["Type"], s["Name"]) for s in stats}
    assert {("eio", "handshake"), ("sio", "connect"), ("sio", "ack:echo"), ("broadcast", "broadcast:broadcast")} <= names
