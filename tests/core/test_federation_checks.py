"""Checks performed on receipt of a PDU (steps 1–3) and the per-PDU server ACL."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core.canonical_json import encode_canonical_json
from ranvier.core.events import (
    MAX_PDU_BYTES,
    PDUTooLargeError,
    check_pdu_size_limits,
    compute_event_id,
    hash_and_sign_event,
    required_signature_servers,
)
from ranvier.core.federation_checks import (
    DeniedByServerAcl,
    InvalidPdu,
    KeyLookup,
    PduCheckResult,
    PduOutcome,
    PduSignatureError,
    PduTooLarge,
    UnsupportedRoomVersion,
    VerifyKey,
    check_content_hash,
    check_pdu_acl,
    check_pdu_format,
    check_received_pdu,
    content_hash_matches,
    exceeds_nesting,
    key_is_valid_for,
    minimum_valid_until_ts,
    required_signing_keys,
    verify_pdu_signatures,
)
from ranvier.core.redaction import redact
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from ranvier.core.server_acl import ServerAcl
from ranvier.core.signing import SigningKey, decode_base64, encode_base64, sign_json
from tests.core.json_strategies import JSON_VALUES
from tests.vectors import load_keys, load_vectors

V1 = get_room_version("1")
V2 = get_room_version("2")
V3 = get_room_version("3")
V4 = get_room_version("4")
V5 = get_room_version("5")
V6 = get_room_version("6")
V7 = get_room_version("7")
V8 = get_room_version("8")
V10 = get_room_version("10")
V11 = get_room_version("11")
V12 = get_room_version("12")
ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())

KEYS = {
    server: SigningKey("1", bytes([index]) * 32)
    for index, server in enumerate(["a.test", "b.test", "c.test", "evil.test"], start=1)
}
TS = 1_700_000_000_000
FAR_FUTURE = 2**53 - 1


def _lookup(keys: dict[str, SigningKey], valid_until_ts: int = FAR_FUTURE) -> KeyLookup:
    def keys_for(server: str, key_id: str) -> VerifyKey | None:
        key = keys.get(server)
        if key is None or key.key_id != key_id:
            return None
        return VerifyKey(key.verify_key, valid_until_ts)

    return keys_for


KEYS_FOR = _lookup(KEYS)
NO_KEYS = _lookup({})


def _event_id_field(version: RoomVersion, server: str = "a.test") -> dict[str, str]:
    return {"event_id": f"$ev1:{server}"} if version.event_ids_in_pdu else {}


def _refs(version: RoomVersion, count: int, prefix: str) -> list[Any]:
    if version.event_ids_in_pdu:
        return [[f"${prefix}{index}:a.test", {"sha256": "aGFzaA"}] for index in range(count)]
    return [f"${prefix}{index}" for index in range(count)]


def _unsigned_pdu(version: RoomVersion, **overrides: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": "@alice:a.test",
        "room_id": "!room:a.test",
        "content": {"body": "hello", "msgtype": "m.text"},
        "prev_events": _refs(version, 1, "prev"),
        "auth_events": _refs(version, 2, "auth"),
        "origin_server_ts": TS,
        "depth": 7,
        **_event_id_field(version),
    }
    pdu.update(overrides)
    return pdu


def _signed(
    version: RoomVersion, *, signers: tuple[str, ...] = ("a.test",), **overrides: Any
) -> dict[str, Any]:
    pdu = hash_and_sign_event(
        version, _unsigned_pdu(version, **overrides), signers[0], KEYS[signers[0]]
    )
    return _cosign(version, pdu, *signers[1:])


def _cosign(version: RoomVersion, pdu: dict[str, Any], *servers: str) -> dict[str, Any]:
    """Add ``servers``' signatures over the redacted event, as a co-signer does."""
    for server in servers:
        again = hash_and_sign_event(version, pdu, server, KEYS[server])
        pdu = {**pdu, "signatures": {**pdu["signatures"], **again["signatures"]}}
    return pdu


def _check(pdu: Any, version: RoomVersion | str = V10, **kwargs: Any) -> PduCheckResult:
    return check_received_pdu(pdu, version, kwargs.pop("keys_for", KEYS_FOR), **kwargs)


def _dropped(result: PduCheckResult, error: type[Exception], reason: str = "") -> None:
    assert result.outcome is PduOutcome.DROPPED
    assert result.event is None
    assert isinstance(result.error, error), result.error
    assert result.reason is not None and reason in result.reason


# --- a valid PDU, every room version ----------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_validly_signed_pdu_is_accepted_in_every_room_version(version: RoomVersion) -> None:
    pdu = _signed(version)
    result = _check(pdu, version)
    assert result.outcome is PduOutcome.ACCEPTED
    assert result.error is None and result.reason is None
    assert result.event is not None
    assert result.event.event_id == result.event_id == compute_event_id(version, pdu)
    assert result.event.content == pdu["content"]
    # The room version may be given by its identifier too.
    assert _check(pdu, version.identifier).outcome is PduOutcome.ACCEPTED


def test_event_id_format_per_room_version() -> None:
    v1_id = _check(_signed(V1), V1).event_id
    v3_id = _check(_signed(V3), V3).event_id
    v4_id = _check(_signed(V4), V4).event_id
    assert v1_id == "$ev1:a.test"
    assert v3_id is not None and v4_id is not None
    assert ":" not in v3_id and ":" not in v4_id
    assert len(v3_id) == len(v4_id) == 44


def test_v3_event_id_in_the_pdu_is_never_trusted() -> None:
    pdu = _signed(V10)
    real_id = compute_event_id(V10, pdu)
    result = _check({**pdu, "event_id": "$forged:evil.test"}, V10)
    assert result.outcome is PduOutcome.ACCEPTED
    assert result.event_id == real_id
    assert result.event is not None and "event_id" not in result.event.pdu


# --- the oracle vectors as positive cases ---------------------------------------

HASH_CASES = load_vectors("hashes")


VECTOR_SIGNING_KEYS = {
    name: SigningKey("1", decode_base64(server["seed_unpadded_base64"]))
    for name, server in load_keys()["servers"].items()
}
VECTOR_KEYS = _lookup(VECTOR_SIGNING_KEYS)


@pytest.mark.parametrize("case", HASH_CASES, ids=[case["id"] for case in HASH_CASES])
def test_signed_vector_pdus_pass(case: dict[str, Any]) -> None:
    version = get_room_version(case["room_version"])
    pdu = case["expected"]["pdu"]
    result = check_received_pdu(pdu, version, VECTOR_KEYS)
    authoriser = pdu["content"].get("join_authorised_via_users_server")
    if authoriser is not None and version.restricted_join_rule:
        # The vectors' restricted join is signed by the joining server only
        # (c.test), not by the authorising user's (a.test).
        _dropped(result, PduSignatureError, "not signed by a.test")
        return
    assert result.outcome is PduOutcome.ACCEPTED, result.reason
    assert result.event_id == case["expected"]["event_id"]
    if "room_id_derived" in case["expected"]:
        assert result.event is not None
        assert result.event.room_id == case["expected"]["room_id_derived"]


def test_vector_restricted_join_passes_once_the_authorising_server_cosigns() -> None:
    a_key = VECTOR_SIGNING_KEYS["a.test"]
    checked = 0
    for case in HASH_CASES:
        version = get_room_version(case["room_version"])
        pdu = case["expected"]["pdu"]
        if (
            "join_authorised_via_users_server" not in pdu["content"]
            or not version.restricted_join_rule
        ):
            continue
        cosigned = hash_and_sign_event(version, pdu, "a.test", a_key)
        pdu = {**pdu, "signatures": {**pdu["signatures"], **cosigned["signatures"]}}
        assert check_received_pdu(pdu, version, VECTOR_KEYS).outcome is PduOutcome.ACCEPTED
        checked += 1
    assert checked == 5  # v8–v12


# --- step 1: format --------------------------------------------------------------


@pytest.mark.parametrize("pdu", [None, [], "pdu", 5, [{"type": "m.room.message"}]])
def test_pdu_that_is_not_an_object_is_dropped(pdu: Any) -> None:
    result = _check(pdu)
    _dropped(result, InvalidPdu, "JSON object")
    assert result.event_id is None


@pytest.mark.parametrize("identifier", ["13", "", "org.example.unknown", "1.0"])
def test_unknown_room_version_is_dropped(identifier: str) -> None:
    result = _check(_signed(V10), identifier)
    _dropped(result, UnsupportedRoomVersion, "unsupported room version")
    assert result.error is not None and result.error.errcode == "M_UNSUPPORTED_ROOM_VERSION"
    with pytest.raises(UnsupportedRoomVersion):
        check_pdu_format(_signed(V10), identifier)


@pytest.mark.parametrize(
    "key",
    [
        "type",
        "sender",
        "content",
        "origin_server_ts",
        "depth",
        "hashes",
        "signatures",
        "prev_events",
        "auth_events",
        "room_id",
    ],
)
@pytest.mark.parametrize("version", [V1, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_pdu_missing_a_required_key_is_dropped(version: RoomVersion, key: str) -> None:
    pdu = _signed(version)
    del pdu[key]
    _dropped(_check(pdu, version), InvalidPdu, key)


def test_v1_pdu_without_event_id_is_dropped() -> None:
    pdu = _signed(V1)
    del pdu["event_id"]
    _dropped(_check(pdu, V1), InvalidPdu, "event_id")


def test_v12_create_event_needs_no_room_id() -> None:
    create = {
        "type": "m.room.create",
        "state_key": "",
        "content": {"room_version": "12"},
        "room_id": None,
    }
    pdu = _unsigned_pdu(V12, prev_events=[], auth_events=[], **create)
    del pdu["room_id"]
    pdu = hash_and_sign_event(V12, pdu, "a.test", KEYS["a.test"])
    result = _check(pdu, V12)
    assert result.outcome is PduOutcome.ACCEPTED
    assert result.event is not None and result.event_id is not None
    assert result.event.room_id == "!" + result.event_id[1:]
    # Before v12 a create event needs its room_id like any other.
    v11 = {key: value for key, value in _unsigned_pdu(V11, **create).items() if key != "room_id"}
    _dropped(
        _check(hash_and_sign_event(V11, v11, "a.test", KEYS["a.test"]), V11), InvalidPdu, "room_id"
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"type": 5}, "type"),
        ({"sender": None}, "sender"),
        ({"content": []}, "content"),
        ({"state_key": 3}, "state_key"),
        ({"room_id": 1}, "room_id"),
        ({"depth": "7"}, "depth"),
        ({"depth": True}, "depth"),
        ({"origin_server_ts": "now"}, "origin_server_ts"),
        ({"prev_events": "$x"}, "prev_events"),
        ({"auth_events": [5]}, "auth_events"),
    ],
)
def test_field_of_the_wrong_type_is_dropped(overrides: dict[str, Any], reason: str) -> None:
    pdu = {**_signed(V10), **overrides}
    _dropped(_check(pdu), InvalidPdu, reason)


@pytest.mark.parametrize(
    "hashes",
    [None, "hash", {}, {"sha512": "aGFzaA"}, {"sha256": 5}, {"sha256": "not base64!"}],
)
def test_malformed_hashes_are_dropped_not_redacted(hashes: Any) -> None:
    # Synapse answers 400 for a malformed hash rather than redacting.
    pdu = {**_signed(V10), "hashes": hashes}
    _dropped(_check(pdu), InvalidPdu, "hashes")


@pytest.mark.parametrize(
    "signatures",
    [None, [], "sig", {"a.test": "sig"}, {"a.test": {"ed25519:1": 5}}, {"a.test": []}],
)
def test_malformed_signatures_are_dropped(signatures: Any) -> None:
    pdu = {**_signed(V10), "signatures": signatures}
    _dropped(_check(pdu), InvalidPdu, "signatures")


@pytest.mark.parametrize(
    ("sender", "version"),
    [
        ("alice", V10),
        ("alice:a.test", V10),
        ("@alice", V10),
        ("@alice:", V10),
        ("@alice:bad_host!", V10),
        ("@alice:a.test:99999999", V1),
    ],
)
def test_sender_that_names_no_valid_server_is_dropped(sender: str, version: RoomVersion) -> None:
    pdu = _signed(version, sender=sender)
    _dropped(_check(pdu, version), InvalidPdu, "sender")


@pytest.mark.parametrize("event_id", ["$opaque", "ev1:a.test", "$ev1:", "$ev1:bad host"])
def test_v1_event_id_that_names_no_valid_server_is_dropped(event_id: str) -> None:
    pdu = _signed(V1, event_id=event_id)
    result = _check(pdu, V1)
    _dropped(result, InvalidPdu, "event_id")
    # Dropped v1 PDUs are reported under the ID they carry.
    assert result.event_id == event_id


@pytest.mark.parametrize("version", [V1, V10], ids=lambda v: f"v{v.identifier}")
def test_at_most_20_prev_events_and_10_auth_events(version: RoomVersion) -> None:
    at_limit = _signed(
        version, prev_events=_refs(version, 20, "p"), auth_events=_refs(version, 10, "a")
    )
    assert _check(at_limit, version).outcome is PduOutcome.ACCEPTED
    too_many_prev = _signed(version, prev_events=_refs(version, 21, "p"))
    result = _check(too_many_prev, version)
    _dropped(result, InvalidPdu, "more than 20 prev_events")
    # The ID is still worked out, for the per-PDU result map.
    assert result.event_id == compute_event_id(version, too_many_prev)
    too_many_auth = _signed(version, auth_events=_refs(version, 11, "a"))
    _dropped(_check(too_many_auth, version), InvalidPdu, "more than 10 auth_events")


@pytest.mark.parametrize(
    ("version", "depth", "reason"),
    [
        (V10, -1, "depth -1"),
        (V1, -(2**40), "depth"),
        (V1, 2**63, "depth"),
        (V1, 2**70, "depth"),
        # v6+: canonical JSON caps integers at 2^53 - 1.
        (V10, 2**53, "canonical JSON"),
    ],
)
def test_depth_out_of_bounds_is_dropped(version: RoomVersion, depth: int, reason: str) -> None:
    pdu = {**_signed(version), "depth": depth}
    _dropped(_check(pdu, version), InvalidPdu, reason)


@pytest.mark.parametrize("depth", [0, 1, 2**53 - 1])
def test_depth_within_bounds_is_accepted(depth: int) -> None:
    assert _check(_signed(V10, depth=depth)).outcome is PduOutcome.ACCEPTED


def _pdu_of_size(
    version: RoomVersion, size: int, signers: tuple[str, ...] = ("a.test",)
) -> dict[str, Any]:
    """A signed message whose canonical JSON is exactly ``size`` bytes."""
    probe = _signed(version, signers=signers, content={"body": ""})
    base = len(encode_canonical_json(probe))
    # The content is not signed (messages redact to {}), and the hash has a
    # fixed length, so padding the body changes the size byte for byte.
    pdu = _signed(version, signers=signers, content={"body": "x" * (size - base)})
    assert len(encode_canonical_json(pdu)) == size
    return pdu


@pytest.mark.parametrize("version", [V3, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_pdu_of_65536_bytes_is_accepted_and_one_more_is_dropped(version: RoomVersion) -> None:
    assert _check(_pdu_of_size(version, MAX_PDU_BYTES), version).outcome is PduOutcome.ACCEPTED
    result = _check(_pdu_of_size(version, MAX_PDU_BYTES + 1), version)
    _dropped(result, PduTooLarge, "65537 bytes")
    assert result.error is not None and result.error.errcode == "M_TOO_LARGE"


def test_size_counts_every_signature() -> None:
    single = _pdu_of_size(V10, MAX_PDU_BYTES - 10)
    assert _check(single).outcome is PduOutcome.ACCEPTED
    cosigned = _cosign(V10, single, "b.test")
    _dropped(_check(cosigned), PduTooLarge)


def test_unsigned_is_cut_to_what_the_origin_may_add() -> None:
    pdu = _signed(V10)
    pdu["unsigned"] = {
        "age": 1234,
        "redacted_because": {"type": "m.room.redaction"},
        "m.relations": {"m.replace": {}},
        "junk": "x" * 70_000,  # not counted: it is stripped first
    }
    result = _check(pdu)
    assert result.outcome is PduOutcome.ACCEPTED
    assert result.event is not None and result.event.pdu["unsigned"] == {"age": 1234}


def test_membership_events_keep_their_stripped_state() -> None:
    unsigned = {"invite_room_state": [{"type": "m.room.name"}], "knock_room_state": [], "x": 1}
    pdu = _signed(
        V10, type="m.room.member", state_key="@bob:b.test", content={"membership": "invite"}
    )
    result = _check({**pdu, "unsigned": unsigned})
    assert result.event is not None
    assert result.event.pdu["unsigned"] == {
        "invite_room_state": [{"type": "m.room.name"}],
        "knock_room_state": [],
    }


@pytest.mark.parametrize("unsigned", ["text", 5, [1], None])
def test_unsigned_that_is_not_an_object_is_removed(unsigned: Any) -> None:
    result = _check({**_signed(V10), "unsigned": unsigned})
    assert result.outcome is PduOutcome.ACCEPTED
    assert result.event is not None and "unsigned" not in result.event.pdu


@pytest.mark.parametrize("field", ["type", "state_key"])
def test_type_and_state_key_at_most_255_bytes(field: str) -> None:
    at_limit: dict[str, Any] = {"state_key": "", field: "t" * 255}
    over: dict[str, Any] = {"state_key": "", field: "t" * 256}
    assert _check(_signed(V11, **at_limit), V11).outcome is PduOutcome.ACCEPTED
    _dropped(_check(_signed(V11, **over), V11), PduTooLarge, field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "@" + "u" * 248 + ":a.test"),
        ("room_id", "!" + "r" * 248 + ":a.test"),
    ],
)
@pytest.mark.parametrize("version", [V1, V11], ids=lambda v: f"v{v.identifier}")
def test_identifiers_over_255_code_points_are_always_dropped(
    version: RoomVersion, field: str, value: str
) -> None:
    assert len(value) == 256
    overrides: dict[str, Any] = {field: value}
    pdu = _signed(version, **overrides)
    _dropped(_check(pdu, version), PduTooLarge, field)


def test_v1_event_id_over_255_code_points_is_dropped() -> None:
    event_id = "$" + "e" * 248 + ":a.test"
    _dropped(_check(_signed(V1, event_id=event_id), V1), PduTooLarge, "event_id")


def test_field_over_255_bytes_but_not_code_points_is_rejected_before_v11() -> None:
    # 128 two-byte characters: 256 bytes, 128 code points. Synapse keeps such
    # events as rejected in v1–v10 and drops them from v11.
    event_type = "é" * 128
    v10 = _check(_signed(V10, type=event_type), V10)
    assert v10.outcome is PduOutcome.REJECTED
    assert isinstance(v10.error, PduTooLarge)
    assert v10.reason == "'type' is 256 bytes, over the limit of 255"
    assert v10.event is not None and v10.event.type == event_type
    assert v10.event_id == v10.event.event_id
    _dropped(_check(_signed(V11, type=event_type), V11), PduTooLarge, "type")
    with pytest.raises(PduTooLarge):
        check_pdu_format(_signed(V12, type=event_type), V12)
    # Step 1 alone lets it through in v1–v10; the size check says why it is kept.
    event = check_pdu_format(_signed(V10, type=event_type), V10)
    with pytest.raises(PDUTooLargeError) as raised:
        check_pdu_size_limits(V10, event.pdu)
    assert raised.value.keep_as_rejected and raised.value.field_name == "type"


def test_redacted_copy_over_the_byte_limit_is_still_rejected() -> None:
    # The size verdict is the received PDU's; redaction keeps type and sender.
    pdu = _signed(V10, type="é" * 128)
    tampered = {**pdu, "content": {"body": "changed"}}
    result = _check(tampered, V10)
    assert result.outcome is PduOutcome.REJECTED
    assert result.event is not None and result.event.content == {}


def test_rejected_for_size_still_needs_valid_signatures() -> None:
    pdu = _signed(V10, type="é" * 128)
    _dropped(_check(pdu, keys_for=NO_KEYS), PduSignatureError)


def _nested(levels: int) -> Any:
    value: Any = 1
    for index in range(levels):
        value = {"a": value} if index % 2 else [value]
    return value


def test_nesting_limit() -> None:
    # The PDU is level 1 and content level 2: content nesting 98 more levels
    # makes exactly 100.
    at_limit = _signed(V10, content={"body": "x", "deep": _nested(98)})
    assert not exceeds_nesting(at_limit, 100) and exceeds_nesting(at_limit, 99)
    assert _check(at_limit).outcome is PduOutcome.ACCEPTED
    too_deep = _signed(V10, content={"body": "x", "deep": _nested(99)})
    result = _check(too_deep)
    _dropped(result, InvalidPdu, "nests more than 100 levels")
    assert result.event_id is None
    assert _check(too_deep, max_nesting=101).outcome is PduOutcome.ACCEPTED


def test_nesting_check_survives_documents_deeper_than_the_python_stack() -> None:
    assert exceeds_nesting(_nested(100_000), 1000)
    assert not exceeds_nesting(_nested(100_000), 100_001)
    assert not exceeds_nesting("leaf", 0)
    assert exceeds_nesting({}, 0)


@pytest.mark.parametrize("version", [V1, V3, V5], ids=lambda v: f"v{v.identifier}")
def test_floats_and_big_integers_pass_in_v1_to_v5(version: RoomVersion) -> None:
    """Fragment v1-canonical-json: "Servers MUST NOT strictly enforce the JSON
    format" before v6. Sizes, signatures and the content hash use the relaxed
    encoding, as Synapse's canonicaljson does, so such events are kept."""
    content = {"body": "x", "n": 1.5, "big": 2**60}
    levels = {"users": {"@alice:a.test": 100.0}, "ban": 50.0}
    # (A v5 key must also be valid until such a timestamp.)
    pdu = _signed(version, content=content, origin_server_ts=2**60)
    power_levels = _signed(version, type="m.room.power_levels", state_key="", content=levels)
    for signed in (pdu, power_levels):
        result = _check(signed, version, keys_for=_lookup(KEYS, 2**60))
        assert result.outcome is PduOutcome.ACCEPTED, result.reason
        assert result.event_id == compute_event_id(version, signed)
    tampered = _check(
        {**pdu, "content": {**content, "n": 2.5}}, version, keys_for=_lookup(KEYS, 2**60)
    )
    assert tampered.outcome is PduOutcome.REDACTED
    forged = _check({**power_levels, "content": {**levels, "ban": 0.5}}, version)
    _dropped(forged, PduSignatureError, "bad signature")


@pytest.mark.parametrize("version", [V6, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_floats_are_not_canonical_json_from_v6(version: RoomVersion) -> None:
    pdu = {**_signed(version), "content": {"body": "x", "n": 1.5}}
    _dropped(_check(pdu, version), InvalidPdu, "canonical JSON")


# --- step 2: signatures -------------------------------------------------------------


def test_forged_signature_is_dropped() -> None:
    pdu = _signed(V10)
    other = _signed(V10, depth=8)
    forged = {**pdu, "signatures": other["signatures"]}
    result = _check(forged)
    _dropped(result, PduSignatureError, "bad signature for a.test ed25519:1")
    assert result.error is not None and result.error.errcode == "M_FORBIDDEN"


def test_signature_by_a_key_other_than_the_servers_is_dropped() -> None:
    pdu = _signed(V10)
    impostor = _lookup({"a.test": SigningKey("1", bytes([9]) * 32)})
    _dropped(_check(pdu, keys_for=impostor), PduSignatureError, "bad signature")


@pytest.mark.parametrize(
    "tamper",
    [
        {"origin_server_ts": TS + 1},
        {"depth": 8},
        {"sender": "@mallory:a.test"},
        {"prev_events": ["$other"]},
        {"type": "m.room.encrypted"},
        {"state_key": ""},
    ],
)
def test_change_to_a_signed_field_is_dropped(tamper: dict[str, Any]) -> None:
    pdu = {**_signed(V10), **tamper}
    _dropped(_check(pdu), PduSignatureError, "bad signature")


def test_event_signed_only_by_another_server_is_dropped() -> None:
    pdu = hash_and_sign_event(V10, _unsigned_pdu(V10), "b.test", KEYS["b.test"])
    _dropped(_check(pdu), PduSignatureError, "not signed by a.test")


def test_unsigned_event_is_dropped() -> None:
    pdu = {**_signed(V10), "signatures": {}}
    _dropped(_check(pdu), PduSignatureError, "not signed by a.test")


def test_signature_with_an_unknown_algorithm_does_not_count() -> None:
    pdu = _signed(V10)
    signature = pdu["signatures"]["a.test"]["ed25519:1"]
    pdu["signatures"] = {"a.test": {"curve25519:1": signature}}
    _dropped(_check(pdu), PduSignatureError, "not signed by a.test")


def test_signature_from_an_unknown_key_is_skipped_but_one_is_needed() -> None:
    pdu = _signed(V10)
    _dropped(_check(pdu, keys_for=NO_KEYS), PduSignatureError, "no known key of a.test")
    # An extra signature by a key nobody knows is skipped.
    pdu["signatures"]["a.test"]["ed25519:unknown"] = "c2lnbmF0dXJl"
    assert _check(pdu).outcome is PduOutcome.ACCEPTED


def test_every_known_key_must_verify() -> None:
    pdu = _signed(V10)
    second = SigningKey("2", bytes([7]) * 32)
    keys: dict[tuple[str, str], VerifyKey] = {
        ("a.test", "ed25519:1"): VerifyKey(KEYS["a.test"].verify_key, FAR_FUTURE),
        ("a.test", "ed25519:2"): VerifyKey(second.verify_key, FAR_FUTURE),
    }

    def keys_for(server: str, key_id: str) -> VerifyKey | None:
        return keys.get((server, key_id))

    # A signature by key 2 over a different event: key 1's good signature
    # does not make up for it.
    wrong = sign_json({"other": "object"}, "a.test", second)["signatures"]["a.test"]["ed25519:2"]
    pdu["signatures"]["a.test"]["ed25519:2"] = wrong
    _dropped(_check(pdu, keys_for=keys_for), PduSignatureError, "ed25519:2")
    # With key 2 unknown, its signature is skipped.
    del keys[("a.test", "ed25519:2")]
    assert _check(pdu, keys_for=keys_for).outcome is PduOutcome.ACCEPTED


@pytest.mark.parametrize("version", [V5, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_key_expired_before_the_event_is_skipped_from_v5(version: RoomVersion) -> None:
    pdu = _signed(version)
    _dropped(
        _check(pdu, version, keys_for=_lookup(KEYS, valid_until_ts=TS - 1)),
        PduSignatureError,
        "no known key of a.test valid for this event",
    )
    # "at least as large as the origin_server_ts".
    assert _check(pdu, version, keys_for=_lookup(KEYS, TS)).outcome is PduOutcome.ACCEPTED


@pytest.mark.parametrize("version", [V1, V3, V4], ids=lambda v: f"v{v.identifier}")
def test_key_validity_is_not_enforced_before_v5(version: RoomVersion) -> None:
    pdu = _signed(version)
    assert _check(pdu, version, keys_for=_lookup(KEYS, valid_until_ts=0)).outcome is (
        PduOutcome.ACCEPTED
    )


def test_key_validity_helpers() -> None:
    v4 = check_pdu_format(_signed(V4), V4)
    v5 = check_pdu_format(_signed(V5), V5)
    assert minimum_valid_until_ts(v4) == 0
    assert minimum_valid_until_ts(v5) == TS
    assert key_is_valid_for(VerifyKey(b"k", TS), v5)
    assert not key_is_valid_for(VerifyKey(b"k", TS - 1), v5)
    assert key_is_valid_for(VerifyKey(b"k", 0), v4)


@pytest.mark.parametrize("version", [V1, V2], ids=lambda v: f"v{v.identifier}")
def test_v1_v2_need_the_event_id_servers_signature_too(version: RoomVersion) -> None:
    only_sender = _signed(version, event_id="$ev1:b.test")
    event = check_pdu_format(only_sender, version)
    assert required_signature_servers(event, version) == {"a.test", "b.test"}
    _dropped(_check(only_sender, version), PduSignatureError, "not signed by b.test")
    both = _cosign(version, only_sender, "b.test")
    assert _check(both, version).outcome is PduOutcome.ACCEPTED
    # The event ID's server alone is not enough either.
    only_event_server = {**both, "signatures": {"b.test": both["signatures"]["b.test"]}}
    _dropped(_check(only_event_server, version), PduSignatureError, "not signed by a.test")


def _restricted_join(version: RoomVersion, authoriser: Any, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "m.room.member",
        "sender": "@joiner:c.test",
        "state_key": "@joiner:c.test",
        "content": {"membership": "join", "join_authorised_via_users_server": authoriser},
        **_event_id_field(version, "c.test"),
    }
    fields.update(overrides)
    return hash_and_sign_event(version, _unsigned_pdu(version, **fields), "c.test", KEYS["c.test"])


@pytest.mark.parametrize("version", [V8, V10, V11, V12], ids=lambda v: f"v{v.identifier}")
def test_restricted_join_needs_the_authorising_servers_signature(version: RoomVersion) -> None:
    join = _restricted_join(version, "@admin:a.test")
    event = check_pdu_format(join, version)
    assert required_signing_keys(event) == {"a.test": (), "c.test": ("ed25519:1",)}
    _dropped(_check(join, version), PduSignatureError, "not signed by a.test")
    cosigned = _cosign(version, join, "a.test")
    assert _check(cosigned, version).outcome is PduOutcome.ACCEPTED
    assert required_signing_keys(check_pdu_format(cosigned, version)) == {
        "a.test": ("ed25519:1",),
        "c.test": ("ed25519:1",),
    }


@pytest.mark.parametrize("version", [V1, V7], ids=lambda v: f"v{v.identifier}")
def test_authorising_server_is_not_required_before_v8(version: RoomVersion) -> None:
    join = _restricted_join(version, "@admin:a.test")
    assert _check(join, version).outcome is PduOutcome.ACCEPTED


def test_authorising_server_is_required_for_joins_only() -> None:
    leave = _restricted_join(
        V10,
        "@admin:a.test",
        content={"membership": "leave", "join_authorised_via_users_server": "@admin:a.test"},
    )
    assert _check(leave).outcome is PduOutcome.ACCEPTED


def test_authorising_user_on_the_joiners_server_needs_no_second_signature() -> None:
    join = _restricted_join(V10, "@admin:c.test")
    assert required_signature_servers(check_pdu_format(join, V10), V10) == {"c.test"}
    assert _check(join).outcome is PduOutcome.ACCEPTED


@pytest.mark.parametrize(
    "authoriser", [5, None, ["@admin:a.test"], "admin", "@admin", "@admin:bad host"]
)
def test_authorising_user_that_is_not_a_user_id_is_dropped(authoriser: Any) -> None:
    join = _restricted_join(V10, authoriser)
    _dropped(_check(join), PduSignatureError, "join_authorised_via_users_server")


def _third_party_invite(version: RoomVersion, signer: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "m.room.member",
        "state_key": "@bob:b.test",
        "content": {
            "membership": "invite",
            "third_party_invite": {"display_name": "b...", "signed": {"mxid": "@bob:b.test"}},
        },
    }
    fields.update(overrides)
    return hash_and_sign_event(version, _unsigned_pdu(version, **fields), signer, KEYS[signer])


@pytest.mark.parametrize("version", [V3, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_third_party_invite_is_exempt_from_the_sender_check(version: RoomVersion) -> None:
    # Sent by @alice:a.test but signed by b.test (the server that exchanged
    # the third-party invite).
    invite = _third_party_invite(version, "b.test")
    assert required_signing_keys(check_pdu_format(invite, version)) == {}
    assert _check(invite, version).outcome is PduOutcome.ACCEPTED


def test_v1_third_party_invite_needs_the_event_id_servers_signature() -> None:
    invite = _third_party_invite(V1, "b.test", event_id="$inv:b.test")
    assert required_signature_servers(check_pdu_format(invite, V1), V1) == {"b.test"}
    assert _check(invite, V1).outcome is PduOutcome.ACCEPTED
    forged = _third_party_invite(V1, "c.test", event_id="$inv:b.test")
    _dropped(_check(forged, V1), PduSignatureError, "not signed by b.test")


def test_plain_invite_is_not_exempt() -> None:
    invite = _third_party_invite(V10, "b.test", content={"membership": "invite"})
    _dropped(_check(invite), PduSignatureError, "not signed by a.test")


def test_signatures_pass_for_a_redacted_copy() -> None:
    # "this step should succeed whether we have been sent the full event or a
    # redacted copy".
    event = check_pdu_format(_signed(V10), V10)
    redacted = check_content_hash(
        check_pdu_format({**event.pdu, "content": {"body": "changed"}}, V10)
    )
    assert redacted.content == {}
    verify_pdu_signatures(redacted, V10, KEYS_FOR)
    with pytest.raises(PduSignatureError):
        verify_pdu_signatures(redacted, V10, NO_KEYS)


# --- step 3: content hash -----------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=lambda v: f"v{v.identifier}")
def test_wrong_content_hash_means_the_redacted_copy(version: RoomVersion) -> None:
    pdu = _signed(
        version,
        type="m.room.member",
        state_key="@alice:a.test",
        content={"membership": "join", "displayname": "Alice"},
    )
    tampered = {**pdu, "content": {"membership": "join", "displayname": "Mallory"}}
    result = _check(tampered, version)
    assert result.outcome is PduOutcome.REDACTED
    assert result.error is None
    assert result.event is not None
    assert result.event_id == compute_event_id(version, pdu)
    assert result.event.event_id == result.event_id
    # A redacted join still makes the user joined.
    assert result.event.content == {"membership": "join"}
    assert result.event.membership == "join"
    assert "hashes" in result.event.pdu and "signatures" in result.event.pdu


def test_wrong_hash_value_means_the_redacted_copy() -> None:
    # The origin signed a hash that does not match the content it sent.
    pdu = _signed(V10)
    pdu["hashes"] = {"sha256": encode_base64(b"\x00" * 32)}
    pdu["signatures"] = sign_json(redact(V10, pdu), "a.test", KEYS["a.test"])["signatures"]
    result = _check(pdu)
    assert result.outcome is PduOutcome.REDACTED
    assert result.event is not None and result.event.content == {}


def test_content_hash_compares_decoded_bytes() -> None:
    event = check_pdu_format(_signed(V10), V10)
    good = event.pdu["hashes"]["sha256"]
    padded = good + "=" * (-len(good) % 4)
    urlsafe = good.replace("+", "-").replace("/", "_")
    for spelling in (good, padded, urlsafe):
        respelled = check_pdu_format({**event.pdu, "hashes": {"sha256": spelling}}, V10)
        assert content_hash_matches(respelled)
        assert check_content_hash(respelled) is respelled


@pytest.mark.parametrize(
    ("version", "outcome"),
    [(V10, PduOutcome.REDACTED), (V11, PduOutcome.DROPPED), (V12, PduOutcome.DROPPED)],
    ids=["v10", "v11", "v12"],
)
def test_tampered_create_content_per_redaction_rules(
    version: RoomVersion, outcome: PduOutcome
) -> None:
    # Up to v10 redaction keeps only ``creator`` of a create event, so the rest
    # of its content is covered by the hash alone: a change means the redacted
    # copy. From v11 (MSC2176) the whole create content survives redaction and
    # so is signed: a change breaks the signature.
    create: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "prev_events": [],
        "auth_events": [],
        "content": {"creator": "@alice:a.test", "room_version": version.identifier},
    }
    pdu = _unsigned_pdu(version, **create)
    if version.room_id_from_create_event:
        del pdu["room_id"]
    pdu = hash_and_sign_event(version, pdu, "a.test", KEYS["a.test"])
    assert _check(pdu, version).outcome is PduOutcome.ACCEPTED
    tampered = {**pdu, "content": {**pdu["content"], "m.federate": False}}
    result = _check(tampered, version)
    assert result.outcome is outcome
    if outcome is PduOutcome.REDACTED:
        assert result.event is not None
        assert result.event.content == {"creator": "@alice:a.test"}
    else:
        assert isinstance(result.error, PduSignatureError)


def test_hashes_of_other_algorithms_are_ignored() -> None:
    pdu = _signed(V10)
    pdu["hashes"] = {**pdu["hashes"], "sha512": "anything"}
    # hashes is signed: added after signing, it breaks the signature...
    _dropped(_check(pdu), PduSignatureError)
    # ...but signed with it, only sha256 is compared.
    pdu["signatures"] = sign_json(redact(V10, pdu), "a.test", KEYS["a.test"])["signatures"]
    assert _check(pdu).outcome is PduOutcome.ACCEPTED


# --- the server ACL -----------------------------------------------------------------

ACL = ServerAcl.from_content({"allow": ["*"], "deny": ["evil.test"]})


def test_acl_denied_origin_is_dropped_before_parsing() -> None:
    result = _check({"junk": True}, origin="evil.test:8448", acl=ACL)
    _dropped(result, DeniedByServerAcl, "evil.test:8448 is denied")
    assert result.error is not None and result.error.errcode == "M_FORBIDDEN"


def test_acl_denied_origin_result_carries_the_event_id() -> None:
    pdu = _signed(V10)
    result = _check(pdu, origin="evil.test", acl=ACL)
    _dropped(result, DeniedByServerAcl)
    assert result.event_id == compute_event_id(V10, pdu)


def test_acl_applies_to_the_senders_server_too() -> None:
    relayed = _signed(V10, signers=("evil.test",), sender="@mallory:evil.test")
    result = _check(relayed, origin="a.test", acl=ACL)
    _dropped(result, DeniedByServerAcl, "sender's server evil.test")
    event = check_pdu_format(relayed, V10)
    with pytest.raises(DeniedByServerAcl, match="sender's server"):
        check_pdu_acl(event, None, ACL)
    check_pdu_acl(event, "a.test", None)
    allowed_sender = check_pdu_format(_signed(V10), V10)
    with pytest.raises(DeniedByServerAcl, match=r"^evil\.test is denied"):
        check_pdu_acl(allowed_sender, "evil.test", ACL)
    check_pdu_acl(allowed_sender, "a.test", ACL)


def test_allowed_servers_pass_the_acl() -> None:
    assert _check(_signed(V10), origin="a.test", acl=ACL).outcome is PduOutcome.ACCEPTED
    # No ACL: nothing to deny.
    relayed = _signed(V10, signers=("evil.test",), sender="@mallory:evil.test")
    assert _check(relayed, origin="evil.test", acl=None).outcome is PduOutcome.ACCEPTED


# --- properties ---------------------------------------------------------------------


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    content=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5),
    extra=st.text(min_size=1, max_size=8),
    version=st.sampled_from(ALL_VERSIONS),
)
def test_signed_then_tampered_content(
    content: dict[str, Any], extra: str, version: RoomVersion
) -> None:
    pdu = _signed(version, content=content)
    assert _check(pdu, version).outcome is PduOutcome.ACCEPTED
    tampered = copy.deepcopy(pdu)
    tampered["content"][extra + "!"] = "added"
    result = _check(tampered, version)
    assert result.outcome is PduOutcome.REDACTED
    assert result.event is not None and result.event.content == {}
    assert result.event_id == compute_event_id(version, pdu)


#: Values worth putting in any PDU field.
HOSTILE = st.one_of(
    JSON_VALUES,
    st.sampled_from([2**64, -(2**64), 1.5, float("nan"), "\ud800", {"": {}}, [[[]]]]),
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    field=st.sampled_from(
        [
            "type",
            "sender",
            "room_id",
            "content",
            "state_key",
            "depth",
            "origin_server_ts",
            "prev_events",
            "auth_events",
            "hashes",
            "signatures",
            "unsigned",
            "event_id",
            "redacts",
            "membership",
        ]
    ),
    value=HOSTILE,
    version=st.sampled_from(ALL_VERSIONS),
)
def test_check_never_raises_on_a_hostile_field(
    field: str, value: Any, version: RoomVersion
) -> None:
    pdu = {**_signed(version), field: value}
    result = _check(pdu, version)
    assert isinstance(result, PduCheckResult)
    if result.outcome is PduOutcome.DROPPED:
        assert result.event is None and result.reason
    else:
        assert result.event is not None and result.event_id == result.event.event_id


@settings(max_examples=200, derandomize=True, deadline=None)
@given(pdu=HOSTILE, version=st.sampled_from([*ALL_VERSIONS, "99"]))
def test_check_never_raises_on_any_json(pdu: Any, version: RoomVersion | str) -> None:
    result = _check(pdu, version)
    assert result.outcome is PduOutcome.DROPPED
    assert isinstance(result.error, InvalidPdu | PduSignatureError)
