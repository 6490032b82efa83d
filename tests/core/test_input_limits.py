"""JSON depth measurement and limit (ranvier/core/input_limits.py)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ranvier.core.input_limits import (
    MAX_FEDERATED_ITEM_DEPTH,
    MAX_JSON_DEPTH,
    exceeds_depth,
    json_depth,
)
from tests.core.json_strategies import JSON_VALUES


def nested_lists(depth: int) -> Any:
    return orjson.loads(b"[" * depth + b"]" * depth)


def test_depth_counts_containers_from_the_root() -> None:
    assert [json_depth(v) for v in (1, "x", None, {}, [], {"a": 1}, [[]], {"a": [{"b": {}}]})] == [
        0, 0, 0, 1, 1, 1, 2, 4,
    ]
    assert json_depth({"a": [1, {"b": 2}], "c": [[[3]]]}) == 4


def test_exceeds_depth_at_the_boundary() -> None:
    assert not exceeds_depth(nested_lists(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert exceeds_depth(nested_lists(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    assert not exceeds_depth("scalar", 0) and exceeds_depth({}, 0)


def test_far_deeper_than_the_python_stack_does_not_recurse() -> None:
    value: Any = 1
    for _ in range(100_000):
        value = {"a": value}
    assert exceeds_depth(value, MAX_JSON_DEPTH)
    assert json_depth(value) == 100_000


def test_the_limits_leave_room_below_every_encoder() -> None:
    # serde_json refuses > 128 levels, orjson > 254: /sync wraps content 7 levels
    # down, a federation transaction 3 levels, bundled relations a few more.
    assert MAX_FEDERATED_ITEM_DEPTH == MAX_JSON_DEPTH + 1
    assert MAX_JSON_DEPTH + 7 + 4 < 128 < 254
    orjson.dumps(nested_lists(MAX_JSON_DEPTH + 7 + 4))


@given(JSON_VALUES, st.integers(0, 8))
def test_exceeds_depth_agrees_with_json_depth(value: Any, limit: int) -> None:
    assert exceeds_depth(value, limit) == (json_depth(value) > limit)
