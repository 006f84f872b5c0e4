"""targets/blip.py without a balancer: `show sess` parsing, the choice of a fraction, the CLI's refusals."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import targets.blip as blip
from targets.blip import BlipError, ProxiedSession, cut_sessions, parse_show_sess, pick_fraction

# HAProxy 2.8.25's `show sess` with two websocket clients through the cookie policy (captured here)
SHOW_SESS = (
    "0x28fb8b50: proto=tcpv4 src=127.0.0.1:47036 fe=fe_sio be=be_sio srv=n1 ts=00 epoch=0 age=0s calls=3 rate=0 "
    "cpu=0 lat=0 rq[f=848101h,i=0,an=00h,ax=] rp[f=80048101h,i=0,an=00h,ax=] scf=[8,1000h,fd=15,rex=59m59s,wex=] "
    "scb=[8,1001h,fd=16,rex=59m59s,wex=] exp=4s rc=0 c_exp=\n"
    "0x28fb85c0: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0 age=0s calls=1 rate=0 "
    "cpu=0 lat=0 rq[f=808000h,i=0,an=00h,ax=] rp[f=80008001h,i=0,an=00h,ax=] scf=[8,400h,fd=17,rex=10s,wex=] "
    "scb=[8,1h,fd=-1,rex=,wex=] exp=10s rc=0 c_exp=\n"
    "0x7fbb78043510: proto=tcpv4 src=127.0.0.1:47020 fe=fe_sio be=be_sio srv=n2 ts=00 epoch=0 age=0s calls=3 "
    "rate=0 cpu=0 lat=0 rq[f=848101h,i=0,an=00h,ax=] rp[f=80048101h,i=0,an=00h,ax=] "
    "scf=[8,1000h,fd=12,rex=59m59s,wex=] scb=[8,1001h,fd=14,rex=59m59s,wex=] exp=4s rc=0 c_exp=\n\n"
)


def test_show_sess_lines_become_sessions() -> None:
    ss = parse_show_sess(SHOW_SESS)
    assert [(s.ptr, s.src, s.frontend, s.server, s.src_port) for s in ss] == [
        ("0x28fb8b50", "127.0.0.1:47036", "fe_sio", "n1", 47036),
        ("0x28fb85c0", "unix:1", "GLOBAL", "<none>", None),
        ("0x7fbb78043510", "127.0.0.1:47020", "fe_sio", "n2", 47020),
    ]
    assert parse_show_sess("Unknown command.\n") == [] and parse_show_sess("") == []


def test_a_fraction_is_rounded_and_may_be_limited_to_one_node() -> None:
    ss = [ProxiedSession(f"0x{i}", f"127.0.0.1:{1000 + i}", "fe_sio", "be_sio", f"n{1 + i % 2}") for i in range(10)]
    assert len(pick_fraction(ss, 0.3, random.Random(1))) == 3
    assert pick_fraction(ss, 0.0) == [] and len(pick_fraction(ss, 1.0)) == 10
    on_n2 = pick_fraction(ss, 0.5, random.Random(2), target="n2")
    assert len(on_n2) == 2  # round(0.5 * 5): Python rounds half to even
    assert all(s.server == "n2" for s in on_n2)
    with pytest.raises(ValueError, match="fraction"):
        pick_fraction(ss, 1.5)


def test_cut_sends_one_shutdown_per_chosen_session_and_names_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[bytes] = []

    def fake(path: Path, command: bytes, timeout: float = 1.0) -> str:
        sent.append(command)
        return SHOW_SESS if command == b"show sess\n" else "\n"

    monkeypatch.setattr(blip, "unix_request", fake)
    cut = cut_sessions(Path("/x/sock"), lambda ss: [s for s in ss if s.server == "n2"])
    assert [s.ptr for s in cut] == ["0x7fbb78043510"]  # the CLI's own session is never a candidate
    assert sent == [b"show sess\n", b"shutdown session 0x7fbb78043510\n"]
    monkeypatch.setattr(blip, "unix_request", lambda p, c, t=1.0: SHOW_SESS if c == b"show sess\n"
                        else "Permission denied\n")
    with pytest.raises(BlipError, match="level admin"):
        cut_sessions(Path("/x/sock"), lambda ss: ss)

    def broken(path: Path, command: bytes, timeout: float = 1.0) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(blip, "unix_request", broken)
    with pytest.raises(BlipError, match="cannot reach HAProxy's CLI at /x/sock"):
        cut_sessions(Path("/x/sock"), lambda ss: ss)
