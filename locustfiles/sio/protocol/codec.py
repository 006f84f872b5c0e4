"""Engine.IO payload framing for both protocol revisions, as pure functions.

Outgoing Engine.IO packets are kept as plain values: a str is a text packet already carrying
its type digit ("40", "3", "2probe"); bytes are a binary MESSAGE. That *is* the wire form of
a text packet, so building python-engineio Packet objects only to call .encode() would cost
time per packet on the hot path and buy nothing. Incoming text packets are decoded with
python-engineio's `Packet` (type digit + JSON-or-string data).

Hand-written here, and why:
- EIO4 payload split/join on "\\x1e": engineio's `Payload.decode` refuses more than 16
  packets per payload (a server-side DoS guard), but a busy server legitimately batches more
  into one long-poll answer.
- EIO3 payloads (`<len>:<packet>` counted in UTF-16 code units, and the XHR2 binary payload
  format): python-engineio 4.x implements only EIO4.
Every decoder raises ValueError on malformed input; the state machine turns that into
protocol_error.
"""

from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

from engineio import json as eio_json
from engineio import packet as eio_packet

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)
SEPARATOR = "\x1e"
TEXT = "text/plain;charset=UTF-8"
BINARY = "application/octet-stream"
_MAX_LEN_DIGITS = 10  # engine.io-parser v3 allowed 310; no real packet needs more than 10
# Packets in one polling payload (issue 9: bound every read). The core handles a payload in one
# go and cannot yield, and a 16 MiB body of "2\x1e2\x1e..." would be 8 M packets (and as many
# pongs and ping rows): seconds of a frozen process and hundreds of MB of small objects. A server
# answers a poll with everything it buffered for that client since the last one (Node's engine.io
# drains its whole write buffer, with no count limit), and that backlog is largest exactly when a
# capacity test overloads the server: a polling member of a 1,000-user room that waits 10 s for
# its poll has 10,000 packets due. So the bound sits ten times above that: 100,000 packets
# (about 0.3 s of decoding here), and past it the payload is refused as a protocol_error.
MAX_PAYLOAD_PACKETS = 100_000

# engineio.json.loads(s) is json.loads(s, parse_int=_safe_int): the same decoder, built once.
_EIO_JSON = json.JSONDecoder(parse_int=eio_json._safe_int)

Packet = tuple[int, object]  # (packet type, data): data is str | dict | list | bytes

# encodeURIComponent leaves A-Z a-z 0-9 and - _ . ! ~ * ' ( ) as they are; quote() always keeps
# the letters, digits and - _ . ~, so these are the only extra safe marks.
_URI_COMPONENT_SAFE = "!~*'()"


def encode_uri_component(value: str) -> str:
    """`value` as JavaScript's encodeURIComponent writes it: UTF-8, every other byte as %XX.

    Why: engine.io-client builds its query with encodeURIComponent (parseqs.encode), so this is
    what a browser puts on the wire for a server-chosen value; the result is plain ASCII with no
    space, CR, LF, '&' or '=' and can go into a request line or a header as is. A lone surrogate
    raises ValueError (UnicodeEncodeError), as encodeURIComponent throws URIError on it.
    """
    if value.isascii() and value.replace("-", "").replace("_", "").isalnum():
        return value  # the common case (base64url-ish ids): nothing to escape, no quote() call
    return quote(value, safe=_URI_COMPONENT_SAFE, encoding="utf-8", errors="strict")


def decode_text_packet(s: str) -> Packet:
    """One text Engine.IO packet ("4...", "0{...}", "2probe") → (type, data)."""
    if not s:
        raise ValueError("empty packet")
    c = s[0]
    if c < "0" or c > "6":  # also rejects non-ASCII digits that int() would accept
        raise ValueError(f"unknown packet type {c!r}")
    # Fast path, same result as engineio's Packet.decode (tests/unit/test_codec_fast.py proves
    # it on a corpus). Why: Packet.decode builds a new JSONDecoder per call (engineio.json.loads
    # passes parse_int) and uses exceptions as control flow for "6" and every "4<digit>..."
    # Socket.IO message; that was ~6% of the client's CPU on a full handshake.
    d = s[1:2]
    if not d:
        return ord(c) - 48, ""
    if d.isnumeric():
        return ord(c) - 48, s[1:]
    if d == "{" or d == "[":
        try:
            return ord(c) - 48, _EIO_JSON.decode(s[1:])
        except ValueError:
            return ord(c) - 48, s[1:]
    if d.isascii() and d.isalpha() and d not in "tfnNI":  # "3probe": not JSON (true/false/null/NaN/Infinity)
        return ord(c) - 48, s[1:]
    p = eio_packet.Packet(encoded_packet=s)
    return p.packet_type, p.data


# -- EIO4 -------------------------------------------------------------------------------------
def decode_payload_v4(body: bytes) -> list[Packet]:
    """A polling response body (records separated by \\x1e; "b" + base64 = binary message)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"payload is not UTF-8: {e}") from None
    n = text.count(SEPARATOR) + 1  # counted before splitting: the split itself is the cost
    if n > MAX_PAYLOAD_PACKETS:
        raise ValueError(f"payload of {n} packets exceeds MAX_PAYLOAD_PACKETS = {MAX_PAYLOAD_PACKETS}")
    out: list[Packet] = []
    for rec in text.split(SEPARATOR):
        if rec[:1] == "b":
            try:
                out.append((MESSAGE, base64.b64decode(rec[1:], validate=True)))
            except (binascii.Error, ValueError):
                raise ValueError("bad base64 in binary record") from None
        else:
            out.append(decode_text_packet(rec))
    return out


def encode_payload_v4(packets: list[str | bytes]) -> tuple[bytes, str]:
    """(body, content type) of a POST: binary messages travel as "b" + base64 in EIO4."""
    parts = [p if isinstance(p, str) else "b" + base64.b64encode(p).decode("ascii") for p in packets]
    return SEPARATOR.join(parts).encode("utf-8"), TEXT


# -- EIO3 -------------------------------------------------------------------------------------
def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, as JS's String.length (non-BMP characters count 2)."""
    if s.isascii():
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _v3_text_record(p: str | bytes) -> str:
    if isinstance(p, bytes):  # base64 form of a binary message: "b4" + base64(data)
        p = "b4" + base64.b64encode(p).decode("ascii")
    return f"{utf16_len(p)}:{p}"


def encode_payload_v3(packets: list[str | bytes]) -> tuple[bytes, str]:
    """(body, content type) of an EIO3 POST, as a browser (XHR2) sends it: text length-prefixed
    payload, or the binary payload format when any packet is binary."""
    if not any(isinstance(p, bytes) for p in packets):
        return "".join(_v3_text_record(p) for p in packets).encode("utf-8"), TEXT
    out = bytearray()
    for p in packets:
        if isinstance(p, str):
            data = p.encode("utf-8")
            out.append(0)
        else:
            data = b"\x04" + p
            out.append(1)
        out.extend(int(d) for d in str(len(data)))
        out.append(255)
        out.extend(data)
    return bytes(out), BINARY


def _decode_v3_text_packet(s: str) -> Packet:
    if s[:1] == "b":  # base64 binary record: "b<type><base64>"
        if s[1:2] != "4":
            raise ValueError("base64 record that is not a message")
        try:
            return MESSAGE, base64.b64decode(s[2:], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad base64 in binary record") from None
    return decode_text_packet(s)


def decode_payload_v3(body: bytes, content_type: str = "") -> list[Packet]:
    """An EIO3 polling response: binary payload (octet-stream, or first byte 0/1) or text."""
    if body[:1] in (b"\x00", b"\x01") or "octet-stream" in content_type:
        return _decode_v3_binary(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"payload is not UTF-8: {e}") from None
    return [_decode_v3_text_packet(s) for s in split_v3_text(text)]


def split_v3_text(text: str) -> list[str]:
    """Split `<len>:<packet>...` where len counts UTF-16 code units."""
    if not text:
        raise ValueError("empty payload")
    if text.isascii():
        buf: str | bytes = text
        width = 1
    else:
        buf = text.encode("utf-16-le", "surrogatepass")
        width = 2
    n = len(buf)
    out: list[str] = []
    i = 0
    while i < n:
        j = i
        digits = 0
        while j < n and _is_digit(buf, j, width):
            j += width
            digits += 1
        if digits == 0 or digits > _MAX_LEN_DIGITS or j >= n or not _is_unit(buf, j, width, ":"):
            raise ValueError(f"bad length prefix at code unit {i // width}")
        length = int(_units(buf, i, j, width))
        start = j + width
        end = start + length * width
        if length == 0 or end > n:
            raise ValueError(f"length {length} at code unit {i // width} runs past the payload")
        out.append(_units(buf, start, end, width))
        if len(out) > MAX_PAYLOAD_PACKETS:
            raise ValueError(f"payload of more than MAX_PAYLOAD_PACKETS = {MAX_PAYLOAD_PACKETS} packets")
        i = end
    return out


def _is_digit(buf: str | bytes, j: int, width: int) -> bool:
    if width == 1:
        return "0" <= buf[j] <= "9"  # type: ignore[operator]
    return 48 <= buf[j] <= 57 and buf[j + 1] == 0  # type: ignore[operator]


def _is_unit(buf: str | bytes, j: int, width: int, ch: str) -> bool:
    if width == 1:
        return buf[j] == ch
    return buf[j] == ord(ch) and buf[j + 1] == 0


def _units(buf: str | bytes, start: int, end: int, width: int) -> str:
    if width == 1:
        return buf[start:end]  # type: ignore[return-value]
    try:
        return buf[start:end].decode("utf-16-le")  # type: ignore[union-attr]
    except UnicodeDecodeError:
        raise ValueError("length prefix splits a surrogate pair") from None


def _decode_v3_binary(body: bytes) -> list[Packet]:
    """engine.io-parser 2.x decodePayloadAsBinary: per record <0|1><len digits as bytes><255><data>;
    a text record is UTF-8, a binary record starts with its packet type byte."""
    out: list[Packet] = []
    i, n = 0, len(body)
    if n == 0:
        raise ValueError("empty payload")
    while i < n:
        kind = body[i]
        if kind not in (0, 1):
            raise ValueError(f"bad binary record marker {kind} at byte {i}")
        j = i + 1
        length = 0
        while j < n and body[j] != 255:
            if body[j] > 9 or j - i > _MAX_LEN_DIGITS:
                raise ValueError(f"bad binary length at byte {j}")
            length = length * 10 + body[j]
            j += 1
        if j >= n or j == i + 1:
            raise ValueError(f"truncated binary length at byte {i}")
        start, end = j + 1, j + 1 + length
        if length == 0 or end > n:
            raise ValueError(f"binary record at byte {i} runs past the payload")
        rec = body[start:end]
        if kind == 0:
            try:
                out.append(decode_text_packet(rec.decode("utf-8")))
            except UnicodeDecodeError:
                raise ValueError("text record is not UTF-8") from None
        else:
            if rec[0] != MESSAGE:
                raise ValueError(f"binary record of packet type {rec[0]}")
            out.append((MESSAGE, bytes(rec[1:])))
        if len(out) > MAX_PAYLOAD_PACKETS:
            raise ValueError(f"payload of more than MAX_PAYLOAD_PACKETS = {MAX_PAYLOAD_PACKETS} packets")
        i = end
    return out
