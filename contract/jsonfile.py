"""Atomic JSON files (meta.json, sio_stats.json), one writer for the runner and the Locust side.

Both `sioscale run` and the Locust master write a run's meta.json, and the report or a watcher may
read it at any moment: a reader must never see half a file. Stdlib only, so Locust workers can
import it without pulling anything heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX).

    The temporary name carries the pid, so two processes writing the same file (the runner and the
    Locust master both touch meta.json) never write into each other's half-done temporary file.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
