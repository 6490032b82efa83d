"""ranvier.core.filters: parsing/validation of every filter field, and the matcher."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.core.filters import (
    DEFAULT_FILTER,
    EventFilter,
    Filter,
    FilterError,
    RoomEventFilter,
    RoomFilter,
    filter_events,
    matches_wildcard,
    parse_event_fields,
    parse_filter,
    parse_filter_json,
    project_event_fields,
)

SPEC_EXAMPLE: dict[str, Any] = {
    "room": {
        "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
        "timeline": {
            "limit": 10,
            "types": ["m.room.message"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
        "ephemeral": {
            "types": ["m.receipt", "m.typing"],
            "not_rooms": ["!726s6s6q:example.com"],
            "not_senders": ["@spam:example.com"],
        },
    },
    "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
    "event_format": "client",
    "event_fields": ["type", "content", "sender"],
}


def test_parse_spec_example() -> None:
    parsed = parse_filter(SPEC_EXAMPLE)
    assert parsed.event_format == "client"
    assert parsed.event_fields == (("type",), ("content",), ("sender",))
    assert parsed.presence == EventFilter(
        types=("m.presence",), not_senders=("@alice:example.com",)
    )
    assert parsed.room.timeline == RoomEventFilter(
        limit=10,
        types=("m.room.message",),
        not_rooms=("!726s6s6q:example.com",),
        not_senders=("@spam:example.com",),
    )
    assert parsed.room.state.types == ("m.room.*",)
    assert parsed.room.ephemeral.types == ("m.receipt", "m.typing")
    assert parsed.room.account_data == RoomEventFilter()
    assert parsed.account_data == EventFilter()
    assert parsed.room.include_leave is False


def test_empty_filter_is_the_default() -> None:
    assert parse_filter({}) == DEFAULT_FILTER == Filter()


def test_parse_every_field() -> None:
    parsed = parse_filter(
        {
            "event_format": "federation",
            "account_data": {"limit": 3, "types": ["m.*"], "not_types": ["m.push_rules"]},
            "room": {
                "rooms": ["!a:x"],
                "not_rooms": ["!b:x"],
                "include_leave": True,
                "timeline": {
                    "senders": ["@u:x"],
                    "contains_url": False,
                    "lazy_load_members": True,
                    "include_redundant_members": True,
                    "unread_thread_notifications": True,
                    "rooms": ["!a:x"],
                },
                "account_data": {"not_types": ["m.tag"]},
            },
            "unknown_key": {"ignored": True},
        }
    )
    assert parsed.event_format == "federation"
    assert parsed.account_data == EventFilter(limit=3, types=("m.*",), not_types=("m.push_rules",))
    assert parsed.room.rooms == ("!a:x",)
    assert parsed.room.not_rooms == ("!b:x",)
    assert parsed.room.include_leave is True
    timeline = parsed.room.timeline
    assert timeline.senders == ("@u:x",)
    assert timeline.contains_url is False
    assert timeline.lazy_load_members and timeline.include_redundant_members
    assert timeline.unread_thread_notifications
    assert timeline.rooms == ("!a:x",)
    assert parsed.room.account_data.not_types == ("m.tag",)


def test_null_values_mean_absent() -> None:
    parsed = parse_filter({"room": {"timeline": {"limit": None, "types": None}}, "presence": None})
    assert parsed == DEFAULT_FILTER


@pytest.mark.parametrize(
    ("definition", "errcode"),
    [
        ([], "M_BAD_JSON"),
        ({"room": []}, "M_BAD_JSON"),
        ({"room": {"timeline": "x"}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": "10"}}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": True}}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": 1.5}}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"limit": 0}}}, "M_INVALID_PARAM"),
        ({"room": {"timeline": {"limit": -3}}}, "M_INVALID_PARAM"),
        ({"presence": {"types": "m.presence"}}, "M_BAD_JSON"),
        ({"presence": {"types": [1]}}, "M_BAD_JSON"),
        ({"presence": {"not_types": [None]}}, "M_BAD_JSON"),
        ({"presence": {"senders": ["alice"]}}, "M_INVALID_PARAM"),
        ({"presence": {"not_senders": ["!room:x"]}}, "M_INVALID_PARAM"),
        ({"room": {"rooms": ["#alias:x"]}}, "M_INVALID_PARAM"),
        ({"room": {"not_rooms": [5]}}, "M_BAD_JSON"),
        ({"room": {"state": {"rooms": ["@u:x"]}}}, "M_INVALID_PARAM"),
        ({"room": {"include_leave": "yes"}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"contains_url": 1}}}, "M_BAD_JSON"),
        ({"room": {"state": {"lazy_load_members": "true"}}}, "M_BAD_JSON"),
        ({"room": {"state": {"include_redundant_members": 0}}}, "M_BAD_JSON"),
        ({"room": {"timeline": {"unread_thread_notifications": []}}}, "M_BAD_JSON"),
        ({"event_format": "xml"}, "M_INVALID_PARAM"),
        ({"event_format": 1}, "M_BAD_JSON"),
        ({"event_fields": "content"}, "M_BAD_JSON"),
        ({"event_fields": [["content"]]}, "M_BAD_JSON"),
        ({"account_data": 7}, "M_BAD_JSON"),
    ],
)
def test_invalid_filters(definition: Any, errcode: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(definition)
    assert info.value.errcode == errcode


def test_parse_filter_json() -> None:
    assert parse_filter_json('{"room": {"timeline": {"limit": 5}}}').room.timeline.limit == 5
    with pytest.raises(FilterError) as info:
        parse_filter_json("{nope")
    assert info.value.errcode == "M_NOT_JSON"


# --------------------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    ("value", "pattern", "expected"),
    [
        ("m.room.message", "m.room.message", True),
        ("m.room.message", "m.room.*", True),
        ("m.room.message", "m.*", True),
        ("m.room.message", "*", True),
        ("", "*", True),
        ("m.room.message", "m.room", False),
        ("m.room.message", "*.message", True),
        ("m.room.message", "m.*.message", True),
        ("m.room.member", "m.*.message", False),
        ("m.roomXmessage", "m.room.message", False),  # '.' is literal
        ("m.room.message", "m.room.messag?", False),  # only '*' is special
        ("a+b", "a+b", True),
        ("m.room.message", "M.ROOM.*", False),  # case-sensitive
    ],
)
def test_wildcards(value: str, pattern: str, expected: bool) -> None:
    assert matches_wildcard(value, pattern) is expected


@given(st.text(max_size=20), st.text(max_size=20))
def test_star_suffix_is_prefix_match(prefix: str, rest: str) -> None:
    assert matches_wildcard(prefix + rest, prefix.replace("*", "") + "*") is (
        (prefix + rest).startswith(prefix.replace("*", ""))
    )


@given(st.text(max_size=20))
def test_pattern_without_star_is_equality(value: str) -> None:
    pattern = value.replace("*", "")
    assert matches_wildcard(value, pattern) is (value == pattern)


# --------------------------------------------------------------------------- matching


def message(
    type_: str = "m.room.message",
    sender: str = "@alice:x",
    room_id: str | None = "!r:x",
    content: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": type_,
        "sender": sender,
        "content": {"body": "hi"} if content is None else content,
    }
    if room_id is not None:
        event["room_id"] = room_id
    return event


@pytest.mark.parametrize(
    ("event_filter", "event", "expected"),
    [
        (RoomEventFilter(), message(), True),
        (RoomEventFilter(types=()), message(), False),  # an empty list allows nothing
        (RoomEventFilter(types=("m.room.message",)), message(), True),
        (RoomEventFilter(types=("m.room.member",)), message(), False),
        (RoomEventFilter(types=("m.room.*",)), message(), True),
        (RoomEventFilter(not_types=("m.room.*",)), message(), False),
        (RoomEventFilter(types=("m.room.message",), not_types=("m.*",)), message(), False),
        (RoomEventFilter(senders=("@alice:x",)), message(), True),
        (RoomEventFilter(senders=("@bob:x",)), message(), False),
        (RoomEventFilter(senders=()), message(), False),
        (RoomEventFilter(not_senders=("@alice:x",)), message(), False),
        (RoomEventFilter(senders=("@alice:x",), not_senders=("@alice:x",)), message(), False),
        (RoomEventFilter(not_senders=("@bob:x",)), message(), True),
        (RoomEventFilter(rooms=("!r:x",)), message(), True),
        (RoomEventFilter(rooms=("!other:x",)), message(), False),
        (RoomEventFilter(not_rooms=("!r:x",)), message(), False),
        (RoomEventFilter(rooms=("!r:x",), not_rooms=("!r:x",)), message(), False),
        # room checks need a known room: ephemeral events in /sync carry no room_id
        (RoomEventFilter(rooms=("!other:x",)), message(room_id=None), True),
        (RoomEventFilter(contains_url=True), message(content={"url": "mxc://x/y"}), True),
        (RoomEventFilter(contains_url=True), message(), False),
        (RoomEventFilter(contains_url=False), message(content={"url": "mxc://x/y"}), False),
        (RoomEventFilter(contains_url=False), message(), True),
        (RoomEventFilter(contains_url=True), message(content=None) | {"content": "bad"}, False),
        (EventFilter(types=("m.presence",)), {"type": "m.presence", "sender": "@a:x"}, True),
        (EventFilter(not_senders=("@a:x",)), {"type": "m.presence", "sender": "@a:x"}, False),
        # account data has no sender: only a senders list excludes it
        (EventFilter(not_senders=("@a:x",)), {"type": "m.tag", "content": {}}, True),
        (EventFilter(senders=("@a:x",)), {"type": "m.tag", "content": {}}, False),
        (EventFilter(types=("m.*",)), {"content": {}}, False),
        (EventFilter(), {"content": {}}, True),
    ],
)
def test_matches_table(event_filter: EventFilter, event: dict[str, Any], expected: bool) -> None:
    assert event_filter.matches(event) is expected


def test_matches_explicit_room_id() -> None:
    event_filter = RoomEventFilter(not_rooms=("!r:x",))
    assert event_filter.matches(message(room_id=None), room_id="!r:x") is False
    assert event_filter.matches(message(room_id=None), room_id="!s:x") is True


def test_matches_ranvier_event() -> None:
    from ranvier.core.events import Event
    from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS

    version = KNOWN_ROOM_VERSIONS["10"]
    pdu = {
        "type": "m.room.message",
        "sender": "@alice:x",
        "room_id": "!r:x",
        "content": {"body": "hi", "url": "mxc://x/y"},
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1,
        "depth": 1,
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    event = Event.from_pdu(version, pdu)
    assert RoomEventFilter(types=("m.room.*",), contains_url=True).matches(event)
    assert not RoomEventFilter(not_rooms=("!r:x",)).matches(event)
    assert not RoomEventFilter(senders=("@bob:x",)).matches(event)


type_names = st.sampled_from(["m.room.message", "m.room.member", "m.typing", "org.x.y", "a"])
senders = st.sampled_from(["@a:x", "@b:x", "@c:y"])
rooms = st.sampled_from(["!1:x", "!2:x", "!3:y"])


@st.composite
def room_event_filters(draw: st.DrawFn) -> RoomEventFilter:
    maybe = lambda s: draw(st.none() | st.lists(s, max_size=3).map(tuple))  # noqa: E731
    return RoomEventFilter(
        types=maybe(type_names | st.just("m.room.*")),
        not_types=tuple(draw(st.lists(type_names | st.just("m.*"), max_size=2))),
        senders=maybe(senders),
        not_senders=tuple(draw(st.lists(senders, max_size=2))),
        rooms=maybe(rooms),
        not_rooms=tuple(draw(st.lists(rooms, max_size=2))),
        contains_url=draw(st.none() | st.booleans()),
    )


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    content: dict[str, Any] = {"body": "x"}
    if draw(st.booleans()):
        content["url"] = "mxc://x/y"
    return {
        "type": draw(type_names),
        "sender": draw(senders),
        "room_id": draw(rooms),
        "content": content,
    }


def reference_match(f: RoomEventFilter, event: dict[str, Any]) -> bool:
    """The spec's wording, written independently of the implementation."""

    def type_ok(pattern: str) -> bool:
        if pattern.endswith("*"):
            return bool(event["type"].startswith(pattern[:-1]))
        return bool(event["type"] == pattern)

    if any(type_ok(p) for p in f.not_types):
        return False
    if f.types is not None and not any(type_ok(p) for p in f.types):
        return False
    if event["sender"] in f.not_senders:
        return False
    if f.senders is not None and event["sender"] not in f.senders:
        return False
    if event["room_id"] in f.not_rooms:
        return False
    if f.rooms is not None and event["room_id"] not in f.rooms:
        return False
    return f.contains_url is None or f.contains_url == ("url" in event["content"])


@given(room_event_filters(), events())
def test_matcher_agrees_with_reference(f: RoomEventFilter, event: dict[str, Any]) -> None:
    assert f.matches(event) is reference_match(f, event)


@given(room_event_filters(), st.lists(events(), max_size=10), st.integers(1, 5))
def test_filter_events_keeps_order_and_limit(
    f: RoomEventFilter, batch: list[dict[str, Any]], limit: int
) -> None:
    limited = RoomEventFilter(**{**_fields(f), "limit": limit})
    kept = filter_events(limited, batch)
    expected = [event for event in batch if reference_match(f, event)][:limit]
    assert kept == expected
    assert filter_events(limited, batch, apply_limit=False) == [
        event for event in batch if reference_match(f, event)
    ]


def _fields(f: RoomEventFilter) -> dict[str, Any]:
    return {name: getattr(f, name) for name in RoomEventFilter.__dataclass_fields__}


def test_room_filter_allows_room() -> None:
    room_filter = RoomFilter(rooms=("!a:x", "!b:x"), not_rooms=("!b:x",))
    assert room_filter.filter_room_ids(["!a:x", "!b:x", "!c:x"]) == ["!a:x"]
    assert RoomFilter().filter_room_ids(["!c:x"]) == ["!c:x"]


# --------------------------------------------------------------------------- event_fields


def test_parse_event_fields_escapes() -> None:
    assert parse_event_fields(["content.body", r"content.m\.relates_to", r"content.m\\foo"]) == (
        ("content", "body"),
        ("content", "m.relates_to"),
        ("content", "m\\foo"),
    )
    assert parse_event_fields([r"content.a\xb"]) == (("content", r"a\xb"),)


def test_project_event_fields() -> None:
    event = {
        "type": "m.room.message",
        "sender": "@a:x",
        "event_id": "$e",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}, "msgtype": "m.text"},
    }
    fields = parse_event_fields(["type", "content.body", r"content.m\.relates_to", "content.nope"])
    assert project_event_fields(event, fields) == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}},
    }
    assert project_event_fields(event, None) == event
    assert project_event_fields(event, parse_event_fields(["sender.x", "missing"])) == {}
    assert (
        project_event_fields(event, parse_event_fields(["content"]))["content"] == event["content"]
    )
