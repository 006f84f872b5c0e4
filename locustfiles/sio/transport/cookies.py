"""A per-user cookie jar, as a browser keeps one: the balancer's sticky cookie must come back.

Why hand-written: http.cookiejar needs urllib Request/Response objects per call, which costs
more than the whole polling request here. Virtual users talk to one origin, so a host-only
jar (name → value, Max-Age/Expires deletion honoured) is what a browser does for them.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

# What a browser refuses (RFC 6265bis 5.6, as Chrome and Firefox implement it), so that a cookie
# a server sets can only come back in the Cookie header as the harmless bytes it was set with:
_CTL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # a control character (HTAB aside): ignore the whole cookie
MAX_COOKIE_BYTES = 4096  # name + value longer than this: ignore the cookie
MAX_COOKIES = 180  # Chrome's per-domain limit; beyond it the oldest cookie goes


class CookieJar:
    __slots__ = ("_values", "_header")

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._header: str = ""

    def header(self) -> str:
        """The Cookie request header value ("" when the jar is empty)."""
        return self._header

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def __len__(self) -> int:
        return len(self._values)

    def update(self, set_cookie_values: list[str]) -> None:
        """Apply Set-Cookie header values from one response."""
        for raw in set_cookie_values:
            if _CTL.search(raw):
                continue  # a CR/LF/NUL... could end the Cookie header: browsers drop such cookies
            first, *attrs = raw.split(";")
            name, sep, value = first.partition("=")
            name = name.strip()
            if not sep or not name:
                continue  # malformed: browsers ignore it
            value = value.strip().strip('"')
            if len(name) + len(value) > MAX_COOKIE_BYTES:
                continue
            if _expired(attrs):
                self._values.pop(name, None)
            else:
                if name not in self._values and len(self._values) >= MAX_COOKIES:
                    del self._values[next(iter(self._values))]
                self._values[name] = value
        self._header = "; ".join(f"{k}={v}" for k, v in self._values.items())

    def clear(self) -> None:
        self._values.clear()
        self._header = ""


def _expired(attrs: list[str]) -> bool:
    for a in attrs:
        key, _, val = a.partition("=")
        key = key.strip().lower()
        if key == "max-age":
            try:
                return int(val.strip()) <= 0
            except ValueError:
                continue
        if key == "expires":
            try:
                return parsedate_to_datetime(val.strip()).timestamp() <= time.time()
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
    return False
