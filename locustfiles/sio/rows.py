"""Moved to `contract.rows` (the ground layer, see docs/architecture.md); this shim keeps
`from locustfiles.sio.rows import ...` working for users' scenario files. New code imports
`contract.rows`."""

from contract.rows import *  # noqa: F403
from contract.rows import __all__  # noqa: F401
