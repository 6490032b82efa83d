"""ranvier/core/relations.py: relation parsing, edit validity and choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ranvier.core.relations import (
    Relation,
    is_valid_edit,
    latest_edit,
    may_start_thread,
    parse_relation,
    rel_type_of,
    thread_id_of,
)


@dataclass(frozen=True)
class Ev:
    event_id: str
    content: dict[str, Any] = field(default_factory=dict)
    sender: str = "@a:x"
    type: str = "m.room.message"
    room_id: str = "!r:x"
    state_key: str | None = None
    origin_server_ts: int = 0


def edit(event_id: str, target: str = "$orig", ts: int = 1, **kw: Any) -> Ev:
    content = {
        "body": "* new",
        "m.new_content": {"body": "new"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }
    return Ev(event_id, content, origin_server_ts=ts, **kw)


ORIGINAL = Ev("$orig", {"body": "old"})


def test_parse_relation_well_formed() -> None:
    content = {
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": "$root",
            "m.in_reply_to": {"event_id": "$prev"},
            "is_falling_back": True,
        }
    }
    assert parse_relation(content) == Relation("m.thread", "$root", "$prev", None)
    annotation = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$e", "key": "👍"}}
    assert parse_relation(annotation) == Relation("m.annotation", "$e", None, "👍")


def test_parse_relation_plain_reply() -> None:
    content = {"m.relates_to": {"m.in_reply_to": {"event_id": "$p"}}}
    assert parse_relation(content) == Relation(None, None, "$p", None)
    assert rel_type_of(content) is None


def test_parse_relation_malformed_is_none() -> None:
    for relates_to in (
        "x",
        [],
        {"rel_type": 5, "event_id": "$e"},
        {"rel_type": "m.thread", "event_id": 7},
        {"rel_type": "m.thread"},
        {"rel_type": "m.thread", "event_id": "not-an-id"},
        {"m.in_reply_to": "nope"},
        {"m.in_reply_to": {"event_id": None}},
        # NUL: event content may hold it, the index's text columns may not.
        {"rel_type": "m.thread\x00", "event_id": "$e"},
        {"rel_type": "m.thread", "event_id": "$e\x00"},
        {"m.in_reply_to": {"event_id": "$e\x00"}},
    ):
        assert parse_relation({"m.relates_to": relates_to}) is None, relates_to
    assert parse_relation({}) is None


def test_thread_id_of() -> None:
    assert thread_id_of({"m.relates_to": {"rel_type": "m.thread", "event_id": "$r"}}) == "$r"
    assert thread_id_of({"m.relates_to": {"rel_type": "m.replace", "event_id": "$r"}}) is None
    assert thread_id_of({"m.relates_to": {"rel_type": "m.thread", "event_id": 1}}) is None
    annotation = {"rel_type": "m.annotation", "event_id": "$r", "key": "a\x00"}
    parsed = parse_relation({"m.relates_to": annotation})
    assert parsed is not None and parsed.key is None
    assert thread_id_of({"body": "hi"}) is None


def test_may_start_thread() -> None:
    assert may_start_thread({"body": "root"})
    assert may_start_thread({"m.relates_to": {"m.in_reply_to": {"event_id": "$p"}}})
    assert not may_start_thread({"m.relates_to": {"rel_type": "m.thread", "event_id": "$r"}})
    assert not may_start_thread({"m.relates_to": {"rel_type": "m.replace", "event_id": "$r"}})


def test_valid_edit_rules() -> None:
    assert is_valid_edit(ORIGINAL, edit("$e1"))
    assert not is_valid_edit(ORIGINAL, edit("$e1", sender="@b:x"))
    assert not is_valid_edit(ORIGINAL, edit("$e1", type="m.sticker"))
    assert not is_valid_edit(ORIGINAL, edit("$e1", room_id="!other:x"))
    assert not is_valid_edit(ORIGINAL, edit("$e1", state_key=""))
    assert not is_valid_edit(ORIGINAL, edit("$e1", target="$else"))
    no_new_content = Ev("$e2", {"m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}})
    assert not is_valid_edit(ORIGINAL, no_new_content)
    state_original = Ev("$orig", {}, state_key="")
    assert not is_valid_edit(state_original, edit("$e1"))


def test_edit_of_an_edit_is_ignored() -> None:
    first = edit("$e1")
    second = edit("$e2", target="$e1")
    assert not is_valid_edit(first, second)
    assert latest_edit(first, [second]) is None


def test_encrypted_edit_needs_no_new_content() -> None:
    original = Ev("$orig", {"ciphertext": "x"}, type="m.room.encrypted")
    encrypted = Ev(
        "$e",
        {"ciphertext": "y", "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}},
        type="m.room.encrypted",
    )
    assert is_valid_edit(original, encrypted)


def test_latest_edit_by_timestamp_then_event_id() -> None:
    older, newer = edit("$z", ts=1), edit("$a", ts=2)
    assert latest_edit(ORIGINAL, [newer, older]) is newer
    tie_low, tie_high = edit("$a", ts=5), edit("$b", ts=5)
    assert latest_edit(ORIGINAL, [tie_high, tie_low]) is tie_high
    assert latest_edit(ORIGINAL, [tie_low, tie_high]) is tie_high
    invalid_newest = edit("$n", ts=9, sender="@b:x")
    assert latest_edit(ORIGINAL, [older, invalid_newest]) is older
    assert latest_edit(ORIGINAL, []) is None
