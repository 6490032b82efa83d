"""Content hashes, reference hashes, event IDs, v12 room IDs and signatures
against every case of hashes.jsonl (Synapse as the oracle)."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.core.events import (
    Event,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    hash_and_sign_event,
    reference_hash_input,
    room_id_from_create_event_id,
)
from ranvier.core.room_versions import get_room_version
from ranvier.core.signing import SigningKey, decode_base64, encode_base64, verify_signature
from tests.vectors import load_keys, load_vectors

CASES = load_vectors("hashes")


def _key(server: str) -> SigningKey:
    return SigningKey("1", decode_base64(load_keys()["servers"][server]["seed_unpadded_base64"]))


def test_hash_vector_count() -> None:
    assert len(CASES) == 276
    print(f"\nhashes.jsonl: {len(CASES)} cases")


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hash_vector(case: dict[str, Any]) -> None:
    version = get_room_version(case["room_version"])
    event = case["input"]["event"]
    expected = case["expected"]

    assert compute_content_hash(event) == expected["content_hash_sha256"]

    pdu = {**event, "hashes": {"sha256": expected["content_hash_sha256"]}}
    assert reference_hash_input(version, pdu) == expected["redacted_for_reference_hash"]
    digest = compute_reference_hash(version, pdu)
    assert encode_base64(digest) == expected["reference_hash_sha256"]
    assert encode_base64(digest, urlsafe=True) == expected["reference_hash_sha256_urlsafe"]
    assert compute_event_id(version, pdu) == expected["event_id"]

    server = case["input"]["signing_server"]
    signed = hash_and_sign_event(version, event, server, _key(server))
    assert signed == expected["pdu"]
    assert signed["signatures"] == expected["signatures"]
    verify_signature(
        expected["redacted_for_reference_hash"] | {"signatures": expected["signatures"]},
        server,
        "ed25519:1",
        _key(server).verify_key,
    )

    parsed = Event.from_pdu(version, expected["pdu"])
    assert parsed.event_id == expected["event_id"]
    if "room_id_derived" in expected:
        assert room_id_from_create_event_id(expected["event_id"]) == expected["room_id_derived"]
        assert parsed.room_id == expected["room_id_derived"]
