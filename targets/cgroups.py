"""Resource-limited nodes: put a process in a CPU/memory-limited cgroup and read it back.

Why: a node that shares the machine's cores with the generator gives capacity figures of this
box, not of a node a user can buy. Performance engineers size Socket.IO nodes as containers with
CPU and memory limits, so sioscale runs each node the same way: one cgroup per node, CPU quota
(CFS bandwidth, period 100 ms) and a memory limit, like Kubernetes `limits`.

Both layouts are handled:
- cgroup v1: the `cpu` hierarchy (cpu.cfs_period_us, cpu.cfs_quota_us, cpu.stat with
  throttled_time in ns) and the `memory` hierarchy (memory.limit_in_bytes, memory.usage_in_bytes,
  memory.oom_control's `oom_kill`); one group in each.
- cgroup v2: one group on the unified mount (cpu.max, memory.max, memory.current, cpu.stat with
  throttled_usec, memory.events' `oom_kill`), with `+cpu +memory` in the parents' subtree_control.
v1 is preferred where its controllers are mounted and writable (v2 mounts beside v1 often have
no controllers). Swap is left alone: no memory.memsw / memory.swap.max limit is written, so on a
machine with swap a node at its limit swaps before it is OOM-killed.

Groups are named `sioscale-<supervisor pid>-<node id>` under a parent `sioscale` group at the
hierarchy's root; the parent stays (other supervisors may share it), node groups are removed at
teardown, and `sweep_leftovers` removes those of a supervisor that is gone (SIGKILLed) and never
touches any other group. Every root path is a parameter, so the v2 path is tested on a fake tree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PARENT = "sioscale"
PERIOD_US = 100_000
"""CFS period: 100 ms, the kernel's and Kubernetes' default; quota = cpus * period."""
MIN_QUOTA_US = 1_000
"""The kernel refuses a quota under 1 ms: the smallest --node-cpus is MIN_QUOTA_US / PERIOD_US."""
MIN_MEMORY_MB = 64
MOUNTS = Path("/proc/self/mounts")
_NAME_RE = re.compile(r"^sioscale-(\d+)-(.+)$")


class CgroupError(RuntimeError):
    """Limits that cannot be applied here; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class NodeLimits:
    """The limits of one node: CPUs (1.0 = one core) and memory in MiB; None = not limited."""

    cpus: float | None = None
    memory_mb: int | None = None

    def any(self) -> bool:
        return self.cpus is not None or self.memory_mb is not None

    def quota_us(self) -> int | None:
        return None if self.cpus is None else max(MIN_QUOTA_US, round(self.cpus * PERIOD_US))

    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else int(self.memory_mb) * 1024 * 1024


@dataclass(frozen=True)
class Layout:
    """Where the machine's cgroup controllers are: v1 (one root per controller) or v2 (one root)."""

    version: int
    cpu_root: Path
    memory_root: Path

    def parents(self) -> list[Path]:
        """The `sioscale` parent group of every hierarchy used (one in v2, cpu then memory in v1)."""
        roots = [self.cpu_root] if self.cpu_root == self.memory_root else [self.cpu_root, self.memory_root]
        return [r / PARENT for r in roots]


# ------------------------------------------------------------------ detection
def _mounts(mounts: Path) -> list[tuple[Path, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup/cgroup2 mount listed in a mounts file."""
    out = []
    try:
        text = mounts.read_text()
    except OSError:
        return []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
            out.append((Path(point), parts[2], set(parts[3].split(","))))
    return out


def _writable(path: Path, opts: set[str]) -> bool:
    return "ro" not in opts and os.access(path, os.W_OK)


def detect(mounts: Path | str = MOUNTS, cpu: bool = True, memory: bool = True) -> Layout:
    """The layout that can apply the limits asked for, or CgroupError saying why not and the fix.

    `cpu` / `memory`: which controllers are needed. v1 wins where all needed v1 controllers are
    mounted and writable; else a writable cgroup2 mount whose cgroup.controllers lists them.
    """
    found = _mounts(Path(mounts))
    need = [c for c, on in (("cpu", cpu), ("memory", memory)) if on]
    v1: dict[str, Path] = {}
    v1_problem = None
    for ctl in ("cpu", "memory"):  # an unneeded controller is still used when present (its stats)
        hits = [(p, o) for p, t, o in found if t == "cgroup" and ctl in o]
        if hits and _writable(*hits[0]):
            v1[ctl] = hits[0][0]
        elif ctl in need and v1_problem is None:
            v1_problem = (f"no cgroup v1 {ctl} controller is mounted" if not hits else
                          f"{hits[0][0]} is not writable (run as root, or mount the {ctl} controller read-write)")
    if v1_problem is None and v1:
        root = v1.get("cpu") or v1["memory"]
        return Layout(1, v1.get("cpu", root), v1.get("memory", root))
    v2_problem = "no cgroup2 mount"
    for point, fstype, opts in found:
        if fstype != "cgroup2":
            continue
        offered = _read(point / "cgroup.controllers").split()
        missing = [c for c in need if c not in offered]
        if missing:
            v2_problem = f"the cgroup2 mount {point} offers no {' or '.join(missing)} controller"
        elif not _writable(point, opts):
            v2_problem = f"the cgroup2 mount {point} is not writable (run as root)"
        else:
            return Layout(2, point, point)
    raise CgroupError(f"cgroups unavailable: {v1_problem}, and {v2_problem}; --node-cpus/--node-memory-mb "
                      "need a writable cpu/memory cgroup (run as root with the controllers mounted, "
                      "or drop the limits)")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value.strip()!r} to {path}: {e.strerror or e}; "
                          "run as root with the cgroup controllers mounted read-write") from None


def _keyed(text: str) -> dict[str, int]:
    """'key value' lines (cpu.stat, memory.events, memory.oom_control) → {key: int}."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[k] = int(v.strip())
    return out


# ---------------------------------------------------------------------- groups
def _ensure_parent(layout: Layout) -> None:
    """The `sioscale` parent in each hierarchy; in v2 with +cpu +memory delegated down to it."""
    for parent in layout.parents():
        if layout.version == 2:
            _enable_v2(parent.parent)
        try:
            parent.mkdir()
        except FileExistsError:
            pass
        except OSError as e:
            raise CgroupError(f"cannot create the cgroup {parent}: {e.strerror}; run as root") from None
        if layout.version == 2:
            _enable_v2(parent)


def _enable_v2(group: Path) -> None:
    """Write `+cpu +memory` (those the group offers) into a v2 group's subtree_control unless on already."""
    on = _read(group / "cgroup.subtree_control").split()
    offered = _read(group / "cgroup.controllers").split()
    want = [c for c in ("cpu", "memory") if c in offered and c not in on]
    if want:
        _write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in want))


@dataclass
class NodeGroup:
    """One node's cgroup (a directory per hierarchy); its readers are what a sampler polls."""

    layout: Layout
    name: str
    limits: NodeLimits

    @property
    def cpu_dir(self) -> Path:
        return self.layout.cpu_root / PARENT / self.name

    @property
    def memory_dir(self) -> Path:
        return self.layout.memory_root / PARENT / self.name

    @property
    def paths(self) -> list[Path]:
        """Every directory of this group (one in v2 or co-mounted v1; else the cpu and the memory group)."""
        return [self.cpu_dir] if self.cpu_dir == self.memory_dir else [self.cpu_dir, self.memory_dir]

    def procs_files(self) -> list[str]:
        """The cgroup.procs files a child writes its own pid into before exec (procs.Child)."""
        return [str(p / "cgroup.procs") for p in self.paths]

    def create(self) -> NodeGroup:
        """Make the directories and write the limits (before any process joins: never unlimited)."""
        _ensure_parent(self.layout)
        for p in self.paths:
            try:
                p.mkdir()
            except FileExistsError:
                if _read(p / "cgroup.procs").split():
                    raise CgroupError(f"cgroup {p} is in use by running processes (another cluster in "
                                      "this process?): stop it first") from None
            except OSError as e:
                self.remove(timeout=0.5)
                raise CgroupError(f"cannot create the cgroup {p}: {e.strerror}; run as root") from None
        try:
            self._write_limits()
        except BaseException:
            self.remove(timeout=0.5)
            raise
        return self

    def _write_limits(self) -> None:
        """Only the limits asked for are written: a new group is unlimited in every controller."""
        quota, mem = self.limits.quota_us(), self.limits.memory_bytes()
        if self.layout.version == 2:
            if quota is not None:
                _write(self.cpu_dir / "cpu.max", f"{quota} {PERIOD_US}")
            if mem is not None:
                _write(self.memory_dir / "memory.max", str(mem))
            return
        if quota is not None:
            _write(self.cpu_dir / "cpu.cfs_period_us", str(PERIOD_US))
            _write(self.cpu_dir / "cpu.cfs_quota_us", str(quota))
        if mem is not None:
            _write(self.memory_dir / "memory.limit_in_bytes", str(mem))

    # ------------------------------------------------------------- read back
    def cpu_quota(self) -> tuple[int | None, int]:
        """(quota µs or None for unlimited, period µs) as the kernel holds them."""
        if self.layout.version == 2:
            q, _, p = _read(self.cpu_dir / "cpu.max").strip().partition(" ")
            return (None if q in ("max", "") else int(q)), int(p or PERIOD_US)
        quota = int(_read(self.cpu_dir / "cpu.cfs_quota_us").strip() or -1)
        period = int(_read(self.cpu_dir / "cpu.cfs_period_us").strip() or PERIOD_US)
        return (None if quota < 0 else quota), period

    def memory_limit(self) -> int | None:
        """The memory limit in bytes as the kernel holds it (None: unlimited)."""
        name = "memory.max" if self.layout.version == 2 else "memory.limit_in_bytes"
        raw = _read(self.memory_dir / name).strip()
        if raw in ("", "max"):
            return None
        v = int(raw)
        return None if v >= 1 << 62 else v  # v1 reports "unlimited" as a page-rounded 2^63 - 1

    def cpu_stat(self) -> dict[str, int]:
        """CPU throttling, one shape for v1 and v2: nr_periods, nr_throttled, throttled_usec.

        v1's throttled_time (ns) is converted to µs; a counter the kernel does not give is absent.
        """
        raw = _keyed(_read(self.cpu_dir / "cpu.stat"))
        out: dict[str, int] = {k: raw[k] for k in ("nr_periods", "nr_throttled") if k in raw}
        if "throttled_usec" in raw:
            out["throttled_usec"] = raw["throttled_usec"]
        elif "throttled_time" in raw:
            out["throttled_usec"] = raw["throttled_time"] // 1000
        return out

    def memory_usage(self) -> int | None:
        """Bytes charged to the group now (v1 memory.usage_in_bytes, v2 memory.current)."""
        name = "memory.current" if self.layout.version == 2 else "memory.usage_in_bytes"
        raw = _read(self.memory_dir / name).strip()
        return int(raw) if raw.isdigit() else None

    def memory_peak(self) -> int | None:
        """The most bytes ever charged (v1 max_usage_in_bytes, v2 memory.peak where the kernel has it)."""
        name = "memory.peak" if self.layout.version == 2 else "memory.max_usage_in_bytes"
        raw = _read(self.memory_dir / name).strip()
        return int(raw) if raw.isdigit() else None

    def oom_kills(self) -> int | None:
        """Processes of this group the OOM killer has killed; None when the kernel does not count them.

        v1: memory.oom_control's `oom_kill` (kernel 4.13+); v2: memory.events' `oom_kill`.
        """
        name = "memory.events" if self.layout.version == 2 else "memory.oom_control"
        return _keyed(_read(self.memory_dir / name)).get("oom_kill")

    def limit_hits(self) -> int | None:
        """How often usage hit the limit (v1 memory.failcnt, v2 memory.events `max`): an OOM hint."""
        if self.layout.version == 2:
            return _keyed(_read(self.memory_dir / "memory.events")).get("max")
        raw = _read(self.memory_dir / "memory.failcnt").strip()
        return int(raw) if raw.isdigit() else None

    def pids(self) -> list[int]:
        return [int(x) for x in _read(self.cpu_dir / "cgroup.procs").split() if x.isdigit()]

    def remove(self, timeout: float = 2.0) -> list[str]:
        """rmdir every directory (after its processes are gone); returns the ones that would not go."""
        return [str(p) for p in self.paths if not _rmdir(p, timeout)]

    def info(self) -> dict[str, object]:
        return {"name": self.name, "paths": [str(p) for p in self.paths]}


def _rmdir(path: Path, timeout: float) -> bool:
    """Remove one (empty) group; retried while the kernel still lists exiting tasks (EBUSY)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def group_name(node_id: str, pid: int | None = None) -> str:
    return f"sioscale-{os.getpid() if pid is None else pid}-{node_id}"


def make_groups(layout: Layout, node_ids: list[str], limits: NodeLimits) -> dict[str, NodeGroup]:
    """One created group per node (limits written); on a failure the ones made are removed again."""
    made: dict[str, NodeGroup] = {}
    try:
        for nid in node_ids:
            made[nid] = NodeGroup(layout, group_name(nid), limits).create()
    except BaseException:
        for g in made.values():
            g.remove(timeout=0.5)
        raise
    return made


def sweep_leftovers(layout: Layout) -> list[str]:
    """Remove `sioscale-<pid>-*` groups whose supervisor pid is gone (a SIGKILLed one); return them.

    Only names of that form under the `sioscale` parent are looked at; a group of a live pid,
    or one that still holds processes (rmdir fails), is left as it is.
    """
    removed = []
    for parent in layout.parents():
        try:
            entries = sorted(parent.iterdir())
        except OSError:
            continue
        for d in entries:
            m = _NAME_RE.match(d.name)
            if m and d.is_dir() and not psutil.pid_exists(int(m.group(1))) and _rmdir(d, 0.0):
                removed.append(str(d))
    return removed


def attach_self(procs_files: list[str]) -> None:
    """Write this process's pid into each cgroup.procs: called in a child between fork and exec.

    Raising here makes Popen fail and the child never exec: a node never runs unlimited.
    """
    pid = str(os.getpid()).encode()
    for f in procs_files:
        fd = os.open(f, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
