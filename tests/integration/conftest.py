"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.support import Procs


@pytest.fixture
def procs(tmp_path: Path):
    """Processes a test starts, each in its own process group; all killed when the test ends."""
    ps = Procs(tmp_path)
    try:
        yield ps
    finally:
        ps.close()
