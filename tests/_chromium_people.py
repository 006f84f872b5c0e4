"""Real people in real Chromium, for the fidelity check of issue 13 (parts 2 and 3): a subprocess.

Why a subprocess: Playwright's sync API runs its own event loop and does not mix with the gevent
patching that Locust (and the delay proxy) need, so the browser side lives in its own process,
started by `ChromiumPeople` (tests/_fidelity.py) in its own process group and always stopped.

Protocol: one JSON command a line on stdin, {"url", "people", "interval", "window", "start_at", "starts",
"no_cache", "prepare", "ahead", "emit", "page"};
for each person one JSON line on stdout (in start order), then {"done": true}. "ready" is written
once the browser is up. EOF on stdin ends the process.

Each person is a browser context of its own (its own cookie jar and connection pool, as a
separate browser profile would be), a page on the target's origin (the page itself is answered by
Playwright's router and the router is removed before the socket starts, so every request of the
socket goes through Chromium's real network stack), and the real socket.io-client bundle from
socket.io's client-dist. Instrumentation wraps XMLHttpRequest and WebSocket (installed before the
bundle, which reads `WebSocket` when it loads) to log each request: method, URL, the start of the
POST body, status and times; the socket's connect/upgrade/disconnect events are logged too.
People start one at a time `interval` apart (or at the epoch times `starts`; with "ahead" each page is loaded
ahead so that its socket starts on schedule); each is read and closed `window` seconds after its start.
With "prepare" all pages are loaded first and only their sockets start on schedule (bursts: see _batch).
"emit": an event the page emits with an ack in its connect handler, as the seed's chat user joins its room.
"page": the page's origin. By default another origin of the same site (the target's scheme, 127.0.0.1, port 9
where nothing listens; the router answers the page): loading a page from the target's own origin opens a
connection to the target for the navigation (the router answers the request, not the connect), 100-200 ms
before the socket starts, and the handshake later reuses it; under per-connection round robin every
connection anyone opens in between then shifts which node the session's later connections reach (measured:
real Chromium upgraded 14 of 405 sessions behind L4 where sioscale's users, which load no page, upgraded 2).
From another origin the target's pool starts empty, as a sioscale user's does. The socket is then
cross-origin: it asks `withCredentials` (an app whose socket.io lives on another origin sets it to keep a
sticky cookie; same site, so the balancer's cookie is first-party), the nodes answer CORS with credentials,
and polling requests are simple requests (no preflight). "target" loads the page from the target's origin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
([url, emit]) => {
  const T = () => performance.timeOrigin + performance.now();
  const st = window.__st = {t: T()};
  const s = window.__socket = io(url, {reconnection: false, withCredentials: true});
  const e = s.io.engine;
  e.on('open', () => { st.sid = e.id; });
  e.on('upgrade', () => { st.upgrade = T(); });
  e.on('upgradeError', (err) => { st.upgrade_error = String(err && err.message); });
  s.on('connect', () => {
    st.connect = T();
    // the seed's chat user joins its room at connect; socket.io-client runs this handler a microtask after the
    // poll that brought the CONNECT reply, which has already sent the next poll (docs/protocol.md section 6)
    if (emit) s.emit(emit, 'fidelity', () => { st.ack = T(); });
  });
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


def page_url(url: str, page_origin: str = "") -> str:
    """The page's URL: `page_origin`; "target" for `url`'s own origin; by default the same scheme on 127.0.0.1:9."""
    if page_origin == "target":
        return url.rstrip("/") + "/"
    if page_origin:
        return page_origin.rstrip("/") + "/"
    return f"{urlsplit(url).scheme}://127.0.0.1:9/"


def _start(browser: Any, url: str, bundle: str, no_cache: bool = False, go: bool = True, emit: str = "",
           page_origin: str = "") -> tuple[Any, Any]:
    """One person: a fresh context and page on `url`'s origin, socket started (`go`; else ready to); (context, page).
    `no_cache`: DevTools' "Disable cache" (Network.setCacheDisabled), an experiment on where a GET's
    time goes before it reaches the connection pool (the HTTP cache sits in front of it, a POST skips it)."""
    ctx = browser.new_context()
    page = ctx.new_page()
    if no_cache:
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    origin = page_url(url, page_origin)
    page.route(origin, lambda r: r.fulfill(status=200, content_type="text/html", body=PAGE))
    page.goto(origin)
    page.unroute_all()  # from here on every request goes to the network as it would in a browser
    page.add_script_tag(content=INSTRUMENT)
    page.add_script_tag(content=bundle)
    if go:
        page.evaluate(START, [url, emit])
    return ctx, page


def _batch(browser: Any, cmd: dict[str, Any], bundle: str) -> None:
    """Start `people` people at `starts` (epoch s; default `interval` apart from `start_at`); read and close each
    `window` after its start. With "ahead" a person's page is loaded ahead (the next one while the current one
    connects; all of them first with "prepare"), so its socket starts on schedule: a page load takes 0.1-0.6 s,
    and a start late by that much lands at a random place among the other people's connections, where
    sioscale's users start on time (under per-connection round robin, that decides which node a connection
    reaches). Without it a page loads at its start time: the loading browser then does not slow the person
    before it, which matters for the tests' short windows on a busy machine (an h2 session seen not connected
    within 0.8 s while the next page loaded)."""
    n, interval, window = int(cmd["people"]), float(cmd["interval"]), float(cmd["window"])
    emit, page_origin = str(cmd.get("emit") or ""), str(cmd.get("page") or "")

    def load() -> tuple[Any, Any]:
        return _start(browser, cmd["url"], bundle, bool(cmd.get("no_cache")), go=False, page_origin=page_origin)

    ahead = bool(cmd.get("ahead"))
    ready = [load() for _ in range(n)] if cmd.get("prepare") else [load()] if n and ahead else []
    t0 = max(float(cmd.get("start_at") or time.time()), time.time())
    starts = [float(t) for t in cmd.get("starts") or []] or [t0 + i * interval for i in range(n)]
    live: list[tuple[float, int, Any, Any]] = []  # (read at, person, context, page)
    started = 0
    while started < n or live:
        now = time.time()
        next_start = starts[started] if started < n else float("inf")
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
        ctx, page = ready.pop(0) if ready else load()
        page.evaluate(START, [cmd["url"], emit])
        live.append((time.time() + window, started, ctx, page))  # started in order: read in order
        started += 1
        if ahead and started < n and not ready:
            ready.append(load())  # the next person's page, while this one connects
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
