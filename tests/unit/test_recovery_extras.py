"""summary.json `configs[].recovery`'s additive keys (issue 14): the time from reconnect to caught up,
the no-offset limit and the server's odd recovery answers, each classified in the verdict."""

from __future__ import annotations

import pandas as pd

from analysis.recovery import RECOVERY_KEYS, recovery_block, recovery_verdict


def _rows(*rows: tuple[str, int, float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"config": "c", "step": s, "ok": ok, "latency_ms": lat} for s, ok, lat in rows])


LOST = (("disconnect", 0, None), ("reconnect", 1, 800.0), ("recover", 1, 9.0))


def test_caught_up_p95_over_the_whole_reconnects_and_the_broken_ones_counted() -> None:
    ev = _rows(*LOST, *LOST, *[("caught_up", 1, float(ms)) for ms in range(0, 100, 5)], ("caught_up", 0, 3.0))
    b = recovery_block(ev)
    assert b is not None and tuple(b)[:len(RECOVERY_KEYS)] == RECOVERY_KEYS
    assert (b["p95_caught_up_ms"], b["caught_up"], b["not_caught_up"]) == (90.2, 20, 1)  # numpy p95 of 0..95, rounded to 0.1 ms
    v = recovery_verdict(b, "redis-streams")
    assert "p95 reconnect to caught up 90 ms (1 of 21 reconnects never whole again)" in v


def test_cells_give_the_caught_up_counts_too() -> None:
    cells = pd.DataFrame([
        {"step": "disconnect", "ok": 0, "count": 2, "second": 1},
        {"step": "caught_up", "ok": 1, "count": 2, "second": 1},
        {"step": "caught_up", "ok": 0, "count": 1, "second": 1},
    ])
    b = recovery_block(None, cells)
    assert (b["caught_up"], b["not_caught_up"], b["p95_caught_up_ms"]) == (2, 1, None)  # no histogram: no p95


def test_no_catch_up_rows_and_no_client_counters_are_none_not_zero() -> None:
    b = recovery_block(_rows(*LOST))
    assert (b["p95_caught_up_ms"], b["caught_up"], b["no_offset"], b["server_answers"]) == (None, None, None, None)
    assert "caught up" not in recovery_verdict(b, "redis")


def test_no_offset_is_the_known_limit_in_the_verdict() -> None:
    b = recovery_block(_rows(*LOST, ("recover", 0, 9.0)), client={"attempts": 2, "no_offset": 2, "no_event": 1})
    assert b["no_offset"] == 1  # the one that had received nothing; the other's adapter appends no offsets
    assert "1 recovery attempts carried no offset: those clients had received no event" in recovery_verdict(b, "memory")
    b = recovery_block(_rows(*LOST), client={"attempts": 1, "no_offset": 1})  # Redis pub/sub: none appended
    assert b["no_offset"] == 0 and "no offset" not in recovery_verdict(b, "redis")


def test_a_lying_servers_answers_are_classified() -> None:
    client = {"attempts": 3, "recovered": 3, "recovered_empty": 1, "duplicated": 4, "backwards": 2}
    b = recovery_block(_rows(*LOST), client=client)
    assert b["server_answers"] == {"recovered_empty": 1, "duplicated_offsets": 4, "offsets_backwards": 2}
    v = recovery_verdict(b, "redis-streams")
    assert ("the server said recovered with nothing replayed (1), sent an offset it had sent before (4), sent offsets "
            "going backwards (2) (no numbered stream to tell whether a message was lost)") in v
    b = recovery_block(_rows(*LOST), client={**client, "stream_received": 50, "missed": 3, "seq_duplicated": 4})
    assert b["missed"] == 3 and "(a loss; 4 messages delivered twice and 0 late per sender)" in recovery_verdict(b, "x")
    b = recovery_block(_rows(*LOST), client={"attempts": 2, "backwards": 9, "stream_received": 50})
    assert "(no message twice or late per sender: the adapter interleaving its nodes' entries)" in recovery_verdict(b, "x")
    clean = recovery_block(_rows(*LOST), client={"attempts": 1, "recovered": 1})
    assert clean["server_answers"] == dict.fromkeys(("recovered_empty", "duplicated_offsets", "offsets_backwards"), 0)
    assert "the server" not in recovery_verdict(clean, "redis-streams")


def test_the_report_shows_the_catch_up_and_the_servers_answers_beside_the_failover_table() -> None:
    import jinja2

    from analysis import report

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(report.Path(report.__file__).parent / "templates")))
    src = env.loader.get_source(env, "report.html.j2")[0]  # type: ignore[union-attr]
    i = src.index("{% set rec = s.configs|selectattr('recovery')|list %}")
    part = src[i:src.index("</section>", i)]
    env.filters["num"] = lambda v: "" if v is None else str(v)
    b = recovery_block(_rows(*LOST, ("caught_up", 1, 42.0), ("caught_up", 0, 1.0)),
                       client={"attempts": 2, "no_offset": 1, "duplicated": 3})
    old = {k: b[k] for k in RECOVERY_KEYS}  # a summary.json from before the additive keys
    html = env.from_string(part).render(s={"configs": [{"name": "streams-rec", "recovery": b},
                                                         {"name": "older", "recovery": old}]})
    row = html[html.index("p95 reconnect → caught up"):]
    assert "42 ms" in row and "1 of 2" in row and '<td class="n bad">3</td>' in row
    assert "older" in row  # its cells blank, no error


def test_the_client_tells_no_event_received_from_an_adapter_that_appends_no_offset() -> None:
    from locustfiles.sio.protocol.recovery import Recovery

    quiet = Recovery()
    quiet.on_connect(None, None, {"sid": "A", "pid": "P1"}, 0)  # first session: pid given, then lost silently
    out = quiet.on_connect("P1", None, {"sid": "B", "pid": "P2"}, 0)
    assert not out.recovered and (quiet.counts["no_offset"], quiet.counts["no_event"]) == (1, 1)
    pubsub = Recovery()
    pubsub.on_connect(None, None, {"sid": "A", "pid": "P1"}, 0)
    assert pubsub.on_event([{"id": "m"}], False) == ([{"id": "m"}], None)  # no offset appended
    pubsub.on_connect("P1", None, {"sid": "B", "pid": "P2"}, 0)
    assert (pubsub.counts["no_offset"], pubsub.counts["no_event"]) == (1, 0)
