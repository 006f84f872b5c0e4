"""Moved to `analysis.checks` (the figures live with the analysis, see docs/architecture.md); this
shim keeps `import sioscale.checks` / `from sioscale.checks import ...` working for users' scripts.
New code imports `analysis.checks`."""

from analysis.checks import *  # noqa: F403
from analysis.checks import __all__  # noqa: F401
