"""One number normaliser for every consumer of event rows and summary figures.

Values reach us as numpy scalars (pandas), plain floats, CSV strings (events.csv read back,
rows forwarded between Locust processes) or None; NaN and ±inf mean "not measured". Everything
that shows, compares or serialises a figure needs the same answer: a plain int/float, or None.

Deliberately stdlib-only (numbers ABCs recognise numpy scalars without importing numpy): the live
stats in the Locust processes import this module, and they must not pull numpy or pandas into
every worker. tests/unit/test_fmt.py checks that.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def num(v: Any) -> int | float | None:
    """int for integral values, float for real ones, None for missing/NaN/±inf/unparseable.

    Strings are parsed as floats ("3" → 3.0), the way a CSV cell is read; bools count as ints.
    """
    if v is None:
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        x = float(v)
    else:
        try:
            x = float(str(v).strip())
        except (TypeError, ValueError):
            return None
    return None if math.isnan(x) or math.isinf(x) else x
