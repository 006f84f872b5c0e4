"""Which redis-server a Redis adapter starts on, and the refusals for the sharded adapter (Redis >= 7)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

import targets.cluster as tc
from targets.cluster import SHARDED_MIN_REDIS, ClusterError, check_redis_url_version, find_redis_server


def _fake_redis(tmp: Path, version: str) -> str:
    p = tmp / f"redis-server-{version}"
    p.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=0 malloc=libc bits=64'\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def test_an_explicit_binary_too_old_for_sharded_is_named_with_its_version_and_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _fake_redis(tmp_path, "6.2.14")
    monkeypatch.setenv("SIOSCALE_REDIS_SERVER", old)
    assert find_redis_server(None) == old  # pub/sub and Streams run on any Redis (make seed needs no Redis 7)
    with pytest.raises(ClusterError) as ei:
        find_redis_server(SHARDED_MIN_REDIS)
    msg = str(ei.value)
    assert f"{old} (6.2.14)" in msg and "needs Redis >= 7.0.0" in msg and "apt-get install redis-server" in msg
    assert "\n" not in msg
    new = _fake_redis(tmp_path, "7.2.4")
    monkeypatch.setenv("SIOSCALE_REDIS_SERVER", new)
    assert find_redis_server(SHARDED_MIN_REDIS) == new


def test_the_search_skips_an_old_redis_for_a_newer_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIOSCALE_REDIS_SERVER", raising=False)
    old, new = _fake_redis(tmp_path, "6.2.14"), _fake_redis(tmp_path, "7.0.15")
    monkeypatch.setattr(tc, "_venv_bin", lambda name: Path(old))
    monkeypatch.setattr(tc.shutil, "which", lambda name: old)
    monkeypatch.setattr(tc, "_DEBIAN_REDIS", new)
    assert find_redis_server(SHARDED_MIN_REDIS) == new
    monkeypatch.setattr(tc, "_DEBIAN_REDIS", str(tmp_path / "absent"))
    with pytest.raises(ClusterError, match=r"found only .*redis-server-6\.2\.14 \(6\.2\.14\)"):
        find_redis_server(SHARDED_MIN_REDIS)


def test_a_broken_version_line_is_unknown_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    odd = _fake_redis(tmp_path, "banana")
    monkeypatch.setenv("SIOSCALE_REDIS_SERVER", odd)
    with pytest.raises(ClusterError, match=r"\(unknown version\)"):
        find_redis_server(SHARDED_MIN_REDIS)


class _FakeRedis:
    def __init__(self, version: Any) -> None:
        self.version = version

    def __enter__(self) -> _FakeRedis:
        return self

    def __exit__(self, *a: object) -> None:
        return None

    def info(self, section: str) -> dict[str, Any]:
        if isinstance(self.version, Exception):
            raise self.version
        return {"redis_version": self.version}


@pytest.mark.parametrize("version,needle", [
    ("6.2.14", "the Redis at redis://h:1/0 is 6.2.14"),
    ("", "is of unknown version"),
])
def test_an_external_redis_is_asked_its_version(monkeypatch: pytest.MonkeyPatch, version: str, needle: str) -> None:
    import redis

    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: _FakeRedis(version)))
    with pytest.raises(ClusterError, match=needle):
        check_redis_url_version("redis://h:1/0", SHARDED_MIN_REDIS)
    monkeypatch.setattr(redis.Redis, "from_url", classmethod(lambda cls, url, **kw: _FakeRedis("7.0.15")))
    check_redis_url_version("redis://h:1/0", SHARDED_MIN_REDIS)
    monkeypatch.setattr(redis.Redis, "from_url",
                        classmethod(lambda cls, url, **kw: _FakeRedis(redis.ConnectionError("refused"))))
    with pytest.raises(ClusterError, match="cannot ask the Redis at redis://h:1/0 for its version"):
        check_redis_url_version("redis://h:1/0", SHARDED_MIN_REDIS)


def test_a_missing_adapter_package_is_named_before_any_node_starts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from targets.cluster import node_server_problem

    (tmp_path / "node_modules" / "socket.io").mkdir(parents=True)
    monkeypatch.setattr(tc, "NODE_DIR", tmp_path)
    monkeypatch.setattr(tc, "find_binary", lambda kind: "/usr/bin/node")
    assert node_server_problem("memory") is None
    msg = node_server_problem("redis-streams")
    assert msg is not None and "@socket.io/redis-streams-adapter" in msg and "make node" in msg
    (tmp_path / "node_modules" / "@socket.io" / "redis-streams-adapter").mkdir(parents=True)
    assert node_server_problem("redis-streams") is None
