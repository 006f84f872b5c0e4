"""contract.fmt.num: the one number normaliser, and that it keeps numpy/pandas out of Locust workers."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from contract.fmt import num


@pytest.mark.parametrize(("v", "want"), [
    (None, None), ("", None), ("  ", None), ("abc", None), (object(), None),
    (float("nan"), None), (np.nan, None), (math.inf, None), (-np.inf, None), ("nan", None), ("inf", None),
    (3, 3), (np.int64(3), 3), (True, 1), (2.5, 2.5), (np.float32(0.5), 0.5), ("1.5", 1.5), (" 7 ", 7.0),
])
def test_num(v: object, want: object) -> None:
    got = num(v)
    assert got == want and type(got) is type(want)


def test_locust_side_imports_pull_no_numpy_or_pandas() -> None:
    """Every Locust worker imports the live stats and the event log; they must stay light (why _fmt,
    contract.environment and contract.jsonfile are stdlib-only)."""
    code = ("import sys; import contract.fmt, locustfiles.sio.live, locustfiles.sio.eventlog; "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
