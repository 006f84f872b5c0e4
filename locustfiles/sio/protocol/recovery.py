"""Connection-state recovery as socket.io-client >= 4.6 does it, kept across a user's sessions.

Why a record of its own: `ClientProtocol` is one Engine.IO session, and recovery is what one
socket.io-client `Socket` carries from a lost session into the next. What the real client does
(socket.io-client 4.8 lib/socket.ts, checked against the socket.io 4.8.4 server):

- The server's CONNECT reply is `40{"sid": ..., "pid": ...}`; `pid` is there only when the server
  runs with `connectionStateRecovery`. The client keeps it.
- With recovery on, the server appends each stored broadcast's offset to its arguments (socket.io
  4.8.4 SessionAwareAdapter.broadcast and ClusterAdapter.addOffsetIfNecessary: `packet.data.push(id)`
  for an EVENT without ack id, not volatile). The client keeps the last argument of every event as
  the offset when it holds a pid and that argument is a string. The in-memory adapter's offsets
  are yeast ids ("PaV8xYz", "PaV8xYz.1"), Redis Streams' are stream entry ids ("1700000000000-0").
- Reconnecting, it sends CONNECT with `{pid, offset}` merged under its own auth
  (`Object.assign({pid, offset}, auth)`: the app's auth keys win; an undefined offset is left out).
- The server that restores the session writes the missed packets *before* its CONNECT reply (the
  Socket constructor replays them), the reply carries the same pid, and the client sets
  `recovered = pid === the pid it had`. socket.io-client buffers events received before CONNECT
  and fires them once connected: they are the replay.

Differences from the real client, on purpose: the offset is stripped from the arguments the
scenario sees (socket.io-client leaves it there, so a handler gets one extra argument; a Python
handler would raise TypeError on it, so a null last argument, the sharded adapter's empty slot, is
taken off too: EMPTY_OFFSETS), and only from events that ask no ack (the server never appends an offset to those). What the server
replays, or fails to, is counted here (`counts`), never raised: a server that says recovered but
replays nothing, replays a packet twice, or whose offsets go backwards. The first can be right
(nothing was missed) and the last two happen with a correct server too (Redis Streams across nodes:
a node delivers its own broadcast at once, another node's earlier entry after its XREAD), so they
are observations for the delivery analysis, not protocol errors. Stdlib only.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RECENT_OFFSETS = 4096
"""Offsets remembered to spot a packet delivered twice (a replay of what had already arrived)."""
MAX_OFFSET_CHARS = 256
"""A longer string is no offset (yeast ids are ~7-12 chars, stream ids ~15-41): not kept for the
next CONNECT, so a hostile server cannot make every reconnect carry its megabytes back."""

EMPTY_OFFSETS = ("",)
"""An offset slot with nothing in it. @socket.io/redis-adapter 8.3's sharded adapter is a
socket.io-adapter ClusterAdapter whose publish resolves to "" and whose receiving side passes no
offset, so with connectionStateRecovery on every event without ack ends with "" on the node that
published it and with null (JS undefined in JSON) on the others, although that adapter stores
nothing and restores nothing. Both are taken off the args (counted as `bad_offset`), never kept
as an order and never counted as a duplicate; a trailing null without a pid is the app's own."""

_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_YEAST = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
_YEAST_VALUE = {ch: i for i, ch in enumerate(_YEAST)}

COUNTERS = (
    "attempts",  # CONNECTs sent with a pid (a recovery asked for)
    "recovered",  # the server answered with the same pid
    "not_recovered",  # it answered with a new pid (or none): a fresh session
    "no_offset",  # attempts without an offset (none received, or the adapter appends none): not recoverable
    "no_event",  # of those, the ones where no event had arrived at all: the known limit, any adapter
    "replayed",  # events received before the CONNECT reply (the server's replay of missed packets)
    "recovered_empty",  # recovered with nothing replayed (right when nothing was missed; else a loss)
    "replay_without_recovery",  # events before a CONNECT reply that did not recover
    "duplicated",  # an event whose offset had already been seen (delivered twice)
    "backwards",  # an offset older than the one before it (delivered out of order)
    "bad_offset",  # a last string argument that is no offset we can read (kept, not ordered)
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one recovery attempt (a CONNECT sent with a pid)."""

    recovered: bool
    replayed: int
    reason: str  # "" when recovered; else why not, in words for the event row's error column


def offset_key(offset: str) -> tuple[int, int, int] | None:
    """An offset's order: (format, high, low) for stream ids and yeast ids; None when unreadable.

    Two offsets compare only within one format (the first field): a reconnect from a memory-adapter
    node to another cannot happen without a new session, so mixed formats are never ordered.
    """
    m = _STREAM_ID.fullmatch(offset)
    if m:
        return 1, int(m.group(1)), int(m.group(2))
    head, _, seq = offset.partition(".")
    if head and len(head) <= 12 and all(ch in _YEAST_VALUE for ch in head + seq):
        return 2, _yeast_decode(head), _yeast_decode(seq) if seq else -1
    return None


def _yeast_decode(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _YEAST_VALUE[ch]
    return n


class Recovery:
    """The pid and the last offset of one socket.io-client Socket, and what its recoveries gave.

    One per user for its whole life (SocketIOUser keeps it across reconnects; a new `connect()`
    starts a new one, as a page creating a new `io()` would). ClientProtocol calls `connect_auth`
    when it writes CONNECT, `on_event` for each event, `on_connect` on the CONNECT reply.
    """

    def __init__(self) -> None:
        self.pid: str | None = None
        self.offset: str | None = None
        self.counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._last_key: tuple[int, int, int] | None = None
        self._events = 0  # events received since the pid was given (with an offset or not)
        self._empty = 0  # of which with an empty offset slot (null): EMPTY_OFFSETS

    def reset(self) -> None:
        """Forget the pid and offsets (a new socket.io-client Socket); the counts stay (the user's totals)."""
        self.pid = self.offset = None
        self._events = self._empty = 0
        self._recent.clear()
        self._last_key = None

    def connect_auth(self, auth: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The CONNECT payload: `{pid, offset}` under the app's auth once a pid is held, else the auth."""
        if self.pid is None:
            return dict(auth) if auth is not None else None
        base: dict[str, Any] = {"pid": self.pid}
        if self.offset is not None:
            base["offset"] = self.offset
        return {**base, **(auth or {})}

    def on_event(self, args: list[Any], asks_ack: bool) -> tuple[list[Any], str | None]:
        """(the args the scenario sees, the offset taken off them or None); counts duplicates and order."""
        if self.pid is None:
            return args, None
        self._events += 1
        if asks_ack or not args:
            return args, None
        if args[-1] is None:  # an empty offset slot (see EMPTY_OFFSETS): taken off, nothing to keep
            self.counts["bad_offset"] += 1
            self._empty += 1
            return args[:-1], None
        if not isinstance(args[-1], str):
            return args, None
        offset = args[-1]
        self._see(offset)
        return args[:-1], offset

    def _see(self, offset: str) -> None:
        if len(offset) > MAX_OFFSET_CHARS or offset in EMPTY_OFFSETS:
            self.counts["bad_offset"] += 1
            if offset in EMPTY_OFFSETS:
                self.offset = offset  # socket.io-client keeps any string, "" too, and sends it back
            return
        if offset in self._recent:
            self.counts["duplicated"] += 1
        else:
            self._recent[offset] = None
            if len(self._recent) > RECENT_OFFSETS:
                self._recent.popitem(last=False)
        key = offset_key(offset)
        if key is None:
            self.counts["bad_offset"] += 1
        elif self._last_key is not None and key[0] == self._last_key[0] and key < self._last_key:
            self.counts["backwards"] += 1
        self._last_key = key if key is not None else self._last_key
        self.offset = offset  # socket.io-client keeps the last one received, whatever its order

    def on_connect(self, sent_pid: str | None, sent_offset: str | None, data: Mapping[str, Any],
                   replayed: int) -> Outcome | None:
        """The CONNECT reply `data` of a CONNECT that carried `sent_pid` / `sent_offset`.

        Returns None when no recovery was asked (no pid sent); else the Outcome. The reply's pid
        becomes the one to send next time (none: the server has recovery off, so nothing is sent).
        """
        pid = data.get("pid")
        new_pid = pid if isinstance(pid, str) and pid else None
        events, self._events = self._events, 0
        empty, self._empty = self._empty, 0
        self.pid = new_pid
        if sent_pid is None:
            if replayed:
                self.counts["replay_without_recovery"] += replayed
            return None
        self.counts["attempts"] += 1
        if sent_offset is None:
            self.counts["no_offset"] += 1
            if not events:
                self.counts["no_event"] += 1
        recovered = new_pid is not None and new_pid == sent_pid
        if recovered:
            self.counts["recovered"] += 1
            self.counts["replayed"] += replayed
            if replayed == 0:
                self.counts["recovered_empty"] += 1
            return Outcome(True, replayed, "")
        self.counts["not_recovered"] += 1
        if replayed:
            self.counts["replay_without_recovery"] += replayed
        if new_pid is None:
            reason = "the server no longer offers recovery (no pid in its CONNECT reply)"
        elif (sent_offset is None and empty) or sent_offset in EMPTY_OFFSETS:
            reason = ("the server appended only empty offsets ('' or null) to its events: its adapter stores no "
                      "packets (the sharded adapter) and cannot recover")
        elif sent_offset is None and events:
            reason = (f"no offset to send: the server appended none to the {events} event(s) received, so its "
                      "adapter stores no packets (Redis pub/sub or sharded) and cannot recover")
        elif sent_offset is None:
            reason = "no offset to send: no event had arrived before the loss, so the server cannot recover it"
        else:
            reason = ("the server started a new session (new pid): the session expired, this adapter keeps none, "
                      "or the server had not stored it yet (it had not seen the old connection end)")
        # socket.io-client keeps its last offset across a new pid, so this does too
        return Outcome(False, replayed, reason)
