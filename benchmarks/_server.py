"""Local python-socketio nodes for the client benchmarks, run by the project's supervisor.

Why targets.cluster rather than a Popen of its own: the supervisor starts each node in its own
process group with PR_SET_PDEATHSIG (targets/procs.py), checks it answers as the node it should
be, and stops the group -- so even a benchmark killed with SIGKILL leaves no node behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from contract.config import ClusterConfig
from targets.cluster import Cluster


@contextlib.contextmanager
def python_nodes(k: int = 1) -> Iterator[list[str]]:
    """k python-socketio nodes (targets.app under uvicorn), no balancer; yields their base URLs."""
    with Cluster(ClusterConfig(nodes=k, balancer="none", policy="direct")) as c:
        yield [n["url"] for n in c.info["nodes"]]


@contextlib.contextmanager
def python_node() -> Iterator[str]:
    """One node; yields its base URL."""
    with python_nodes(1) as urls:
        yield urls[0]
