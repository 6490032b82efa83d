"""Canonical JSON (spec: Appendices, "Canonical JSON").

The spec's examples byte for byte, a cross-check of the orjson fast path and the
pure-Python reference encoder against matrix.org's ``canonicaljson`` over random
documents, and rejection of everything canonical JSON does not allow.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import random
import uuid
from collections import OrderedDict
from typing import Any

import canonicaljson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core.canonical_json import (
    MAX_SAFE_INTEGER,
    MIN_SAFE_INTEGER,
    CanonicalJSONError,
    encode_canonical_json,
    encode_canonical_json_slow,
)
from tests.core.json_strategies import JSON_VALUES, LEAVES, SPECIAL_CHARS, TEXT

ENCODERS = [encode_canonical_json, encode_canonical_json_slow]
ENCODER_IDS = ["fast", "slow"]


def _parse_spec_json(text: str) -> Any:
    """Parse JSON the way the spec reads its examples: a number is its value.

    ``1e10`` is the integer ten billion and ``-0`` is zero, so integral numbers
    written with exponents become ``int``; anything else stays a float.
    """

    def parse_number(literal: str) -> int | float:
        number = decimal.Decimal(literal)
        if number == number.to_integral_value():
            return int(number)
        return float(literal)

    return json.loads(text, parse_float=parse_number, parse_int=parse_number)


# Appendices, "Canonical JSON" > "Examples": (input, expected output).
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{\n    "one": 1,\n    "two": "Two"\n}', '{"one":1,"two":"Two"}'),
    ('{\n    "b": "2",\n    "a": "1"\n}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        """{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}""",
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{\n    "a": "日本語"\n}', '{"a":"日本語"}'),
    ('{\n    "本": 2,\n    "日": 1\n}', '{"日":1,"本":2}'),
    ('{\n    "a": "\\u65E5"\n}', '{"a":"日"}'),
    ('{\n    "a": null\n}', '{"a":null}'),
    ('{\n    "a": -0,\n    "b": 1e10\n}', '{"a":0,"b":10000000000}'),
]


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
@pytest.mark.parametrize(("source", "expected"), SPEC_EXAMPLES)
def test_spec_examples_byte_for_byte(encode: Any, source: str, expected: str) -> None:
    assert encode(_parse_spec_json(source)) == expected.encode("utf-8")


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Short escapes where JSON has them, lower-case \u00XX otherwise.
        ("\b\t\n\f\r", b'"\\b\\t\\n\\f\\r"'),
        ("\x00\x01\x0b\x0e\x1f", b'"\\u0000\\u0001\\u000b\\u000e\\u001f"'),
        ('"\\', b'"\\"\\\\"'),
        # No other escapes: "/", DEL, C1 controls, U+2028/9, BOM, astral plane.
        ("/\x7f\x85", b'"/\x7f\xc2\x85"'),
        ("\u2028\u2029\ufeff", '"\u2028\u2029\ufeff"'.encode()),
        ("\U0001f600", '"\U0001f600"'.encode()),
        ("", b'""'),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
        (0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (MIN_SAFE_INTEGER, b"-9007199254740991"),
        ([], b"[]"),
        ((1, "a"), b'[1,"a"]'),
        ([{}, [], [[]]], b"[{},[],[[]]]"),
        ({"a": [True, False, None]}, b'{"a":[true,false,null]}'),
    ],
)
def test_scalars_and_escapes(encode: Any, value: Any, expected: bytes) -> None:
    assert encode(value) == expected


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
def test_keys_sorted_by_codepoint_not_utf16(encode: Any) -> None:
    # U+E000 and U+FFFF sort after astral characters in UTF-16 code-unit order
    # but before them by codepoint, which is what the spec asks for.
    value = {"\U00010000": 1, "\uffff": 2, "\ue000": 3, "é": 4, "Z": 5, "a": 6, "": 7}
    assert encode(value) == (
        '{"":7,"Z":5,"a":6,"é":4,"\ue000":3,"\uffff":2,"\U00010000":1}'.encode()
    )


def test_limits_match_spec() -> None:
    assert MAX_SAFE_INTEGER == 2**53 - 1
    assert MIN_SAFE_INTEGER == -(2**53) + 1


# --- Cross-check against matrix.org's canonicaljson ---------------------------


@settings(max_examples=1500, derandomize=True, deadline=None)
@given(JSON_VALUES)
def test_matches_canonicaljson(value: Any) -> None:
    expected = canonicaljson.encode_canonical_json(value)
    assert encode_canonical_json(value) == expected
    assert encode_canonical_json_slow(value) == expected
    # And it is JSON that reads back as the same value.
    assert json.loads(expected) == value


_RANDOM_CHAR_RANGES = [
    (0x00, 0x7F),
    (0x80, 0x7FF),
    (0x800, 0xD7FF),
    (0xE000, 0xFFFF),
    (0x10000, 0x10FFFF),
]


def _random_text(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randrange(8)):
        if rng.random() < 0.3:
            chars.append(rng.choice(SPECIAL_CHARS))
        else:
            low, high = rng.choice(_RANDOM_CHAR_RANGES)
            chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def _random_document(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(MIN_SAFE_INTEGER, MAX_SAFE_INTEGER)
    if kind == 2:
        return rng.randint(-1000, 1000)
    if kind in (3, 4):
        return _random_text(rng)
    if kind == 5:
        return [_random_document(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {_random_text(rng): _random_document(rng, depth + 1) for _ in range(rng.randrange(6))}


def test_matches_canonicaljson_on_many_seeded_random_documents() -> None:
    # Volume on top of the hypothesis test: 5,000 documents from a fixed seed.
    rng = random.Random(20240229)
    for _ in range(5000):
        value = {_random_text(rng): _random_document(rng) for _ in range(rng.randrange(1, 8))}
        expected = canonicaljson.encode_canonical_json(value)
        assert encode_canonical_json(value) == expected
        assert encode_canonical_json_slow(value) == expected


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.dictionaries(TEXT, LEAVES, min_size=2, max_size=20))
def test_key_order_matches_canonicaljson(value: dict[str, Any]) -> None:
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


_BADLEAVES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=MAX_SAFE_INTEGER + 1),
    st.integers(max_value=MIN_SAFE_INTEGER - 1),
    st.sampled_from(["\ud800", "a\udfff", {1: 1}, {"a", "b"}, b"bytes"]),
)


@st.composite
def _documents_with_one_bad_leaf(draw: st.DrawFn) -> Any:
    bad = draw(_BADLEAVES)
    # Bury the bad leaf at a random depth inside valid containers.
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        siblings = draw(st.lists(LEAVES, max_size=3))
        if draw(st.booleans()):
            position = draw(st.integers(min_value=0, max_value=len(siblings)))
            bad = [*siblings[:position], bad, *siblings[position:]]
        else:
            key = draw(TEXT)
            bad = {**{f"{key}{i}": leaf for i, leaf in enumerate(siblings)}, key: bad}
    return bad


@settings(max_examples=500, derandomize=True, deadline=None)
@given(_documents_with_one_bad_leaf())
def test_any_bad_leaf_is_rejected(value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json_slow(value)


# --- Rejections ---------------------------------------------------------------


class _Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
@pytest.mark.parametrize(
    "value",
    [
        # Floats, even integral ones: "Float values are not permitted".
        1.0,
        -0.0,
        0.5,
        float("nan"),
        float("inf"),
        {"a": [1, 2.5]},
        # Integers outside [-(2**53)+1, (2**53)-1].
        2**53,
        -(2**53),
        2**63,
        2**64,
        -(2**64) - 1,
        {"depth": [MAX_SAFE_INTEGER + 1]},
        # Object keys must be strings.
        {1: "a"},
        {None: "a"},
        {True: "a"},
        {("a",): 1},
        {"a": 1, 2: "b"},
        [{"ok": {3: 4}}],
        # Lone surrogates are not Unicode scalar values.
        "\ud800",
        "x\udfffy",
        {"\udc00": 1},
        ["\ud83d"],
        # Types JSON does not have.
        {"a", "b"},
        frozenset(),
        b"bytes",
        bytearray(b"x"),
        object(),
        decimal.Decimal(1),
        datetime.datetime(2020, 1, 1),
        datetime.date(2020, 1, 1),
        uuid.UUID(int=0),
        _Colour.RED,
        _Point(1),
        {"nested": {"set": {1}}},
    ],
    # Type names, not reprs: a set's or an object's repr differs between runs,
    # and pytest-xdist needs the same test IDs in every worker.
    ids=lambda value: type(value).__name__,
)
def test_rejected(encode: Any, value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        encode(value)


def test_error_is_a_value_error() -> None:
    assert issubclass(CanonicalJSONError, ValueError)


class _StrSubclass(str):
    pass


class _Level(enum.IntEnum):
    MOD = 50


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
def test_subclasses_of_json_types_encode_as_their_base(encode: Any) -> None:
    value = OrderedDict([("b", _StrSubclass("x\n")), ("a", [_Level.MOD, (True,)])])
    assert encode(value) == b'{"a":[50,[true]],"b":"x\\n"}'
    assert encode(value) == canonicaljson.encode_canonical_json(value)


def test_deep_nesting_beyond_fast_path_matches_canonicaljson() -> None:
    # orjson stops at 254 levels; deeper documents take the reference path.
    value: Any = "leaf"
    for depth in range(400):
        value = [value] if depth % 2 else {"k": value}
    assert encode_canonical_json(value) == canonicaljson.encode_canonical_json(value)


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)


def test_input_is_not_modified() -> None:
    value = {"b": [3, {"d": 1, "c": 2}], "a": "x"}
    snapshot = json.dumps(value)
    encode_canonical_json(value)
    encode_canonical_json_slow(value)
    assert json.dumps(value) == snapshot
    assert list(value) == ["b", "a"]


# --- Room versions 1–5: relaxed canonical JSON ---------------------------------

#: Leaves that room versions 1–5 may hold and strict canonical JSON refuses.
_RELAXED_LEAVES = st.one_of(
    LEAVES,
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=MAX_SAFE_INTEGER + 1),
    st.integers(max_value=MIN_SAFE_INTEGER - 1),
)
_RELAXED_VALUES: st.SearchStrategy[Any] = st.recursive(
    _RELAXED_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(TEXT, children, max_size=6)
    ),
    max_leaves=20,
)


def _spec_reference_encoding(value: Any) -> bytes:
    """The Python the spec gives for canonical JSON (Appendices, "Canonical JSON")."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode(
        "UTF-8"
    )


@settings(max_examples=400, derandomize=True, deadline=None)
@given(_RELAXED_VALUES)
def test_relaxed_matches_the_spec_reference_and_canonicaljson(value: Any) -> None:
    """v1–v5: floats and large integers hash as Python's json writes them, which
    is the spec's reference code and what Synapse's canonicaljson produces."""
    expected = _spec_reference_encoding(value)
    assert encode_canonical_json(value, strict=False) == expected
    assert encode_canonical_json_slow(value, strict=False) == expected
    assert canonicaljson.encode_canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50.0, b"50.0"),
        (-0.0, b"-0.0"),
        (0.1, b"0.1"),
        (1e100, b"1e+100"),
        (1.5e-07, b"1.5e-07"),
        (2**53, b"9007199254740992"),
        (-(2**64) - 1, b"-18446744073709551617"),
        (
            {"users": {"@a:b": 50.5}, "ts": 2**60},
            b'{"ts":1152921504606846976,"users":{"@a:b":50.5}}',
        ),
    ],
)
def test_relaxed_numbers(value: Any, expected: bytes) -> None:
    assert encode_canonical_json(value, strict=False) == expected
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json(value)


@settings(max_examples=150, derandomize=True, deadline=None)
@given(JSON_VALUES)
def test_relaxed_is_strict_on_strict_values(value: Any) -> None:
    assert encode_canonical_json(value, strict=False) == encode_canonical_json(value)


@pytest.mark.parametrize("encode", ENCODERS, ids=ENCODER_IDS)
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [float("-inf")], 10**5000, {1: 1.5}, "\ud800", {"a", "b"}],
    ids=["nan", "inf", "-inf", "huge-int", "int-key", "surrogate", "set"],
)
def test_relaxed_still_rejects_what_json_cannot_write(encode: Any, value: Any) -> None:
    with pytest.raises(CanonicalJSONError):
        encode(value, strict=False)
