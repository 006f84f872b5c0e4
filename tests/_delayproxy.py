"""`DelayProxy`: a TLS-terminating TCP proxy on 127.0.0.1 that decides a connection race on purpose
(issue 13, part 2), and records which client connection carried which request.

Two delays, each optional:
- `connect_delay_s`: a new connection becomes usable only that long after it is accepted;
  established connections are forwarded at once;
- `hold_first_post_s`: the answer to the first POST of each Engine.IO session (the CONNECT POST)
  reaches the client that much later; everything else is forwarded at once.

Why TLS: a user-space proxy cannot delay a TCP handshake -- the kernel completes it for any
listening socket before accept() -- so a client would count a "slowly accepted" connection as
connected at once. Over TLS a connection is usable when its handshake ends, which needs the
proxy's ServerHello: holding that back is a slow connection, as seen by any client (sioscale's
open_socket, or a browser's SSL connect job). By default the proxy offers no ALPN, so clients
speak HTTP/1.1. With `h2_upstream` it offers ALPN ["h2", "http/1.1"] as an h2-speaking balancer
does: a connection that chooses h2 is forwarded to that (cleartext h2c) address, and its requests
are recorded by decoding the client's HTTP/2 frames on the way (an h2 server-side connection
used only to read them); a held POST answer then holds the connection's next answer bytes.
Without a certificate it is a plain TCP proxy (then `connect_delay_s` only holds a connection's bytes).

Besides request lines it keeps, per request, the first bytes of its body (which packet a POST carried)
and when its answer left (`answered`; a held answer's due time), and per connection when it was
ready and closed: enough to read which connection was free first (tests/_fidelity.races).

The record is the proxy's own: the bytes each client connection carried, parsed into request
lines (`conns[i].requests`), with the node named by the answer's `x-served-by` header. It runs in
the test process's gevent hub, like the client; every greenlet and socket ends with `close()`.
`ProxyProcess` runs the same proxy in a process of its own (benchmarks/browser_fidelity.py: says why).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import gevent
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from gevent import socket as gsocket
from gevent import ssl
from gevent import subprocess as gsub
from gevent.fileobject import FileObjectPosix

from contract.wire import NODE_HEADER

BODY_KEPT = 64


@dataclass
class Req:
    method: str
    target: str
    t: float  # monotonic time the proxy saw its head
    node: str = ""  # from the answer's node header
    held: bool = False
    hold_done: bool = False
    answered: float = 0.0  # monotonic time its answer's first bytes went to the client
    body: bytes = b""  # the first bytes of its body (a POST's packets: which step it was)

    @property
    def sid(self) -> str:
        return parse_qs(urlsplit(self.target).query).get("sid", [""])[0]


@dataclass
class Conn:
    no: int  # accept order, from 1
    accepted: float
    ready: float = 0.0  # TLS handshake done (the client may use it from here)
    closed: float = 0.0  # either side closed it
    requests: list[Req] = field(default_factory=list)
    alpn: str = ""  # what the TLS handshake chose ("h2", "http/1.1", or "" for none)


class DelayProxy:
    """Listen on 127.0.0.1 (`url`), terminate TLS with `cert_file`/`key_file`, forward plain TCP
    to `upstream`."""

    def __init__(self, upstream: tuple[str, int], cert_file: str | None, key_file: str | None,
                 connect_delay_s: float = 0.0, hold_first_post_s: float = 0.0,
                 h2_upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.h2_upstream = h2_upstream
        self.connect_delay_s = connect_delay_s
        self.hold_first_post_s = hold_first_post_s
        self.ctx: ssl.SSLContext | None = None  # None: plain TCP (connect_delay_s then only delays the first bytes)
        if cert_file:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert_file, key_file)
            if h2_upstream is not None:
                self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.conns: list[Conn] = []
        self._posted: set[str] = set()  # sessions whose first POST was seen
        self._socks: list = []
        self._greenlets: set[gevent.Greenlet] = set()
        self._lsock = gsocket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(64)
        self.port = self._lsock.getsockname()[1]
        self._accepter = gevent.spawn(self._accept)

    @property
    def url(self) -> str:
        return f"{'https' if self.ctx else 'http'}://127.0.0.1:{self.port}"

    def reset(self, connect_delay_s: float | None = None, hold_first_post_s: float | None = None) -> None:
        """A fresh record (and optionally new delays) for the next trial."""
        self.conns = []
        self._posted = set()
        if connect_delay_s is not None:
            self.connect_delay_s = connect_delay_s
        if hold_first_post_s is not None:
            self.hold_first_post_s = hold_first_post_s

    def conn_count(self) -> int:
        """Connections accepted since the last reset (cheap, unlike `ProxyProcess.conns`)."""
        return len(self.conns)

    def close(self) -> None:
        self._accepter.kill(block=True, timeout=2)
        self._lsock.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        gevent.killall(list(self._greenlets), block=True, timeout=2)

    def _spawn(self, fn, *args) -> gevent.Greenlet:
        g = gevent.spawn(fn, *args)
        self._greenlets.add(g)
        g.link(self._greenlets.discard)
        return g

    def _accept(self) -> None:
        while True:
            sock, _ = self._lsock.accept()
            self._socks.append(sock)
            rec = Conn(len(self.conns) + 1, time.monotonic())
            self.conns.append(rec)
            self._spawn(self._serve, sock, rec)

    def _serve(self, sock, rec: Conn) -> None:
        up = None
        try:
            if self.connect_delay_s:
                gevent.sleep(self.connect_delay_s)
            if self.ctx is not None:
                sock = self.ctx.wrap_socket(sock, server_side=True)  # the handshake: now it is usable
                self._socks.append(sock)
                rec.alpn = sock.selected_alpn_protocol() or ""
            rec.ready = time.monotonic()
            up = gsocket.create_connection(self.h2_upstream if rec.alpn == "h2" else self.upstream, timeout=5)
            up.settimeout(None)
            self._socks.append(up)
            a = self._spawn(self._client_to_server, sock, up, rec)
            b = self._spawn(self._server_to_client, up, sock, rec)
            gevent.joinall([a, b], count=1)
        except (OSError, ssl.SSLError):
            pass
        finally:
            rec.closed = time.monotonic()
            for s in (sock, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _client_to_server(self, src, dst, rec: Conn) -> None:
        try:
            self._c2s(src, dst, rec)
        except (OSError, ssl.SSLError):
            pass  # either side went away: _serve closes both

    def _c2s(self, src, dst, rec: Conn) -> None:
        """Forward at once; parse request heads (and skip Content-Length bodies) to record them."""
        if rec.alpn == "h2":
            self._c2s_h2(src, dst, rec)
            return
        buf = b""
        body_left = 0
        raw = False  # after a WebSocket upgrade: frames, not requests
        while data := src.recv(65536):
            if not raw:
                buf += data
                while True:
                    if body_left:
                        n = min(body_left, len(buf))
                        cur = rec.requests[-1]
                        cur.body += buf[:max(0, min(n, BODY_KEPT - len(cur.body)))]
                        buf, body_left = buf[n:], body_left - n
                        if body_left:
                            break
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head, buf = buf[:end].decode("latin-1"), buf[end + 4:]
                    raw = self._record(head, rec)
                    body_left = _content_length(head)
                    if raw:
                        break
            dst.sendall(data)
        dst.shutdown(gsocket.SHUT_WR)

    def _c2s_h2(self, src, dst, rec: Conn) -> None:
        """Forward at once; read the client's HTTP/2 frames to record each stream's request."""
        reader = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="latin-1"))
        reader.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 30})  # it only reads: never a window to wait on
        reader.initiate_connection()
        reader.increment_flow_control_window((1 << 31) - 1 - 65535)
        while data := src.recv(65536):
            try:
                for ev in reader.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        h = dict(ev.headers or [])
                        self._record(f"{h.get(':method', '')} {h.get(':path', '')} HTTP/2", rec)
            except h2.exceptions.H2Error as e:  # the record would be wrong from here: say so loudly
                rec.requests.append(Req("H2-READ-ERROR", repr(e), time.monotonic()))
                raise OSError("h2 reader failed") from e
            reader.data_to_send()  # the reader's own frames go nowhere
            dst.sendall(data)
        dst.shutdown(gsocket.SHUT_WR)

    def _record(self, head: str, rec: Conn) -> bool:
        """One request head seen on `rec`; True when it upgrades the connection."""
        method, target = (head.split("\r\n", 1)[0].split(" ") + ["", ""])[:2]
        req = Req(method, target, time.monotonic())
        if method == "POST" and self.hold_first_post_s and req.sid and req.sid not in self._posted:
            self._posted.add(req.sid)
            req.held = True
        rec.requests.append(req)
        return "upgrade: websocket" in head.lower()

    def _server_to_client(self, src, dst, rec: Conn) -> None:
        try:
            self._s2c(src, dst, rec)
        except (OSError, ssl.SSLError):
            pass

    def _s2c(self, src, dst, rec: Conn) -> None:
        """Forward at once, except the first bytes of a held answer, which wait `hold_first_post_s`."""
        while data := src.recv(65536):
            req = rec.requests[-1] if rec.requests else None
            if rec.alpn == "h2":  # streams share the bytes: hold the next ones after the held POST
                req = next((r for r in rec.requests if r.held and not r.hold_done), None)
            if req is not None:
                if req.held and not req.hold_done:
                    req.hold_done = True
                    req.answered = time.monotonic() + self.hold_first_post_s  # when it is due, even if the client leaves first
                    gevent.sleep(self.hold_first_post_s)
                if not req.node and rec.alpn != "h2":
                    req.node = _node(data)
            dst.sendall(data)
            if req is not None and not req.answered:
                req.answered = time.monotonic()


def _content_length(head: str) -> int:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip())
    return 0


def _node(data: bytes) -> str:
    """The node header's value in a response's first bytes ("" when absent)."""
    text = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in text.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == NODE_HEADER:
            return value.strip()
    return ""


ANSWER_TIMEOUT_S = 30.0  # a `ProxyProcess` command's answer (a record of thousands of connections takes well under 1 s)


class ProxyProcess:
    """A `DelayProxy` in a process of its own, with the same face (`url`, `port`, `reset`, `conns`, `close`).

    Why: in the caller's gevent hub the proxy's forwarding queues behind the sioscale users' own greenlets, so
    a POST's answer reaches a sioscale user late while the user's next request leaves on its own timer; in
    benchmarks/browser_fidelity.py that alone moved sioscale's L4 connect rate from 53 % (users straight to
    HAProxy) to 13 % beside Chromium's 37-45 % (60 people a side, one run each, 2026-12-01), where Chromium,
    another process, met the proxy's hub only on the wire. In a process of its own the proxy delays both
    sides alike. Its times are `time.monotonic()`, the system-wide CLOCK_MONOTONIC, so comparable with the
    caller's. The child ends when its stdin closes (`close`, or the caller's death)."""

    def __init__(self, upstream: tuple[str, int], cert_file: str | None, key_file: str | None,
                 connect_delay_s: float = 0.0, hold_first_post_s: float = 0.0,
                 h2_upstream: tuple[str, int] | None = None) -> None:
        args = {"upstream": list(upstream), "cert_file": cert_file, "key_file": key_file,
                "connect_delay_s": connect_delay_s, "hold_first_post_s": hold_first_post_s,
                "h2_upstream": list(h2_upstream) if h2_upstream else None}
        self._proc = gsub.Popen([sys.executable, "-m", "tests._delayproxy", json.dumps(args)],
                                cwd=str(Path(__file__).resolve().parent.parent), stdin=gsub.PIPE,
                                stdout=gsub.PIPE, text=True, start_new_session=True)
        try:
            hello = self._read()
        except BaseException:
            self.close()
            raise
        self.port = int(hello["port"])
        self.url = str(hello["url"])

    def _read(self) -> dict:
        assert self._proc.stdout is not None
        try:
            with gevent.Timeout(ANSWER_TIMEOUT_S):
                line = self._proc.stdout.readline()
        except gevent.Timeout:
            self.close()  # a late answer would be read as the next command's: this proxy is done
            raise RuntimeError(f"the delay proxy process gave no answer in {ANSWER_TIMEOUT_S} s") from None
        if not line:
            raise RuntimeError(f"the delay proxy process ended (exit code {self._proc.poll()})")
        return json.loads(line)

    def _ask(self, cmd: dict) -> dict:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(cmd) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"the delay proxy process: {answer['error']}")
        return answer

    def reset(self, connect_delay_s: float | None = None, hold_first_post_s: float | None = None) -> None:
        self._ask({"cmd": "reset", "connect_delay_s": connect_delay_s, "hold_first_post_s": hold_first_post_s})

    def conn_count(self) -> int:
        return int(self._ask({"cmd": "count"})["count"])

    @property
    def conns(self) -> list[Conn]:
        out = self._ask({"cmd": "conns"})["conns"]
        return [Conn(**{**c, "requests": [Req(**{**r, "body": r["body"].encode("latin-1")}) for r in c["requests"]]})
                for c in out]

    def close(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - a stuck child is killed below, whatever went wrong
            pass
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _serve_forever(args: dict) -> None:
    """The child of `ProxyProcess`: a hello line, then one answer line per command line on stdin."""
    proxy = DelayProxy(tuple(args["upstream"]), args["cert_file"], args["key_file"], args["connect_delay_s"],
                       args["hold_first_post_s"], tuple(args["h2_upstream"]) if args["h2_upstream"] else None)
    try:
        print(json.dumps({"port": proxy.port, "url": proxy.url}), flush=True)
        stdin = FileObjectPosix(sys.stdin.fileno(), "r")  # cooperative: the proxy forwards while this waits
        for line in stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "reset":
                proxy.reset(cmd.get("connect_delay_s"), cmd.get("hold_first_post_s"))
                print(json.dumps({"ok": True}), flush=True)
            elif cmd["cmd"] == "count":
                print(json.dumps({"count": proxy.conn_count()}), flush=True)
            elif cmd["cmd"] == "conns":
                conns = [asdict(c) for c in proxy.conns]
                for c in conns:
                    for r in c["requests"]:
                        r["body"] = r["body"].decode("latin-1")
                print(json.dumps({"conns": conns}), flush=True)
            else:
                print(json.dumps({"error": f"unknown command {cmd['cmd']!r}"}), flush=True)
    finally:
        proxy.close()


if __name__ == "__main__":
    _serve_forever(json.loads(sys.argv[1]))
