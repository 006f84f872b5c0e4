"""Real people in real Chromium, for the fidelity check of issue 13 (parts 2 and 3): a subprocess.

Why a subprocess: Playwright's sync API runs its own event loop and does not mix with the gevent
patching that Locust (and the delay proxy) need, so the browser side lives in its own process,
started by `ChromiumPeople` (tests/_fidelity.py) in its own process group and always stopped.

Protocol: one JSON command a line on stdin, {"url", "people", "interval", "window", "start_at", "no_cache",
"prepare"};
for each person one JSON line on stdout (in start order), then {"done": true}. "ready" is written
once the browser is up. EOF on stdin ends the process.

Each person is a browser context of its own (its own cookie jar and connection pool, as a
separate browser profile would be), a page on the target's origin (the page itself is answered by
Playwright's router and the router is removed before the socket starts, so every request of the
socket goes through Chromium's real network stack), and the real socket.io-client bundle from
socket.io's client-dist. Instrumentation wraps XMLHttpRequest and WebSocket (installed before the
bundle, which reads `WebSocket` when it loads) to log each request: method, URL, the start of the
POST body, status and times; the socket's connect/upgrade/disconnect events are logged too.
People start one at a time `interval` apart; each is read and closed `window` seconds after its start.
With "prepare" all pages are loaded first and only their sockets start on schedule (bursts: see _batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

BUNDLE = Path(__file__).resolve().parent.parent / "targets/node/node_modules/socket.io/client-dist/socket.io.min.js"
CHROMIUM = "/usr/bin/chromium"

PAGE = "<!doctype html><html><head><link rel='icon' href='data:,'></head><body>sioscale person</body></html>"

INSTRUMENT = r"""
(() => {
  const T = () => performance.timeOrigin + performance.now();
  const log = window.__log = [];
  const X = XMLHttpRequest.prototype, open = X.open, send = X.send;
  X.open = function (m, u) { this.__r = {kind: 'xhr', method: m, url: String(u)}; return open.apply(this, arguments); };
  X.send = function (body) {
    const r = this.__r; r.t = T(); log.push(r);
    r.body = typeof body === 'string' ? body.slice(0, 64) : (body ? '<binary>' : '');
    this.addEventListener('loadend', () => {
      r.status = this.status; r.end = T();
      try { r.resp = String(this.responseText || '').slice(0, 120); } catch (e) { r.resp = ''; }
    });
    return send.apply(this, arguments);
  };
  const WS = window.WebSocket;
  const Wrapped = function (u, p) {
    const ws = p === undefined ? new WS(u) : new WS(u, p);
    const r = {kind: 'ws', method: 'WS', url: String(u), t: T()}; log.push(r);
    ws.addEventListener('open', () => { r.open = T(); });
    ws.addEventListener('error', () => { r.error = T(); });
    ws.addEventListener('close', (e) => { r.end = T(); r.code = e.code; });
    return ws;
  };
  Wrapped.prototype = WS.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) Wrapped[k] = WS[k];
  window.WebSocket = Wrapped;
})();
"""

START = r"""
(url) => {
  const T = () => performance.timeOrigin + performance.now();
  const st = window.__st = {t: T()};
  const s = window.__socket = io(url, {reconnection: false});
  const e = s.io.engine;
  e.on('open', () => { st.sid = e.id; });
  e.on('upgrade', () => { st.upgrade = T(); });
  e.on('upgradeError', (err) => { st.upgrade_error = String(err && err.message); });
  s.on('connect', () => { st.connect = T(); });
  s.on('connect_error', (err) => { st.connect_error = T(); st.error = String(err && err.message); });
  s.on('disconnect', (reason, d) => {
    st.disconnect = T(); st.reason = reason;
    st.description = String(d && (d.description || d.message || d.context) || '');
  });
}
"""

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
               "--disable-features=LocalNetworkAccessChecks"]
"""--ignore-certificate-errors: the delay proxy's test certificate, at the network layer (the context's
ignore_https_errors let some TLS connects fail once first, and not WebSockets). LocalNetworkAccessChecks:
a page answered by the router has no address space of its own, so Chromium 156 treats the socket's
loopback WebSocket as a public-to-local request and blocks it (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS);
a page loaded from the server itself would be loopback-to-loopback, which is what this restores."""

READ = "() => ({st: window.__st, log: window.__log, connected: window.__socket.connected, "\
       "transport: window.__socket.io.engine ? window.__socket.io.engine.transport.name : ''})"


def _start(browser: Any, url: str, bundle: str, no_cache: bool = False, go: bool = True) -> tuple[Any, Any]:
    """One person: a fresh context and page on `url`'s origin, socket started (`go`; else ready to); (context, page).
    `no_cache`: DevTools' "Disable cache" (Network.setCacheDisabled), an experiment on where a GET's
    time goes before it reaches the connection pool (the HTTP cache sits in front of it, a POST skips it)."""
    ctx = browser.new_context()
    page = ctx.new_page()
    if no_cache:
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    origin = url.rstrip("/") + "/"
    page.route(origin, lambda r: r.fulfill(status=200, content_type="text/html", body=PAGE))
    page.goto(origin)
    page.unroute_all()  # from here on every request goes to the network as it would in a browser
    page.add_script_tag(content=INSTRUMENT)
    page.add_script_tag(content=bundle)
    if go:
        page.evaluate(START, url)
    return ctx, page


def _batch(browser: Any, cmd: dict[str, Any], bundle: str) -> None:
    """Start `people` people `interval` apart from `start_at`; read and close each `window` after its start."""
    n, interval, window = int(cmd["people"]), float(cmd["interval"]), float(cmd["window"])
    # `prepare`: every page of the batch is loaded first and only the socket starts on schedule (a page
    # load takes 0.1-0.6 s on a busy machine, far more than a burst's spacing), from then or `start_at`
    ready = [_start(browser, cmd["url"], bundle, bool(cmd.get("no_cache")), go=False)
             for _ in range(n)] if cmd.get("prepare") else []
    start_at = max(float(cmd.get("start_at") or time.time()), time.time() if ready else 0.0)
    live: list[tuple[float, int, Any, Any]] = []  # (read at, person, context, page)
    started = 0
    while started < n or live:
        now = time.time()
        next_start = start_at + started * interval if started < n else float("inf")
        next_read = live[0][0] if live else float("inf")
        if min(next_start, next_read) > now:
            time.sleep(min(min(next_start, next_read) - now, 0.05))
            continue
        if next_read <= next_start:
            _, i, ctx, page = live.pop(0)
            try:
                out = page.evaluate(READ)
            except Exception as e:  # noqa: BLE001 - a crashed page is a result, not a crash of the batch
                out = {"st": {}, "log": [], "connected": False, "error": str(e)[:200]}
            ctx.close()
            print(json.dumps({"person": i, **out}), flush=True)
            continue
        if ready:
            ctx, page = ready.pop(0)
            page.evaluate(START, cmd["url"])
        else:
            ctx, page = _start(browser, cmd["url"], bundle, bool(cmd.get("no_cache")))
        live.append((time.time() + window, started, ctx, page))
        started += 1
    print(json.dumps({"done": True}), flush=True)


def main() -> int:
    """Launch the system Chromium headless and serve batches until stdin closes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--chromium", default=CHROMIUM)
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright  # here: importing it is the caller's check

    bundle = BUNDLE.read_text()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=LAUNCH_ARGS)
        print(json.dumps({"ready": True, "version": browser.version}), flush=True)
        for line in sys.stdin:
            if line.strip():
                _batch(browser, json.loads(line), bundle)
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
