"""Moved to `contract.config` (the ground layer, see docs/architecture.md); this shim keeps
`import sioscale.config` / `from sioscale.config import ...` working for users' scripts.
New code imports `contract.config`."""

from contract.config import *  # noqa: F403
from contract.config import __all__  # noqa: F401
