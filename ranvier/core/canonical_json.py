"""Canonical JSON (spec: Appendices, "Canonical JSON").

Keys sorted by Unicode codepoint, no insignificant whitespace, UTF-8 output,
integers only in the range [-(2**53)+1, (2**53)-1], no floats. Strings escape
only what JSON requires: ``"``, ``\\``, and control characters below U+0020,
using the short forms ``\\b \\f \\n \\r \\t`` where they exist and ``\\u00XX``
(lower-case hex) otherwise. Everything else, including U+2028, U+2029 and
astral-plane characters, is written as raw UTF-8.

Two encoders produce the same bytes. The fast path hands plain data (exactly
``dict``, ``list``, ``tuple``, ``str``, ``int``, ``bool``, ``None``: what a JSON
parser returns) to orjson, which sorts keys by codepoint, escapes strings
exactly as above and enforces the 53-bit integer range with
``OPT_STRICT_INTEGER``. orjson would also encode floats, enums, dataclasses,
dates and subclasses, so a walk first checks that nothing else is present.
Everything else, and anything orjson refuses, goes to the pure-Python encoder,
which is the reference and the one that raises ``CanonicalJSONError``.
tests/core/test_canonical_json.py proves the two agree with each other and with
matrix.org's ``canonicaljson``.

Room versions 1–5 (``strict=False``). "Servers MUST NOT strictly enforce the
JSON format specified in the appendices" there (fragment v1-canonical-json),
and the appendix warns that events of those versions "might not be fully
compliant": rooms hold such events (float power levels, timestamps beyond
2**53), and every server must still hash them and derive the same event ID.
The spec's reference for canonical JSON is Python's ``json.dumps`` with sorted
keys and compact separators (Appendices, "Canonical JSON"); deployed servers
(Synapse, through matrix.org's ``canonicaljson``, which is exactly that
encoder with ``allow_nan=False``) hash such values that way. So the relaxed
encoding writes integers of any size in full and floats as ``float.__repr__``
(``50.0``, ``1e+100``, ``-0.0``); only NaN and the infinities, which JSON cannot
express, still raise. Values without floats and out-of-range integers encode
exactly as in strict mode, so the orjson fast path is kept for them; v6+
(``strict=True``, the default) is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

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


def _encode_relaxed_number(value: int | float, out: list[str]) -> None:
    """Room versions 1–5: a number as Python's ``json`` writes it (see above)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalJSONError("NaN and infinities cannot be encoded as JSON")
        out.append(float.__repr__(value))
        return
    try:
        out.append(int.__repr__(value))
    except ValueError as exc:  # beyond Python's int-to-str digit limit
        raise CanonicalJSONError(f"integer is too long to encode: {exc}") from None


def _encode(value: Any, out: list[str], strict: bool) -> None:
    # bool before int: bool is a subclass of int.
    if value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif value is None:
        out.append("null")
    elif isinstance(value, str):
        _encode_string(value, out)
    elif not strict and isinstance(value, (int, float)):
        _encode_relaxed_number(value, out)
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
            _encode(item, out, strict)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out, strict)
        out.append("]")
    else:
        raise CanonicalJSONError(f"cannot encode {type(value).__name__} as canonical JSON")


def encode_canonical_json_slow(value: Any, *, strict: bool = True) -> bytes:
    """The pure-Python reference encoder behind ``encode_canonical_json``."""
    out: list[str] = []
    try:
        _encode(value, out, strict)
    except RecursionError:
        raise CanonicalJSONError("JSON value is nested too deeply") from None
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError("strings must be valid Unicode (no lone surrogates)") from exc


_LEAF_TYPES = frozenset({str, int, bool, type(None)})
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
#: orjson refuses to nest deeper than 254 levels; stay well inside that.
_MAX_FAST_DEPTH = 200


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds only the exact types a JSON parser produces.

    Floats and any other type (subclasses included) send the value to the
    reference encoder, which rejects or handles them. Integer range, key types
    and surrogates are left to orjson, which raises on each.
    """
    value_type = type(value)
    if value_type is dict:
        children = value.values()
    elif value_type is list or value_type is tuple:
        children = value
    else:
        return value_type in _LEAF_TYPES
    if depth >= _MAX_FAST_DEPTH:
        return False
    for child in children:
        if type(child) in _LEAF_TYPES:
            continue
        if not _is_plain(child, depth + 1):
            return False
    return True


def encode_canonical_json(value: Any, *, strict: bool = True) -> bytes:
    """Return the canonical JSON encoding of ``value`` as UTF-8 bytes.

    Raises ``CanonicalJSONError`` for floats, out-of-range integers, non-string
    keys, lone surrogates and types JSON does not have. ``strict=False`` is
    the encoding of room versions 1–5, which accepts floats and integers of
    any size (see the module docstring); pass
    ``room_version.strict_canonical_json``.
    """
    if _is_plain(value):
        try:
            return orjson.dumps(value, option=_ORJSON_OPTIONS)
        except TypeError:
            pass  # let the reference encoder say what is wrong (or, relaxed, encode it)
    return encode_canonical_json_slow(value, strict=strict)
