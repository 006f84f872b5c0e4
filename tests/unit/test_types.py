"""mypy over the public modules that pyproject.toml's [tool.mypy] `files` names.

Run as a test so that `make test` and CI type-check with no Makefile change. The cache goes
under the system temp directory, so the checkout stays clean; a cold run takes a few seconds.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_passes_on_the_public_modules() -> None:
    cache = Path(tempfile.gettempdir()) / "sioscale-mypy-cache"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(cache), "--no-color-output", "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout}{proc.stderr}"
