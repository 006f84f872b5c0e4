"""What running Debian's nginx as one cluster's balancer needs beyond its config text.

nginx is built to be a root daemon with its files under /var and /run; here it runs in the
foreground in the cluster's workdir (`-p WORKDIR -e stderr -g 'daemon off;'`), so this module
finds what the binary was built with (`nginx -V`: version, the stream module built in or
loadable), runs its own config check (`nginx -t`) before the real start so a bad config is one
line and not a 15 s wait, and removes worker processes that a SIGKILLed master left behind
(nginx workers do not die with their master; they keep the port and the cwd).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import re
import subprocess
from pathlib import Path

import psutil

INSTALL = "apt-get install nginx libnginx-mod-stream"
STREAM_MODULE = "ngx_stream_module.so"
DEFAULT_MODULES = "/usr/lib/nginx/modules"  # Debian's --modules-path
MIN_VERSION = (1, 19, 5)  # `-e stderr` (1.19.5); `hash ... consistent` is older (1.7.2)
WORKER_TITLE = "nginx: worker process"


class NginxError(RuntimeError):
    """nginx cannot run a given config here; the message is one line naming the fix."""


@functools.lru_cache(maxsize=8)
def build_info(binary: str) -> str:
    """`nginx -V`'s text (version and configure arguments), once per binary."""
    try:
        r = subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NginxError(f"{binary} -V failed: {e}; reinstall it ({INSTALL})") from None
    return r.stderr + r.stdout


def check_version(binary: str) -> None:
    """NginxError when `binary` is older than MIN_VERSION (or does not say its version)."""
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", build_info(binary))
    if m is None:
        raise NginxError(f"{binary} -V does not name an nginx version: is it nginx? ({INSTALL})")
    version = tuple(int(x) for x in m.groups())
    if version < MIN_VERSION:
        raise NginxError(f"{binary} is nginx {'.'.join(m.groups())}; sioscale needs "
                         f"{'.'.join(map(str, MIN_VERSION))} or newer ({INSTALL})")


def stream_module(binary: str) -> str | None:
    """The ngx_stream_module.so to `load_module` for the L4 policy; None when it is built in.

    Debian builds the stream module as a separate package (libnginx-mod-stream), loaded from
    the binary's --modules-path (SIOSCALE_NGINX_MODULES overrides the directory).
    """
    info = build_info(binary)
    if re.search(r"--with-stream(\s|$)", info):
        return None
    m = re.search(r"--modules-path=(\S+)", info)
    directory = os.environ.get("SIOSCALE_NGINX_MODULES") or (m.group(1) if m else DEFAULT_MODULES)
    path = Path(directory) / STREAM_MODULE
    if not path.is_file():
        raise NginxError(f"nginx's stream module (L4 and TLS-on-TCP policies) is missing: no {path}; "
                         "apt-get install libnginx-mod-stream")
    return str(path)


def worker_user() -> str | None:
    """The user for nginx's `user` directive: this one when running as root, else None (not needed)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwuid(os.geteuid()).pw_name


def argv(binary: str, workdir: Path, conf: Path) -> list[str]:
    """The foreground command for `conf`, with `workdir` as nginx's prefix and its log on stderr."""
    return [binary, "-p", str(workdir) + "/", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]


def check_config(binary: str, workdir: Path, conf: Path) -> None:
    """`nginx -t` on the rendered file; NginxError with nginx's own complaint in one line."""
    (workdir / "nginx-temp").mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run([*argv(binary, workdir, conf), "-t", "-q"], capture_output=True, text=True,
                           timeout=20, check=False, cwd=str(workdir))
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NginxError(f"nginx -t could not run: {e}") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "[emerg]" in ln), lines[0] if lines else f"exit code {r.returncode}")
        why = re.sub(r"^\S+ \S+ \[emerg\] \d+#\d+: ", "", why)
        raise NginxError(f"nginx config check failed: {why} (config: {conf})")


RENDERED_MARK = "Rendered by targets/render.py for one sioscale cluster"  # nginx.conf.j2's first line


def sweep_orphans(workdir: Path) -> list[int]:
    """Kill sioscale's nginx workers whose master is gone; their pids.

    A SIGKILLed master leaves its worker running, still holding the listening port (the cluster
    arms SIGTERM as the master's parent-death signal, which it passes on, so this is the rare
    case: the master itself SIGKILLed, or dead between fork and arming). Such a worker is
    sioscale's when its cwd, the workdir its cluster ran nginx in, is `workdir`, holds an
    nginx.conf that sioscale rendered, or was a temporary cluster workdir since removed.
    Workers with a live master are never touched, whoever runs them.
    """
    killed: list[int] = []
    target = str(workdir.resolve())
    for p in psutil.process_iter(["cmdline", "ppid"]):
        with contextlib.suppress(psutil.Error):
            if not _title(p.info["cmdline"]).startswith(WORKER_TITLE) or _master_alive(p.info["ppid"]):
                continue
            if _sioscale_workdir(p.cwd(), target):
                p.kill()
                killed.append(p.pid)
    return killed


def _sioscale_workdir(cwd: str, target: str) -> bool:
    if cwd == target:
        return True
    if cwd.endswith(" (deleted)"):
        return Path(cwd.removesuffix(" (deleted)")).name.startswith("sioscale-cluster-")
    try:
        with open(Path(cwd) / "nginx.conf", encoding="utf-8", errors="replace") as f:
            return RENDERED_MARK in f.readline()
    except OSError:
        return False


def _master_alive(ppid: int | None) -> bool:
    if not ppid or ppid == 1:
        return False
    try:
        return _title(psutil.Process(ppid).cmdline()).startswith("nginx: master")
    except psutil.Error:
        return False


def _title(cmdline: list[str] | None) -> str:
    """An nginx process's title: it rewrites its argv in place, which psutil may split at the spaces
    ('nginx:', 'master', 'process', ...) or keep whole ('nginx: worker process')."""
    return " ".join(cmdline or [])
