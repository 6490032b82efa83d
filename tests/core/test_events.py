"""Event wrapping and the PDU shape checks of ``Event.from_pdu``."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.core.events import (
    Event,
    EventFormatError,
    compute_event_id,
    hash_and_sign_event,
)
from ranvier.core.room_versions import get_room_version
from ranvier.core.signing import SigningKey, verify_signature

V1 = get_room_version("1")
V3 = get_room_version("3")
V10 = get_room_version("10")
V11 = get_room_version("11")
V12 = get_room_version("12")
KEY = SigningKey("k", bytes(range(32)))


def _message(**overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@alice:a.test",
        "room_id": "!room:a.test",
        "content": {"body": "hi"},
        "prev_events": ["$prev"],
        "auth_events": ["$auth1", "$auth2"],
        "origin_server_ts": 5,
        "depth": 3,
    }
    pdu.update(overrides)
    return pdu


def test_v3_event_id_is_standard_base64_and_v4_is_urlsafe() -> None:
    pdu = hash_and_sign_event(V10, _message(), "a.test", KEY)
    v3_id = compute_event_id(V3, pdu)
    v10_id = compute_event_id(V10, pdu)
    assert v3_id.startswith("$") and v10_id.startswith("$")
    # Same reference hash, two alphabets.
    assert v10_id[1:] == v3_id[1:].replace("+", "-").replace("/", "_")
    assert "=" not in v10_id


def test_event_id_key_in_v3_pdu_is_ignored_for_hashing() -> None:
    pdu = hash_and_sign_event(V10, _message(), "a.test", KEY)
    assert compute_event_id(V10, {**pdu, "event_id": "$bogus"}) == compute_event_id(V10, pdu)


def test_v1_event_must_carry_event_id() -> None:
    with pytest.raises(EventFormatError):
        compute_event_id(V1, _message())


def test_from_pdu_reads_fields() -> None:
    pdu = hash_and_sign_event(V10, _message(), "a.test", KEY)
    event = Event.from_pdu(V10, pdu)
    assert event.event_id == compute_event_id(V10, pdu)
    assert event.type == "m.room.message"
    assert event.sender == "@alice:a.test"
    assert event.origin_domain() == "a.test"
    assert event.prev_event_ids == ("$prev",)
    assert event.auth_event_ids == ("$auth1", "$auth2")
    assert not event.is_state()
    assert event.membership is None
    assert event.depth == 3 and event.origin_server_ts == 5
    # Equality and hashing by event ID.
    assert event == Event.from_pdu(V10, pdu)
    assert len({event, Event.from_pdu(V10, pdu)}) == 1
    assert event != "not an event"


def test_from_pdu_trusts_given_event_id_and_strips_synthetic_one() -> None:
    event = Event.from_pdu(V10, {**_message(), "event_id": "$given"})
    assert event.event_id == "$given"
    assert "event_id" not in event.pdu


def test_v1_reference_pairs_give_ids() -> None:
    pdu = _message(
        event_id="$e:a.test",
        prev_events=[["$p:a.test", {"sha256": "x"}]],
        auth_events=[["$a:a.test", {"sha256": "y"}]],
    )
    event = Event.from_pdu(V1, pdu)
    assert event.event_id == "$e:a.test"
    assert event.prev_event_ids == ("$p:a.test",)
    assert event.auth_event_ids == ("$a:a.test",)


@pytest.mark.parametrize(
    ("version", "overrides"),
    [
        (V10, {"type": 5}),
        (V10, {"sender": None}),
        (V10, {"content": []}),
        (V10, {"state_key": 3}),
        (V10, {"room_id": None}),
        (V10, {"origin_server_ts": "5"}),
        (V10, {"origin_server_ts": True}),
        (V10, {"depth": 1.5}),
        (V10, {"prev_events": "$x"}),
        (V10, {"auth_events": [["$x", {}]]}),
        (V1, {"event_id": "$e:a", "prev_events": ["$x"]}),
    ],
)
def test_from_pdu_rejects_malformed(version: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(EventFormatError):
        Event.from_pdu(version, _message(**overrides))


def test_state_event_properties() -> None:
    event = Event.from_pdu(
        V10,
        _message(type="m.room.member", state_key="@bob:b.test", content={"membership": "join"}),
        event_id="$m",
    )
    assert event.is_state()
    assert event.state_tuple == ("m.room.member", "@bob:b.test")
    assert event.membership == "join"


def test_redacts_moves_into_content_in_v11() -> None:
    legacy = Event.from_pdu(V10, _message(type="m.room.redaction", redacts="$t"), event_id="$r")
    assert legacy.redacts == "$t"
    v11 = Event.from_pdu(
        V11, _message(type="m.room.redaction", redacts="$old", content={"redacts": "$t"}), event_id="$r"
    )
    assert v11.redacts == "$t"
    assert Event.from_pdu(V11, _message(type="m.room.redaction"), event_id="$r").redacts is None


def test_v12_create_event_room_id_is_derived_from_its_id() -> None:
    create = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:a.test",
        "content": {"room_version": "12"},
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1,
        "depth": 1,
    }
    pdu = hash_and_sign_event(V12, create, "a.test", KEY)
    event = Event.from_pdu(V12, pdu)
    assert event.room_id == "!" + event.event_id[1:]


def test_signature_covers_redacted_form() -> None:
    pdu = hash_and_sign_event(V10, _message(), "a.test", KEY)
    # Changing the body (not kept by redaction) does not break the signature:
    # that is what the content hash is for.
    changed = {**pdu, "content": {"body": "tampered"}}
    from ranvier.core.redaction import redact

    verify_signature(redact(V10, changed), "a.test", KEY.key_id, KEY.verify_key)
