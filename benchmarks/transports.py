"""Which HTTP and WebSocket client to build the driver on: measured, per client CPU-second.

Run: .venv/bin/python benchmarks/transports.py [--n 1500]
Starts one local python-socketio node (uvicorn) in its own process group, then, sequentially
and in this one gevent-patched process (as under Locust):
- HTTP: Engine.IO polling handshakes (GET ?EIO=4&transport=polling) over one keep-alive
  connection, with sioscale's HttpSession vs geventhttpclient's HTTPClient;
- WebSocket: websocket-only Engine.IO sessions (connect, read open packet, CONNECT "40",
  read the namespace ack, close) with sioscale's WebSocket vs websocket-client vs wsproto
  over a gevent socket.
Figures are operations per second of this process's CPU (getrusage user+sys), so the server's
CPU use on the shared cores does not skew them. Last line: one JSON object.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._server import python_node  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # microsecond resolution (os.times ticks at 10 ms)
    return r.ru_utime + r.ru_stime


def measure(fn, n: int) -> float:
    fn()  # warm up (imports, first connection)
    c0 = cpu()
    for _ in range(n):
        fn()
    return n / max(cpu() - c0, 1e-9)


HS_PATH = "/socket.io/?EIO=4&transport=polling"
WS_PATH = "/socket.io/?EIO=4&transport=websocket"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    args = ap.parse_args()
    from locustfiles.sio.transport import Endpoint

    with python_node() as url:
        ep = Endpoint.from_url(url)
        out: dict[str, float] = {}
        out.update(bench_http(ep, args.n))
        out.update(bench_websocket(ep, args.n // 2))
    print(json.dumps(results(out)))


def bench_http(ep, n: int) -> dict[str, float]:
    """Polling handshakes per CPU-second: sioscale's HttpSession, then geventhttpclient's HTTPClient."""
    from locustfiles.sio.transport import HttpSession

    out: dict[str, float] = {}
    s = HttpSession(ep)

    def http_mine() -> None:
        r = s.request("GET", HS_PATH)
        assert r.status == 200 and r.body[:1] == b"0"

    out["http_sioscale_per_cpu_s"] = measure(http_mine, n)

    from geventhttpclient import HTTPClient

    ghc = HTTPClient(ep.host, ep.port, concurrency=1)

    def http_ghc() -> None:
        r = ghc.get(HS_PATH)
        body = r.read()
        assert r.status_code == 200 and body[:1] == b"0"

    out["http_geventhttpclient_per_cpu_s"] = measure(http_ghc, n)
    ghc.close()
    return out


def bench_websocket(ep, n: int) -> dict[str, float]:
    """Websocket-only sessions per CPU-second: sioscale's WebSocket, websocket-client, wsproto."""
    from locustfiles.sio.transport import WebSocket

    out: dict[str, float] = {}

    def ws_mine() -> None:
        ws = WebSocket.connect(ep, WS_PATH)
        assert ws.recv()[0] == "0"
        ws.send("40")
        assert ws.recv().startswith("40")
        ws.close()

    out["ws_sioscale_per_cpu_s"] = measure(ws_mine, n)

    import websocket  # websocket-client

    def ws_wsc() -> None:
        ws = websocket.create_connection(f"ws://{ep.host}:{ep.port}{WS_PATH}", timeout=10)
        assert ws.recv()[0] == "0"
        ws.send("40")
        assert ws.recv().startswith("40")
        ws.close()

    out["ws_websocket_client_per_cpu_s"] = measure(ws_wsc, n)
    out["ws_wsproto_per_cpu_s"] = measure(wsproto_session(ep), n)
    return out


def wsproto_session(ep):
    """The op for wsproto over a gevent socket: one websocket-only Engine.IO session (imports done here, once)."""
    import socket

    import wsproto
    from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

    def ws_wsproto() -> None:
        sock = socket.create_connection((ep.host, ep.port), timeout=10)
        conn = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        sock.sendall(conn.send(Request(host=ep.host_header, target=WS_PATH)))
        texts: list[str] = []

        def pump(until) -> None:
            while not until():
                conn.receive_data(sock.recv(65536))
                for ev in conn.events():
                    if isinstance(ev, Message):
                        texts.append(ev.data)
                    elif isinstance(ev, AcceptConnection | CloseConnection):
                        texts.append("")

        pump(lambda: len(texts) >= 2)
        assert texts[1][0] == "0"
        sock.sendall(conn.send(TextMessage(data="40")))
        pump(lambda: len(texts) >= 3)
        assert texts[2].startswith("40")
        sock.sendall(conn.send(CloseConnection(code=1000)))
        sock.close()

    return ws_wsproto


def results(out: dict[str, float]) -> dict[str, float]:
    """Print one line per figure; return them rounded, with the sioscale-vs-other ratios (the JSON line)."""
    for k, v in out.items():
        print(f"{k:36s} {v:9.0f}")
    out = {k: round(v, 1) for k, v in out.items()}
    out["http_ratio_sioscale_vs_geventhttpclient"] = round(
        out["http_sioscale_per_cpu_s"] / out["http_geventhttpclient_per_cpu_s"], 2
    )
    out["ws_ratio_sioscale_vs_websocket_client"] = round(
        out["ws_sioscale_per_cpu_s"] / out["ws_websocket_client_per_cpu_s"], 2
    )
    out["ws_ratio_sioscale_vs_wsproto"] = round(out["ws_sioscale_per_cpu_s"] / out["ws_wsproto_per_cpu_s"], 2)
    return out


if __name__ == "__main__":
    main()
