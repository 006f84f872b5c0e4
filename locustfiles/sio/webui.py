"""The "Socket.IO" tab of Locust's web UI, its CSV download and a JSON endpoint.

Why through Locust's own extension points (template_args `extended_tabs` / `extended_tables` /
`extended_csv_files`, plus `extended_stats` added to `/stats/requests`): the React UI polls
that endpoint every couple of seconds already, so the tab is live with no JavaScript of ours.
The numbers come from `eventlog.stats()`, the same function that writes `sio_stats.json`, so
the tab, the CSV, the JSON endpoint and the run directory cannot disagree.

"Reset stats" (Locust's reset_stats event) restarts the tab's counters too; see LiveStats.reset.

The React table shows one flat table per tab, so the stats are flattened into long rows
(section, metric, value, detail): one table a person can read top to bottom. With --sio-scrape,
section "Node resources" has one row per node: its CPU, RSS, event-loop lag and clients as the
master last read them from the node's /metrics (locustfiles/sio/noderes.py).
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from locust import events

from locustfiles.sio import eventlog

TAB_KEY = "socketio"
STATS_PATH = "/sio/stats"
CSV_PATH = "/sio/stats/csv"
STRUCTURE = [
    {"key": "section", "title": "Section"},
    {"key": "metric", "title": "Metric"},
    {"key": "value", "title": "Value"},
    {"key": "detail", "title": "Detail"},
]


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def table_rows(s: dict[str, Any]) -> list[dict[str, str]]:
    """Flatten `eventlog.stats()` into the tab's rows (pure; unit-tested)."""
    out: list[dict[str, str]] = []

    def add(section: str, metric: str, value: Any, detail: str = "", digits: int = 1) -> None:
        out.append({"section": section, "metric": metric, "value": _fmt(value, digits), "detail": detail})

    t = s.get("totals", {})
    add("Totals", "connected now", t.get("connected_now"), f"{t.get('users', 0)} users seen")
    add("Totals", "connects", t.get("connects"), f"{t.get('disconnects', 0)} disconnects")
    add("Totals", "failed steps", t.get("failures"), f"of {t.get('rows', 0)} steps")
    add("Totals", "node switches", t.get("node_switches"), "a session met a second node")
    r = s.get("reconnects", {})
    add("Totals", "reconnects", t.get("reconnects"),
        f"{r.get('ok', 0)} ok, {r.get('failed', 0)} failed, p95 {_fmt(r.get('latency_p95_ms'))} ms")
    d = s.get("delivery", {})
    ratio = d.get("ratio")
    add("Broadcast", "delivery ratio", None if ratio is None else f"{100 * ratio:.2f} %",
        f"{d.get('delivered', 0)} of {d.get('expected', 0)} expected receipts, {d.get('sends_counted', 0)} sends "
        f"({d.get('sends_in_grace', 0)} newest in grace window)")
    add("Broadcast", "delivery latency p95", d.get("latency_p95_ms"),
        f"ms; p50 {_fmt(d.get('latency_p50_ms'))} ms over {d.get('receipts', 0)} receipts")
    for n in s.get("nodes", []):
        add("Node", str(n["node"]), n["connected_now"], f"connected now; {n['connects_total']} connects in total")
    for n in s.get("node_resources", []):
        add("Node resources", str(n.get("id")), *node_resource_cells(n))
    for f in s.get("failures", []):
        add("Failures", f"{f['step']} × {f['error_kind']}", f["count"])
    for sw in s.get("node_switches", []):
        add("Node switches", sw["switch"], sw["count"])
    for w in s.get("workers", []):
        age = w.get("last_report_age_s")
        detail = f"{w['rows']} steps" + (f", last report {age} s ago" if age is not None else ", no report yet")
        if w.get("lost_batches"):
            detail += f", {w['lost_batches']} batches lost"
        add("Worker", str(w["id"]), w["status"], detail)
    if s.get("dropped_rows"):
        add("Totals", "dropped rows", s["dropped_rows"], "workers' buffers overflowed: numbers are incomplete")
    if s.get("colliding_user_count"):
        add("Totals", "user ids seen on two workers", s["colliding_user_count"],
            "per-user numbers are mixed up: the locustfile's user ids are not unique per worker")
    if s.get("reset_at"):
        add("Totals", "counting since reset", time.strftime("%H:%M:%S", time.localtime(s["reset_at"])),
            "Reset stats: counters restarted; connected now and rooms are kept; the run files are complete")
    el = s.get("eventlog") or {}
    if el:
        rate = el.get("sample_rate")
        add("Event log", "rows kept", el.get("kept_rows"),
            f"{el.get('sampled_out', 0)} sampled out (rate {_fmt(rate, 3)}), {el.get('failures_over_budget', 0)} "
            "failures over the per-second budget; counts above are exact")
    if s.get("malformed_batch_parts"):
        add("Totals", "malformed batch parts", sum(s["malformed_batch_parts"].values()),
            ", ".join(f"{k}: {v}" for k, v in sorted(s["malformed_batch_parts"].items())))
    if t.get("late_rows_ignored"):
        add("Totals", "late rows ignored", t["late_rows_ignored"], "arrived after their window was settled")
    return out


def node_resource_cells(n: dict[str, Any]) -> tuple[str, str]:
    """(value, detail) of one `node_resources` item: CPU % (100 = one core) and "RSS, lag, clients, age",
    or "–" and the warning when its last read failed (a stale CPU would read as live). CPU is "–" on
    the first good read too: it is a rate between two reads."""
    age = n.get("age_s")
    if n.get("error"):
        last = "no good reading yet" if age is None else f"last good reading {_fmt(age)} s ago"
        if n["error"] == "config":
            last = "no node is polled"
        return "–", f"warning: {n['error']}: {n.get('detail') or 'no detail'}; {last}"
    if age is None:
        return "–", f"waiting for the first read of {n.get('url')}"
    cpu = n.get("cpu_percent")
    rss, lag, clients = n.get("rss_bytes"), n.get("event_loop_lag_ms"), n.get("clients")
    detail = ", ".join([
        f"RSS {_fmt(None if rss is None else rss / 2**20)} MiB",
        f"lag p99 {_fmt(lag)} ms",
        f"{'–' if clients is None else int(clients)} clients",
        f"read {_fmt(age)} s ago",
    ])
    return ("–" if cpu is None else f"{cpu:.1f} %"), detail


def to_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[c["key"] for c in STRUCTURE])
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@events.init.add_listener
def _on_init(environment: Any, web_ui: Any = None, **_kw: Any) -> None:
    web_ui = web_ui or getattr(environment, "web_ui", None)
    if web_ui is None:
        return

    def _on_reset_stats(**_kw: Any) -> None:
        # Only the web UI fires reset_stats, and only in its own process: the master (or the
        # local runner), which is where the live numbers are. The run files are not touched.
        eventlog.live_stats(environment).reset(time.time())

    environment.events.reset_stats.add_listener(_on_reset_stats)
    from flask import Response, jsonify, request

    web_ui.template_args.update({
        "extended_tabs": [{"title": "Socket.IO", "key": TAB_KEY}],
        "extended_tables": [{"key": TAB_KEY, "structure": STRUCTURE}],
        "extended_csv_files": [{"href": "." + CSV_PATH, "title": "Download Socket.IO statistics CSV"}],
    })
    app = web_ui.app

    # auth_required_if_enabled: with --web-login, our routes ask for the same login as Locust's own
    @app.route(STATS_PATH)
    @web_ui.auth_required_if_enabled
    def sio_stats() -> Any:
        return jsonify(eventlog.stats(environment))

    @app.route(CSV_PATH)
    @web_ui.auth_required_if_enabled
    def sio_stats_csv() -> Any:
        body = to_csv(table_rows(eventlog.stats(environment)))
        return Response(body, mimetype="text/csv", headers={
            "Content-Disposition": f"attachment;filename=socketio_stats_{int(time.time())}.csv"})

    @app.after_request
    def _inject(response: Any) -> Any:
        # The React UI reads `extended_stats` from the stats poll it already makes.
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        try:
            data = json.loads(response.get_data(as_text=True))
        except ValueError:
            return response
        data["extended_stats"] = [{"key": TAB_KEY, "data": table_rows(eventlog.stats(environment))}]
        response.set_data(json.dumps(data))
        return response
