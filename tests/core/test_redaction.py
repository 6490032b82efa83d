"""The redaction algorithm on hand-built events, beyond redaction.jsonl.

Where deployed servers and a literal reading of the spec could differ, the
redacted form decides the reference hash and with it the event ID, so every
server must produce the same one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from ranvier.core.canonical_json import encode_canonical_json
from ranvier.core.events import compute_event_id, reference_hash_input
from ranvier.core.redaction import redact
from ranvier.core.room_versions import RoomVersion, get_room_version
from ranvier.core.signing import encode_base64

V10 = get_room_version("10")
V11 = get_room_version("11")
V12 = get_room_version("12")


def _member(content: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "m.room.member",
        "state_key": "@carol:c.test",
        "sender": "@alice:a.test",
        "room_id": "!room:a.test",
        "content": content,
        "prev_events": ["$prev"],
        "auth_events": ["$auth"],
        "origin_server_ts": 1_000,
        "depth": 4,
        "hashes": {"sha256": "AAAA"},
    }


@pytest.mark.parametrize("version", [V11, V12], ids=lambda v: f"v{v.identifier}")
def test_third_party_invite_without_signed_is_kept_empty(version: RoomVersion) -> None:
    """MSC3821 (v11+): ``third_party_invite`` "is no longer redacted, *but* will only
    contain the ``signed`` key after redaction": without ``signed`` it stays as
    ``{}``, as Synapse and ruma keep it, and the event ID follows from that."""
    content = {"membership": "invite", "third_party_invite": {"display_name": "c***@example.org"}}
    pdu = _member(content)
    assert redact(version, pdu)["content"] == {"membership": "invite", "third_party_invite": {}}
    hashed = reference_hash_input(version, pdu)
    assert hashed["content"] == {"membership": "invite", "third_party_invite": {}}
    digest = hashlib.sha256(encode_canonical_json(hashed)).digest()
    assert compute_event_id(version, pdu) == "$" + encode_base64(digest, urlsafe=True)
    # Dropping the key instead would give another event ID.
    dropped = {**hashed, "content": {"membership": "invite"}}
    other = "$" + encode_base64(
        hashlib.sha256(encode_canonical_json(dropped)).digest(), urlsafe=True
    )
    assert compute_event_id(version, pdu) != other


def test_third_party_invite_keeps_only_signed_from_v11() -> None:
    signed = {"mxid": "@carol:c.test", "token": "abc", "signatures": {"id.test": {"k": "s"}}}
    content = {
        "membership": "invite",
        "displayname": "Carol",
        "third_party_invite": {"display_name": "carol", "signed": signed},
    }
    assert redact(V11, _member(content))["content"] == {
        "membership": "invite",
        "third_party_invite": {"signed": signed},
    }
    # Before v11 the whole key goes.
    assert redact(V10, _member(content))["content"] == {"membership": "invite"}
    assert redact(V10, _member({"membership": "invite", "third_party_invite": {}}))[
        "content"
    ] == {"membership": "invite"}


@pytest.mark.parametrize("value", ["signed", None, 7, ["signed"]])
def test_third_party_invite_that_is_not_an_object_is_dropped(value: Any) -> None:
    pdu = _member({"membership": "invite", "third_party_invite": value})
    assert redact(V11, pdu)["content"] == {"membership": "invite"}


def test_third_party_invite_only_kept_on_member_events() -> None:
    pdu = {**_member({"third_party_invite": {}}), "type": "m.room.topic", "state_key": ""}
    assert redact(V11, pdu)["content"] == {}
