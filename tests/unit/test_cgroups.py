"""targets.cgroups against fake cgroup trees: detection, the v2 writes, v1/v2 parsing, the sweep, OOM deaths.

The v2 path cannot run on the CI machine (its cgroup2 mount has no controllers), so it is checked
here on a tree of plain files laid out as the kernel lays them; v1 is also run for real in
tests/integration/test_cgroup_nodes.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from contract.config import ClusterConfig
from targets import cgroups
from targets.cgroups import CgroupError, Layout, NodeGroup, NodeLimits, detect, sweep_leftovers
from targets.cluster import Cluster, ClusterError, _death_record, how_died
from targets.procs import Child, ChildStartError

DEAD_PID = 99_999_999  # above any pid_max: never a live process


def _mounts(tmp: Path, lines: list[str]) -> Path:
    f = tmp / "mounts"
    f.write_text("".join(line + "\n" for line in lines))
    return f


def _v2_tree(tmp: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    root = tmp / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("\n")
    return root


def _v1_tree(tmp: Path) -> tuple[Path, Path]:
    cpu, mem = tmp / "cpu", tmp / "memory"
    cpu.mkdir()
    mem.mkdir()
    return cpu, mem


# ------------------------------------------------------------------ detection
def test_detect_prefers_v1_when_its_controllers_are_mounted_writable(tmp_path: Path) -> None:
    cpu, mem = _v1_tree(tmp_path)
    v2 = _v2_tree(tmp_path)
    m = _mounts(tmp_path, [f"cgroup {cpu} cgroup rw,relatime,cpu 0 0", f"cgroup {mem} cgroup rw,relatime,memory 0 0",
                           f"cgroup2 {v2} cgroup2 rw,relatime 0 0"])
    assert detect(m) == Layout(1, cpu, mem)


def test_detect_reads_co_mounted_and_escaped_v1_paths(tmp_path: Path) -> None:
    both = tmp_path / "cpu mem"
    both.mkdir()
    m = _mounts(tmp_path, [r"cgroup " + str(tmp_path).replace(" ", r"\040") + r"/cpu\040mem cgroup rw,cpu,cpuacct,memory 0 0"])
    lay = detect(m)
    assert lay == Layout(1, both, both)
    assert lay.parents() == [both / "sioscale"]  # one hierarchy: one parent, one directory per node
    assert NodeGroup(lay, "sioscale-1-n1", NodeLimits(0.5)).paths == [both / "sioscale" / "sioscale-1-n1"]


def test_detect_falls_back_to_v2_with_controllers(tmp_path: Path) -> None:
    cpu, _ = _v1_tree(tmp_path)
    v2 = _v2_tree(tmp_path)
    # v1 cpu mounted read-only, no v1 memory: v2 (which offers both) is used
    m = _mounts(tmp_path, [f"cgroup {cpu} cgroup ro,relatime,cpu 0 0", f"cgroup2 {v2} cgroup2 rw,relatime 0 0"])
    assert detect(m) == Layout(2, v2, v2)


def test_unavailable_is_one_line_with_why_and_the_fix(tmp_path: Path) -> None:
    cpu, _ = _v1_tree(tmp_path)
    v2 = _v2_tree(tmp_path, controllers="")  # like this machine's unified mount: no controllers
    m = _mounts(tmp_path, [f"cgroup {cpu} cgroup ro,relatime,cpu 0 0", f"cgroup2 {v2} cgroup2 rw 0 0"])
    with pytest.raises(CgroupError) as e:
        detect(m, cpu=True, memory=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{cpu} is not writable" in msg and "offers no cpu controller" in msg and "run as root" in msg
    with pytest.raises(CgroupError, match="no cgroup v1 cpu controller is mounted.*no cgroup2 mount"):
        detect(_mounts(tmp_path, ["proc /proc proc rw 0 0"]))


def test_detect_needs_only_the_controllers_asked_for(tmp_path: Path) -> None:
    cpu, _ = _v1_tree(tmp_path)
    m = _mounts(tmp_path, [f"cgroup {cpu} cgroup rw,cpu 0 0"])
    assert detect(m, cpu=True, memory=False).version == 1
    with pytest.raises(CgroupError, match="no cgroup v1 memory controller"):
        detect(m, cpu=True, memory=True)


# ---------------------------------------------------------------------- v2
def test_v2_group_writes_limits_and_delegates_controllers(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    parent = root / "sioscale"
    parent.mkdir()  # as the kernel would show it once root delegates cpu and memory
    (parent / "cgroup.controllers").write_text("cpu memory\n")
    (parent / "cgroup.subtree_control").write_text("\n")
    g = NodeGroup(Layout(2, root, root), "sioscale-42-n1", NodeLimits(cpus=0.25, memory_mb=512)).create()
    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (parent / "cgroup.subtree_control").read_text() == "+cpu +memory"
    d = parent / "sioscale-42-n1"
    assert g.paths == [d] and g.procs_files() == [str(d / "cgroup.procs")]
    assert (d / "cpu.max").read_text() == "25000 100000"
    assert (d / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert g.cpu_quota() == (25000, 100000) and g.memory_limit() == 512 * 1024 * 1024


def test_v2_leaves_unasked_limits_and_enabled_controllers_alone(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    g = NodeGroup(Layout(2, root, root), "sioscale-42-n2", NodeLimits(cpus=1.5)).create()
    assert (root / "cgroup.subtree_control").read_text() == "cpu memory\n"  # not rewritten
    assert (g.cpu_dir / "cpu.max").read_text() == "150000 100000"
    assert not (g.cpu_dir / "memory.max").exists()  # a new group is unlimited: nothing written
    (g.cpu_dir / "memory.max").write_text("max\n")
    (g.cpu_dir / "cpu.max").write_text("max 100000\n")
    assert g.memory_limit() is None and g.cpu_quota() == (None, 100000)


def test_v2_stats_parse(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    g = NodeGroup(Layout(2, root, root), "sioscale-42-n1", NodeLimits(cpus=0.5)).create()
    d = g.cpu_dir
    (d / "cpu.stat").write_text("usage_usec 912\nuser_usec 800\nsystem_usec 112\nnr_periods 40\n"
                                "nr_throttled 7\nthrottled_usec 123456\nnr_bursts 0\nburst_usec 0\n")
    (d / "memory.current").write_text("73728000\n")
    (d / "memory.peak").write_text("80000000\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n")
    assert g.cpu_stat() == {"nr_periods": 40, "nr_throttled": 7, "throttled_usec": 123456}
    assert g.memory_usage() == 73728000 and g.memory_peak() == 80000000
    assert g.oom_kills() == 1 and g.limit_hits() == 12


def test_v2_parent_not_creatable_is_a_cgroup_error(tmp_path: Path) -> None:
    root = _v2_tree(tmp_path)
    (root / "sioscale").write_text("a file where the parent group should be")
    with pytest.raises(CgroupError, match="cannot create the cgroup"):
        NodeGroup(Layout(2, root, root), "sioscale-42-n1", NodeLimits(cpus=0.5)).create()


# ---------------------------------------------------------------------- v1
def _v1_group(tmp: Path, limits: NodeLimits) -> NodeGroup:
    cpu, mem = _v1_tree(tmp)
    return NodeGroup(Layout(1, cpu, mem), "sioscale-42-n1", limits).create()


def test_v1_group_writes_both_hierarchies(tmp_path: Path) -> None:
    g = _v1_group(tmp_path, NodeLimits(cpus=0.25, memory_mb=64))
    assert g.paths == [tmp_path / "cpu/sioscale/sioscale-42-n1", tmp_path / "memory/sioscale/sioscale-42-n1"]
    assert (g.cpu_dir / "cpu.cfs_period_us").read_text() == "100000"
    assert (g.cpu_dir / "cpu.cfs_quota_us").read_text() == "25000"
    assert (g.memory_dir / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert not (g.memory_dir / "memory.memsw.limit_in_bytes").exists()  # swap is left alone


def test_v1_stats_parse(tmp_path: Path) -> None:
    g = _v1_group(tmp_path, NodeLimits(cpus=0.25))
    (g.cpu_dir / "cpu.stat").write_text("nr_periods 31\nnr_throttled 29\nthrottled_time 2345678901\n"
                                        "nr_bursts 0\nburst_time 0\n")
    (g.memory_dir / "memory.usage_in_bytes").write_text("5000000\n")
    (g.memory_dir / "memory.max_usage_in_bytes").write_text("6000000\n")
    (g.memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    (g.memory_dir / "memory.failcnt").write_text("17\n")
    (g.memory_dir / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert g.cpu_stat() == {"nr_periods": 31, "nr_throttled": 29, "throttled_usec": 2345678}  # ns → µs
    assert g.memory_usage() == 5000000 and g.memory_peak() == 6000000
    assert g.oom_kills() == 3 and g.limit_hits() == 17
    assert g.memory_limit() is None  # v1's "unlimited" (2^63 - 1, page-rounded)
    (g.memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # kernel < 4.13
    assert g.oom_kills() is None


def test_quota_never_under_the_kernel_minimum() -> None:
    assert NodeLimits(cpus=0.001).quota_us() == cgroups.MIN_QUOTA_US
    assert NodeLimits(cpus=2).quota_us() == 200_000 and NodeLimits().quota_us() is None
    assert not NodeLimits().any() and NodeLimits(memory_mb=64).any()


# -------------------------------------------------------------- lifecycle
def test_sweep_removes_only_groups_of_dead_supervisors(tmp_path: Path) -> None:
    cpu, mem = _v1_tree(tmp_path)
    lay = Layout(1, cpu, mem)
    keep = []
    for root in (cpu, mem):
        (root / "sioscale").mkdir()
        (root / "sioscale" / f"sioscale-{DEAD_PID}-n1").mkdir()
        (root / "sioscale" / f"sioscale-{DEAD_PID}-n2").mkdir()
        keep += [root / "sioscale" / f"sioscale-{os.getpid()}-n1", root / "sioscale" / "other-group",
                 root / "sioscale" / f"sioscale-{DEAD_PID}"]  # not our name pattern (no node id)
        keep.append(root / f"sioscale-{DEAD_PID}-n1")  # outside the parent: never looked at
        for d in keep[-4:]:
            d.mkdir()
    removed = sweep_leftovers(lay)
    assert sorted(removed) == sorted(str(r / "sioscale" / f"sioscale-{DEAD_PID}-{n}")
                                     for r in (cpu, mem) for n in ("n1", "n2"))
    assert all(d.is_dir() for d in keep)


def test_remove_makes_groups_disappear_and_reports_the_stuck(tmp_path: Path) -> None:
    g = _v1_group(tmp_path, NodeLimits(cpus=0.5, memory_mb=128))
    for p in g.paths:  # a plain directory with files cannot be removed: stands in for a busy group
        for f in p.iterdir():
            f.unlink()
    (g.memory_dir / "stuck").write_text("")
    assert g.remove(timeout=0.1) == [str(g.memory_dir)]
    assert not g.cpu_dir.exists()
    (g.memory_dir / "stuck").unlink()
    assert g.remove() == [] and g.remove() == []  # idempotent


def test_make_groups_undoes_itself_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, mem = _v1_tree(tmp_path)
    lay = Layout(1, cpu, mem)

    def fail_on_n2(self: NodeGroup) -> None:  # n1 writes nothing: its fake dirs stay empty, so rmdir works
        if self.name.endswith("-n2"):
            raise CgroupError("boom")

    monkeypatch.setattr(NodeGroup, "_write_limits", fail_on_n2)
    with pytest.raises(CgroupError, match="boom"):
        cgroups.make_groups(lay, ["n1", "n2"], NodeLimits(cpus=0.5))
    for root in (cpu, mem):
        assert [d.name for d in (root / "sioscale").iterdir()] == []  # n1 undone, and n2's own dirs too


def test_attach_self_writes_own_pid(tmp_path: Path) -> None:
    f = tmp_path / "cgroup.procs"
    f.write_text("")
    cgroups.attach_self([str(f)])
    assert f.read_text() == str(os.getpid())


def test_child_that_cannot_join_its_group_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    ch = Child(name="node n1", argv=["/bin/sh", "-c", f"touch {marker}"], log_path=tmp_path / "n.log",
               cgroup_procs=(str(tmp_path / "no-such-group" / "cgroup.procs"),))
    with pytest.raises(ChildStartError, match="node n1 could not join its cgroup .*no-such-group"):
        ch.start()
    assert ch.proc is None and not marker.exists()


# --------------------------------------------------------------- the Cluster
def test_limits_without_cgroups_fail_before_anything_starts(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import targets.cluster as cl

    def unavailable(**_kw: bool) -> Layout:
        raise CgroupError("cgroups unavailable: /sys/fs/cgroup/cpu is not writable (run as root, ...)")

    monkeypatch.setattr(cl, "detect", unavailable)
    c = Cluster(ClusterConfig(nodes=1, balancer="none", policy="direct", node_cpus=0.5), workdir=tmp_path / "w")
    with pytest.raises(ClusterError, match="^cgroups unavailable: /sys/fs/cgroup/cpu is not writable"):
        c.start()
    assert c.nodes == {} and c.node_groups == {}


class _Dead(Child):
    """A child that has exited with `rc` (no process needed to judge its death record)."""

    def __init__(self, tmp: Path, rc: int) -> None:
        super().__init__(name="node n1", argv=["x"], log_path=tmp / "n1.log")
        self._rc = rc

    def returncode(self) -> int | None:
        return self._rc

    def alive(self) -> bool:
        return False


def test_oom_death_is_recorded_with_reason_oom(tmp_path: Path) -> None:
    g = _v1_group(tmp_path, NodeLimits(memory_mb=64))
    (g.memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    d = _death_record("node", "n1", _Dead(tmp_path, -signal.SIGKILL), g, oom_base=0)
    assert d["reason"] == "oom" and d["signal"] == "SIGKILL" and d["memory_limit_mb"] == 64
    assert how_died(d) == "OOM-killed under its 64 MiB memory limit (SIGKILL)"
    # the counter did not rise since the node (re)started: a SIGKILL from someone else
    d = _death_record("node", "n1", _Dead(tmp_path, -signal.SIGKILL), g, oom_base=1)
    assert d["reason"] is None and how_died(d) == "killed by SIGKILL"
    # a crash is no OOM kill whatever the counter says
    assert _death_record("node", "n1", _Dead(tmp_path, 1), g, oom_base=0)["reason"] is None
    assert _death_record("node", "n1", _Dead(tmp_path, -signal.SIGKILL))["reason"] is None  # no group


def test_oom_without_the_kernel_counter_falls_back_to_the_limit(tmp_path: Path) -> None:
    g = _v1_group(tmp_path, NodeLimits(memory_mb=64))
    (g.memory_dir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (g.memory_dir / "memory.failcnt").write_text("0\n")
    (g.memory_dir / "memory.max_usage_in_bytes").write_text(str(10 << 20))
    assert _death_record("node", "n1", _Dead(tmp_path, -9), g, None)["reason"] is None
    (g.memory_dir / "memory.max_usage_in_bytes").write_text(str(64 << 20))  # peak at the limit
    assert _death_record("node", "n1", _Dead(tmp_path, -9), g, None)["reason"] == "oom"
