"""Atomic JSON files (meta.json, sio_stats.json), one helper for the runner and the Locust side.

Each file has one writer (meta.json: the runner, or the event log when it created the file for a
plain `locust` run; sio_stats.json: the Locust master), and the report or a watcher may read it at
any moment: a reader must never see half a file. Stdlib only, so Locust workers can
import it without pulling anything heavy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX).

    The temporary name carries the pid, so even two processes writing one file by mistake never
    write into each other's half-done temporary file.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
