"""Event wrapping and the PDU shape checks of ``Event.from_pdu``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import signedjson.key
import signedjson.sign

from ranvier.core.canonical_json import CanonicalJSONError, encode_canonical_json
from ranvier.core.events import (
    MAX_PDU_BYTES,
    Event,
    EventFormatError,
    PDUTooLargeError,
    check_pdu_size_limits,
    compute_content_hash,
    compute_event_id,
    hash_and_sign_event,
    is_third_party_invite,
    reference_hash_input,
    required_signature_servers,
    verify_event_signature,
)
from ranvier.core.room_versions import EventIdFormat, RoomVersion, get_room_version
from ranvier.core.signing import SignatureError, SigningKey, encode_base64, verify_signature

V1 = get_room_version("1")
V3 = get_room_version("3")
V5 = get_room_version("5")
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


# --------------------------------------------------------------------------------------
# Room versions 1–5: events that are not strictly canonical JSON


def _spec_json(value: Any) -> bytes:
    """The spec's reference canonical JSON (Appendices): Python's json.dumps."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def _floaty_power_levels(version: RoomVersion) -> dict[str, Any]:
    pdu = _message(
        type="m.room.power_levels",
        state_key="",
        content={"users": {"@alice:a.test": 100.0, "@bob:b.test": 50.5}, "ban": 50.0},
        origin_server_ts=2**60,
    )
    if version.event_ids_in_pdu:
        pdu.update(event_id="$pl:a.test", prev_events=[], auth_events=[])
    return pdu


@pytest.mark.parametrize("version", ["1", "2", "3", "4", "5"])
def test_v1_to_v5_floats_and_big_integers_hash_as_python_json_does(version: str) -> None:
    """Fragment v1-canonical-json: "Servers MUST NOT strictly enforce the JSON
    format" in v1–v5. Floats and integers beyond 2**53 hash and sign the way the
    spec's reference code (Python's json) writes them, as Synapse does."""
    room_version = get_room_version(version)
    signed = hash_and_sign_event(room_version, _floaty_power_levels(room_version), "a.test", KEY)
    body = {k: v for k, v in signed.items() if k not in ("hashes", "signatures", "unsigned")}
    content_hash = hashlib.sha256(_spec_json(body)).digest()
    assert signed["hashes"]["sha256"] == encode_base64(content_hash)
    assert compute_content_hash(signed, room_version) == encode_base64(content_hash)

    event = Event.from_pdu(room_version, signed)
    redacted = reference_hash_input(room_version, signed)
    assert redacted["content"]["users"]["@bob:b.test"] == 50.5
    if room_version.event_ids_in_pdu:
        assert event.event_id == "$pl:a.test"
    else:
        digest = hashlib.sha256(_spec_json(redacted)).digest()
        urlsafe = room_version.event_id_format is EventIdFormat.V4_URLSAFE
        assert event.event_id == "$" + encode_base64(digest, urlsafe=urlsafe)

    verify_event_signature(room_version, signed, "a.test", KEY.key_id, KEY.verify_key)
    # matrix.org's signedjson (canonicaljson underneath, as in Synapse) agrees.
    reference_key = signedjson.key.decode_verify_key_bytes(KEY.key_id, KEY.verify_key)
    signed_form = {**redacted, "signatures": signed["signatures"]}
    signedjson.sign.verify_signed_json(signed_form, "a.test", reference_key)


@pytest.mark.parametrize("version", ["6", "10", "12"])
def test_from_v6_floats_and_big_integers_are_refused(version: str) -> None:
    """Fragment v6-canonical-json: servers MUST strictly enforce canonical JSON."""
    room_version = get_room_version(version)
    pdu = _floaty_power_levels(room_version)
    with pytest.raises(CanonicalJSONError):
        hash_and_sign_event(room_version, pdu, "a.test", KEY)
    with pytest.raises(EventFormatError):
        Event.from_pdu(room_version, pdu)
    with pytest.raises(CanonicalJSONError):
        compute_content_hash(pdu, room_version)


def test_content_hash_without_room_version_is_strict() -> None:
    pdu = _floaty_power_levels(V3)
    with pytest.raises(CanonicalJSONError):
        compute_content_hash(pdu)
    assert compute_content_hash(pdu, V3) != compute_content_hash(_message())


def test_content_hash_covers_a_top_level_age_ts() -> None:
    """The spec removes only unsigned, signatures and hashes before the content hash;
    Synapse also drops a top-level age_ts. We keep the spec's rule. The reference
    hash is the same either way: redaction drops age_ts."""
    plain = _message()
    aged = _message(age_ts=1234)
    expected = hashlib.sha256(_spec_json(aged)).digest()
    assert compute_content_hash(aged, V10) == encode_base64(expected)
    assert compute_content_hash(aged, V10) != compute_content_hash(plain, V10)
    assert compute_event_id(V10, aged) == compute_event_id(V10, plain)


def test_event_signature_survives_redaction_and_catches_tampering() -> None:
    pdu = hash_and_sign_event(V10, _message(), "a.test", KEY)

    def verify(candidate: dict[str, Any], server: str = "a.test") -> None:
        verify_event_signature(V10, candidate, server, KEY.key_id, KEY.verify_key)

    verify({**pdu, "content": {"body": "edited"}})  # the content hash's business
    verify({**pdu, "event_id": "$synthetic"})  # not part of a v3+ PDU
    for tampered in ({**pdu, "depth": 4}, {**pdu, "sender": "@mallory:a.test"}):
        with pytest.raises(SignatureError):
            verify(tampered)
    with pytest.raises(SignatureError):
        verify(pdu, "b.test")


# --------------------------------------------------------------------------------------
# Size limits (Client-Server API "Size limits")


def _padded_to(version: RoomVersion, size: int) -> dict[str, Any]:
    """A message PDU whose canonical JSON is exactly ``size`` bytes."""
    pdu = _message(content={"body": ""})
    base = len(encode_canonical_json(pdu))
    pdu["content"] = {"body": "x" * (size - base)}
    assert len(encode_canonical_json(pdu)) == size
    return pdu


def test_pdu_of_65536_bytes_is_allowed_one_more_is_not() -> None:
    check_pdu_size_limits(V10, _padded_to(V10, MAX_PDU_BYTES))
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V10, _padded_to(V10, MAX_PDU_BYTES + 1))
    assert raised.value.field_name is None
    assert (raised.value.size, raised.value.limit) == (65_537, 65_536)
    assert issubclass(PDUTooLargeError, EventFormatError)


def test_pdu_size_counts_signatures_and_unsigned_but_not_a_v3_event_id() -> None:
    exact = _padded_to(V10, MAX_PDU_BYTES)
    check_pdu_size_limits(V10, {**exact, "event_id": "$" + "e" * 43})
    with pytest.raises(PDUTooLargeError):
        check_pdu_size_limits(V10, {**exact, "signatures": {}})
    with pytest.raises(PDUTooLargeError):
        check_pdu_size_limits(V10, {**exact, "unsigned": {}})


@pytest.mark.parametrize("field", ["sender", "room_id", "type", "state_key"])
def test_fields_of_255_bytes_are_allowed_256_are_not(field: str) -> None:
    prefix = {"sender": "@", "room_id": "!", "type": "", "state_key": ""}[field]
    fits = prefix + "a" * (254 - len(prefix)) + ":"
    assert len(fits.encode()) == 255
    check_pdu_size_limits(V10, _message(**{field: fits}))
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V10, _message(**{field: fits + "a"}))
    assert raised.value.field_name == field
    # Over 255 code points: every server drops it, in every room version.
    assert not raised.value.keep_as_rejected
    assert str(raised.value) == f"'{field}' is 256 code points, over the limit of 255"


@pytest.mark.parametrize(
    ("version", "kept"), [("1", True), ("10", True), ("11", False), ("12", False)]
)
def test_field_limits_are_bytes_not_code_points(version: str, kept: bool) -> None:
    """Bytes, as the spec says. Synapse long measured code points: in v1–v10 it
    keeps an event over 255 bytes but within 255 code points as rejected, and
    drops it only from v11 (LENIENT_EVENT_BYTE_LIMITS_ROOM_VERSIONS)."""
    room_version = get_room_version(version)
    pdu = _message(event_id="$e:a.test") if room_version.event_ids_in_pdu else _message()
    state_key = "é" * 128  # 128 code points, 256 bytes
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(room_version, {**pdu, "state_key": state_key})
    assert (raised.value.field_name, raised.value.size) == ("state_key", 256)
    assert raised.value.keep_as_rejected is kept
    assert str(raised.value) == "'state_key' is 256 bytes, over the limit of 255"
    check_pdu_size_limits(room_version, {**pdu, "state_key": "é" * 127})


def test_size_limits_apply_in_synapses_order() -> None:
    """The whole PDU first, then code points, then bytes: an event that breaks a
    limit that drops it is never merely kept as rejected."""
    over_bytes = {"type": "é" * 128}
    over_code_points = {"sender": "@" + "u" * 248 + ":a.test"}
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V10, _message(**over_bytes, **over_code_points))
    assert raised.value.field_name == "sender" and not raised.value.keep_as_rejected
    huge = _padded_to(V10, MAX_PDU_BYTES + 1)
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V10, {**huge, **over_bytes})
    assert raised.value.field_name is None and not raised.value.keep_as_rejected


def test_v1_event_id_is_size_limited() -> None:
    pdu = _floaty_power_levels(V1)
    check_pdu_size_limits(V1, {**pdu, "event_id": "$" + "e" * 247 + ":a.test"})
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V1, {**pdu, "event_id": "$" + "e" * 248 + ":a.test"})
    assert raised.value.field_name == "event_id"


def test_size_check_applies_the_room_versions_canonical_json() -> None:
    check_pdu_size_limits(V3, _floaty_power_levels(V3))
    # Relaxed (v1–5): measured to the byte as Python's json writes the float.
    near = _padded_to(V5, MAX_PDU_BYTES - len(',"n":50.0'))
    check_pdu_size_limits(V5, {**near, "content": {**near["content"], "n": 50.0}})
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V5, {**near, "content": {**near["content"], "n": 500.0}})
    assert raised.value.size == MAX_PDU_BYTES + 1
    with pytest.raises(EventFormatError) as raised:
        check_pdu_size_limits(V10, _floaty_power_levels(V10))
    assert not isinstance(raised.value, PDUTooLargeError)
    with pytest.raises(EventFormatError):
        check_pdu_size_limits(V10, _message(type="m.\ud800"))
    # Fields of the wrong type are left to Event.from_pdu.
    check_pdu_size_limits(V10, _message(type=5))


# --------------------------------------------------------------------------------------
# Whose signatures a PDU needs


def _event(version: RoomVersion, **overrides: Any) -> Event:
    pdu = _message(**overrides)
    if version.event_ids_in_pdu:
        pdu.setdefault("event_id", "$e:a.test")
        pdu.update(prev_events=[], auth_events=[])
    return Event.from_pdu(version, pdu, event_id=pdu.get("event_id", "$e"))


def _join(version: RoomVersion, **content: Any) -> Event:
    member = {"membership": "join", **content}
    return _event(version, type="m.room.member", state_key="@alice:a.test", content=member)


@pytest.mark.parametrize("version", [V3, V10], ids=["v3", "v10"])
def test_the_senders_server_signs(version: RoomVersion) -> None:
    assert required_signature_servers(_event(version)) == {"a.test"}
    assert required_signature_servers(_event(version, sender="@alice:a.test:8448")) == {
        "a.test:8448"
    }


def test_v1_v2_also_need_the_event_ids_server() -> None:
    assert required_signature_servers(_event(V1)) == {"a.test"}
    event = _event(V1, event_id="$e:b.test")
    assert required_signature_servers(event) == {"a.test", "b.test"}
    assert required_signature_servers(event, V1) == {"a.test", "b.test"}
    for event_id in ("$no-server", "e:b.test", "$e:", "$e:bad host"):
        with pytest.raises(EventFormatError, match="event_id"):
            required_signature_servers(_event(V1, event_id=event_id))


@pytest.mark.parametrize(("version", "extra"), [("7", False), ("8", True), ("12", True)])
def test_restricted_join_needs_the_authorising_server(version: str, extra: bool) -> None:
    """v8+ auth rule 4.2 (MSC3083)."""
    room_version = get_room_version(version)
    join = _join(room_version, join_authorised_via_users_server="@bob:b.test")
    expected = {"a.test", "b.test"} if extra else {"a.test"}
    assert required_signature_servers(join) == expected
    assert required_signature_servers(_join(room_version)) == {"a.test"}
    # An authorising user on the joiner's own server adds no server.
    same_server = _join(room_version, join_authorised_via_users_server="@admin:a.test")
    assert required_signature_servers(same_server) == {"a.test"}


def test_only_joins_need_the_authorising_server() -> None:
    """Rule 4.2 reads "if content has a join_authorised_via_users_server", but
    deployed servers check it on joins only; an invite or leave carrying the key
    needs no extra signature."""
    for membership in ("invite", "leave", "knock"):
        content = {"membership": membership, "join_authorised_via_users_server": "@bob:b.test"}
        event = _event(V10, type="m.room.member", state_key="@carol:c.test", content=content)
        assert required_signature_servers(event) == {"a.test"}


@pytest.mark.parametrize(
    "authoriser", [42, None, "bob", ["@bob:b.test"], "bob:b.test", "@bob", "@bob:bad host"]
)
def test_malformed_authorising_user_is_a_format_error(authoriser: Any) -> None:
    with pytest.raises(EventFormatError, match="join_authorised_via_users_server"):
        required_signature_servers(_join(V10, join_authorised_via_users_server=authoriser))


def test_third_party_invites_are_exempt_from_the_senders_signature() -> None:
    """"If the event is a 3rd party invite, ... the server which actually sends
    the event may be a different server"."""
    content = {"membership": "invite", "third_party_invite": {"signed": {}}}
    invite = _event(V10, type="m.room.member", state_key="@carol:c.test", content=content)
    assert is_third_party_invite(invite)
    assert required_signature_servers(invite) == frozenset()
    old = _event(
        V1, type="m.room.member", state_key="@carol:c.test", content=content, event_id="$i:c.test"
    )
    assert required_signature_servers(old) == {"c.test"}
    plain = _event(
        V10, type="m.room.member", state_key="@carol:c.test", content={"membership": "invite"}
    )
    assert not is_third_party_invite(plain)
    assert required_signature_servers(plain) == {"a.test"}


@pytest.mark.parametrize(
    "sender",
    ["alice", "alice:a.test", "@alice", "@alice:", "@alice:bad_host!", "@a:a.test:99999999"],
)
def test_sender_without_a_valid_server_is_a_format_error(sender: str) -> None:
    with pytest.raises(EventFormatError, match="sender"):
        required_signature_servers(_event(V10, sender=sender))
