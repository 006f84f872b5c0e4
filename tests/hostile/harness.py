"""Drive the real chat locustfile's users, in this process, against one hostile mode.

Why in-process under Locust's own LocalRunner: it runs `locustfiles/chat.py`'s ChatUser exactly
as `locust` would (spawn, tasks, stop, teardown), and lets the test see what a subprocess hides:
each greenlet error the gevent hub reports, every log record with a traceback, the runner's
exception table, each user's sockets after the stop, and how long the hub was starved (a
watchdog greenlet that should wake every 10 ms). The server stays in its own process (see
server.py), so a flood competes for the CPU, not for this event loop.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gevent
import psutil
from locust.env import Environment
from locust.event import Events

from contract.rows import ERROR_KINDS
from locustfiles.chat import ChatUser
from locustfiles.sio import eventlog
from tests._stall import StallMeter

HTTP_KIND = re.compile(r"^http_[1-5]\d\d$")
WATCH_EVERY_S = 0.01


class HostileChat(ChatUser):
    """The chat user, unchanged, plus a registry so the test can inspect it after the stop."""

    abstract = False
    made: list[HostileChat] = []

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        HostileChat.made.append(self)


@dataclass
class Outcome:
    """What one run against one mode showed."""

    seconds: float = 0.0  # spawn → every user stopped
    stop_seconds: float = 0.0  # runner.quit() alone
    max_stall_ms: float = 0.0  # longest the watchdog greenlet was kept from running by this thread's work
    max_late_ms: float = 0.0  # longest wake-up lateness, whoever used the CPU meanwhile
    rss_growth_mb: float = 0.0  # peak RSS over the run minus RSS before it
    steps: Counter = field(default_factory=Counter)  # ok step names
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (user, step name, error)
    hub_errors: list[str] = field(default_factory=list)
    logged_tracebacks: list[str] = field(default_factory=list)
    locust_exceptions: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    bad_rows: list[str] = field(default_factory=list)  # event rows that would lie in a report

    def kinds(self) -> Counter:
        return Counter(kind_of(e) for _u, _n, e in self.failures)

    def unclassified(self) -> list[str]:
        return [e for _u, _n, e in self.failures if not classified(kind_of(e))]


def kind_of(error: str) -> str:
    return error.split(":", 1)[0].strip()


def classified(kind: str) -> bool:
    return kind in ERROR_KINDS or bool(HTTP_KIND.match(kind))


class _TracebackLog(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.sink.append(f"{record.name}: {record.getMessage()} ({record.exc_info[1]!r})")


def _watchdog(out: Outcome, rss0: int, proc: psutil.Process) -> StallMeter:
    """Measure hub starvation (tests/_stall.py: lateness while this thread was busy) and peak
    RSS (sampled every 50 ms) until stopped; `_record` copies both into `out`."""
    peak = [rss0, 0.0]

    def sample(now: float) -> None:
        if now - peak[1] >= 0.05:
            peak[1] = now
            peak[0] = max(peak[0], proc.memory_info().rss)
            out.rss_growth_mb = (peak[0] - rss0) / 2**20

    return StallMeter(WATCH_EVERY_S, on_tick=sample)


def drive(url: str, *, transports: str, users: int = 3, duration: float = 1.5, timeout: float = 1.0,
          message_rate: float = 10.0, http_pool: str | None = None) -> Outcome:
    """Run `users` chat users against `url` for `duration` s, stop them, and say what happened."""
    out = Outcome()
    opts = argparse.Namespace(sio_timeout=timeout, sio_reconnect="true", sio_transports=transports,
                              sio_message_rate=message_rate, sio_room_size=users, sio_payload_size=16,
                              sio_run_dir="", sio_run_name="")
    if http_pool is not None:
        opts.sio_http_pool = http_pool
    env = Environment(user_classes=[HostileChat], events=Events(), host=url, parsed_options=opts)
    env.events.request.add_listener(_collector(out))
    runner = env.create_local_runner()
    HostileChat.made = []
    hub = gevent.get_hub()
    original = hub.handle_error
    tb_log = _TracebackLog(out.logged_tracebacks)
    logging.getLogger().addHandler(tb_log)

    def record_hub_error(context: Any, type_: Any, value: Any, tb: Any) -> None:
        out.hub_errors.append(f"{type_.__name__}: {value} in {context!r:.80}")
        original(context, type_, value, tb)

    hub.handle_error = record_hub_error  # type: ignore[method-assign]
    proc = psutil.Process()
    dog = _watchdog(out, proc.memory_info().rss, proc)
    t0 = time.monotonic()
    try:
        runner.start(users, spawn_rate=users * 20)
        gevent.sleep(duration)
        t_stop = time.monotonic()
        runner.quit()
        out.stop_seconds = time.monotonic() - t_stop
        out.seconds = time.monotonic() - t0
    finally:
        out.max_stall_ms = dog.stop() * 1000.0
        out.max_late_ms = dog.max_late * 1000.0
        hub.handle_error = original  # type: ignore[method-assign]
        logging.getLogger().removeHandler(tb_log)
    out.locust_exceptions = [f"{e['msg']}\n{e['traceback']}" for e in runner.exceptions.values()]
    out.leaks = _leaks(HostileChat.made)
    # the rows the event log would write (no run dir here: they stay in its buffer)
    out.bad_rows = _bad_rows(eventlog._state(env).buffer)
    return out


def _collector(out: Outcome):  # returns a Locust request listener
    def seen(request_type: str, name: str, response_time: Any, exception: Any, context: dict,
             **_kw: Any) -> None:
        if exception is None:
            out.steps[name] += 1
        else:
            out.failures.append((str(context.get("user", "")), name, str(exception)))

    return seen


def _leaks(made: list[HostileChat]) -> list[str]:
    """Sockets and greenlets a stopped user still holds."""
    found = []
    for u in made:
        s = u.session
        if s is not None and not s.closed:
            found.append(f"{u.user_id}: session not closed")
        if s is not None and [g for g in (*s._polls, s._ws_greenlet) if g is not None and not g.dead]:
            found.append(f"{u.user_id}: session greenlets alive")
        if u._http is not None and u._http.open_connections:
            found.append(f"{u.user_id}: {u._http.open_connections} HTTP connections open")
        if u._reconnector is not None and not u._reconnector.dead:
            found.append(f"{u.user_id}: reconnect loop alive")
    return found


def _bad_rows(rows: list[dict]) -> list[str]:
    """Event rows a report would turn into false figures: a failure without a classified
    error_kind (the request event may say protocol_error while the row says ""), or an
    impossible latency."""
    bad = []
    for r in rows:
        if not r["ok"] and not classified(r["error_kind"]):
            bad.append(f"{r['step']} row with error_kind {r['error_kind']!r}: {r['error'][:120]}")
        lat = r["latency_ms"]
        if lat is not None and not (isinstance(lat, int | float) and 0 <= lat < 1e7):
            bad.append(f"{r['step']} row with latency_ms {lat!r}")
    return bad
