"""core/stripped_state.py: a remote's invite_room_state / knock_room_state is
kept only as well-formed, bounded stripped events (CVE-2024-52815)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.core.stripped_state import (
    MAX_STRIPPED_EVENTS,
    sanitize_stripped_state,
    strip_event,
)

NAME = {"type": "m.room.name", "state_key": "", "sender": "@a:x", "content": {"name": "N"}}


def test_well_formed_entries_are_kept_with_their_four_keys() -> None:
    entry = {**NAME, "event_id": "$e", "origin_server_ts": 5, "unsigned": {"x": 1}}
    assert sanitize_stripped_state([entry]) == [NAME]


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "x",
        {"type": "m.room.name"},
        [None, 1, "x", []],
        [{**NAME, "type": 5}],
        [{**NAME, "state_key": None}],
        [{**NAME, "sender": ["@a:x"]}],
        [{**NAME, "content": "name"}],
        [{**NAME, "type": "m.room.power_levels"}],
        [{**NAME, "content": {"name": "x" * 70_000}}],
        [{**NAME, "content": {"n": 2**60}}],
        [{**NAME, "content": {"n": 2**70}}],
        [{**NAME, "content": {"n": 1.5}}],
    ],
)
def test_malformed_entries_are_dropped(raw: Any) -> None:
    assert sanitize_stripped_state(raw) == []


def test_too_deep_content_is_dropped() -> None:
    deep: Any = {}
    for _ in range(200):
        deep = {"a": deep}
    assert sanitize_stripped_state([{**NAME, "content": deep}]) == []


def test_bounded_in_count_and_one_per_state_key() -> None:
    members = [
        {"type": "m.room.member", "state_key": f"@u{i}:x", "sender": "@a:x", "content": {}}
        for i in range(100)
    ]
    assert len(sanitize_stripped_state(members)) == MAX_STRIPPED_EVENTS
    twice = [NAME, {**NAME, "content": {"name": "Other"}}]
    assert sanitize_stripped_state(twice) == [NAME]


def test_strip_event() -> None:
    assert strip_event("m.room.name", "", "@a:x", {"name": "N"}) == NAME


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values)
def test_any_json_gives_a_list_of_stripped_events(raw: Any) -> None:
    result = sanitize_stripped_state(raw)
    assert isinstance(result, list) and len(result) <= MAX_STRIPPED_EVENTS
    for entry in result:
        assert set(entry) == {"type", "state_key", "sender", "content"}
        assert isinstance(entry["content"], dict)
