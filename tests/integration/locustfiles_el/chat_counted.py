"""The real chat scenario plus a per-process count of the rows it produced (for the tests)."""

from __future__ import annotations

from locustfiles.chat import ChatUser  # noqa: F401 - the scenario under test
from tests.integration.locustfiles_el.rowfire import _dump_counts  # noqa: F401 - registers the counters
