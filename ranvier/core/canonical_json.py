"""Canonical JSON (spec: Appendices, "Canonical JSON").

Keys sorted by Unicode codepoint, no insignificant whitespace, UTF-8 output,
integers only in the range [-(2**53)+1, (2**53)-1], no floats. Strings escape
only what JSON requires: ``"``, ``\\``, and control characters below U+0020,
using the short forms ``\\b \\f \\n \\r \\t`` where they exist and ``\\u00XX``
(lower-case hex) otherwise. Everything else, including U+2028, U+2029 and
astral-plane characters, is written as raw UTF-8.
"""

from __future__ import annotations

from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53) + 1

_SHORT_ESCAPES = {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
}
_ESCAPE_TABLE: dict[int, str] = {c: f"\\u{c:04x}" for c in range(0x20)}
_ESCAPE_TABLE.update(_SHORT_ESCAPES)


class CanonicalJSONError(ValueError):
    """The value cannot be represented as canonical JSON."""


def _encode_string(value: str, out: list[str]) -> None:
    out.append('"')
    out.append(value.translate(_ESCAPE_TABLE))
    out.append('"')


def _encode(value: Any, out: list[str]) -> None:
    # bool before int: bool is a subclass of int.
    if value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, str):
        _encode_string(value, out)
    elif isinstance(value, int):
        if not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer {value} is outside the canonical JSON range")
        out.append(str(int(value)))
    elif isinstance(value, float):
        raise CanonicalJSONError("floats are not allowed in canonical JSON")
    elif isinstance(value, dict):
        out.append("{")
        first = True
        try:
            items = sorted(value.items())
        except TypeError as exc:
            raise CanonicalJSONError("object keys must be strings") from exc
        for key, item in items:
            if not isinstance(key, str):
                raise CanonicalJSONError("object keys must be strings")
            if not first:
                out.append(",")
            first = False
            _encode_string(key, out)
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise CanonicalJSONError(f"cannot encode {type(value).__name__} as canonical JSON")


def encode_canonical_json(value: Any) -> bytes:
    """Return the canonical JSON encoding of ``value`` as UTF-8 bytes.

    Raises ``CanonicalJSONError`` for floats, out-of-range integers, non-string
    keys, lone surrogates and types JSON does not have.
    """
    out: list[str] = []
    _encode(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("strings must be valid Unicode (no lone surrogates)") from exc
