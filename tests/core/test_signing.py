"""Signing JSON (spec: Appendices, "Signing JSON", "Cryptographic Test Vectors").

The spec's test vectors byte for byte, cross-checks against matrix.org's
``signedjson`` in both directions, and every way a signature check can fail.
"""

from __future__ import annotations

import copy
import hashlib
import io
from typing import Any

import pytest
import signedjson.key
import signedjson.sign
from hypothesis import given, settings

from ranvier.core.signing import (
    SignatureError,
    SigningKey,
    decode_base64,
    encode_base64,
    sha256_base64,
    sign_json,
    signable_bytes,
    verify_signature,
)
from tests.core.json_strategies import JSON_OBJECTS

# Appendices, "Cryptographic Test Vectors" > "Signing Key".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SERVER_NAME = "domain"
KEY_ID = "ed25519:1"


@pytest.fixture(scope="module")
def spec_key() -> SigningKey:
    return SigningKey("1", decode_base64(SPEC_SEED))


@pytest.fixture(scope="module")
def reference_key() -> Any:
    """The same key as signedjson (and so Synapse) builds it."""
    return signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)


def _other_key(version: str = "2", fill: int = 7) -> SigningKey:
    return SigningKey(version, bytes([fill]) * 32)


# --- The spec's test vectors --------------------------------------------------


def test_spec_seed_is_32_bytes() -> None:
    # 43 characters carry 258 bits; the last 2 are not zero in the spec's
    # string and are ignored, as unpaddedbase64 (signedjson) ignores them.
    assert len(decode_base64(SPEC_SEED)) == 32
    assert decode_base64(SPEC_SEED) == decode_base64(SPEC_SEED[:-1] + "0")


def test_spec_vector_empty_object(spec_key: SigningKey) -> None:
    signed = sign_json({}, SERVER_NAME, spec_key)
    assert signed == {
        "signatures": {
            "domain": {
                "ed25519:1": "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
            }
        }
    }
    verify_signature(signed, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_spec_vector_object_with_data(spec_key: SigningKey) -> None:
    signed = sign_json({"one": 1, "two": "Two"}, SERVER_NAME, spec_key)
    assert signed == {
        "one": 1,
        "signatures": {
            "domain": {
                "ed25519:1": "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
            }
        },
        "two": "Two",
    }
    verify_signature(signed, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_spec_key_matches_signedjson(spec_key: SigningKey, reference_key: Any) -> None:
    assert spec_key.key_id == f"{reference_key.alg}:{reference_key.version}"
    assert spec_key.verify_key == bytes(reference_key.verify_key)
    assert spec_key.seed == bytes(reference_key)


# Appendices, "Unpadded Base64".
@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"f", "Zg"),
        (b"fo", "Zm8"),
        (b"foo", "Zm9v"),
        (b"foob", "Zm9vYg"),
        (b"fooba", "Zm9vYmE"),
        (b"foobar", "Zm9vYmFy"),
    ],
)
def test_unpadded_base64_spec_examples(raw: bytes, encoded: str) -> None:
    assert encode_base64(raw) == encoded
    assert decode_base64(encoded) == raw


def test_urlsafe_base64_uses_minus_and_underscore() -> None:
    raw = b"\xfb\xff\xbf"
    assert encode_base64(raw) == "+/+/"
    assert encode_base64(raw, urlsafe=True) == "-_-_"
    assert encode_base64(b"\xfb", urlsafe=True) == "-w"


@pytest.mark.parametrize(
    ("encoded", "raw"),
    [
        ("Zg", b"f"),
        ("Zg==", b"f"),  # padding accepted: "SHOULD accept input with or without padding"
        ("Zm8=", b"fo"),
        ("Zm9v", b"foo"),
        ("", b""),
        ("+/+/", b"\xfb\xff\xbf"),
        ("-_-_", b"\xfb\xff\xbf"),
        ("-w", b"\xfb"),
        ("-w==", b"\xfb"),
        ("_w", b"\xff"),
    ],
)
def test_decode_base64_accepts(encoded: str, raw: bytes) -> None:
    assert decode_base64(encoded) == raw


@pytest.mark.parametrize(
    "encoded",
    [
        "Z",  # one character cannot encode a byte
        "Zm9vY",
        "Zm9v!",
        "ab-c!!",  # junk after URL-safe characters used to be silently dropped
        "Zm 9v",
        "Zm9v\n",
        " Zm9v",
        "Zg==Zg",
        "=Zg",
        "+-",  # two alphabets in one value
        "/_",
        "Zé",
        "\x00",
    ],
)
def test_decode_base64_rejects(encoded: str) -> None:
    with pytest.raises(ValueError, match="invalid base64"):
        decode_base64(encoded)


@pytest.mark.parametrize("value", [None, b"Zg", 12])
def test_decode_base64_rejects_non_strings(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        decode_base64(value)


def test_sha256_base64() -> None:
    digest = hashlib.sha256(b"").digest()
    assert sha256_base64(b"") == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
    assert sha256_base64(b"", urlsafe=True) == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    assert decode_base64(sha256_base64(b"")) == digest


# --- Cross-checks with signedjson ---------------------------------------------


@settings(max_examples=300, derandomize=True, deadline=None)
@given(JSON_OBJECTS)
def test_signatures_match_signedjson_both_ways(obj: dict[str, Any]) -> None:
    obj.pop("signatures", None)  # arbitrary values there are tested separately
    if "unsigned" in obj and obj["unsigned"] is None:
        # signedjson (like the spec's sample code) drops a null unsigned; we
        # carry it over untouched. Either way it is not signed.
        del obj["unsigned"]
    key = SigningKey("1", decode_base64(SPEC_SEED))
    reference_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    reference_verify_key = signedjson.key.get_verify_key(reference_key)

    ours = sign_json(obj, "example.org", key)
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), "example.org", reference_key)
    # ed25519 is deterministic, so the two must agree exactly.
    assert ours == theirs
    signedjson.sign.verify_signed_json(ours, "example.org", reference_verify_key)
    verify_signature(theirs, "example.org", KEY_ID, key.verify_key)


def test_signedjson_signature_on_event_shape_verifies(spec_key: SigningKey) -> None:
    reference_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    event = {
        "type": "m.room.message",
        "content": {"body": "héllo \u2028 \U0001f600", "msgtype": "m.text"},
        "origin_server_ts": 1_700_000_000_000,
        "unsigned": {"age": 5},
        "signatures": {"other.example": {"ed25519:a": "c2ln"}},
    }
    theirs = signedjson.sign.sign_json(copy.deepcopy(event), SERVER_NAME, reference_key)
    verify_signature(theirs, SERVER_NAME, KEY_ID, spec_key.verify_key)
    assert sign_json(event, SERVER_NAME, spec_key) == theirs


def test_key_file_format_matches_signedjson(spec_key: SigningKey) -> None:
    # Synapse's signing key file: "ed25519 <version> <unpadded base64 seed>".
    line = spec_key.serialise()
    # The spec's seed string ends in "1": its two leftover bits are not zero.
    # Decoders ignore them, so the canonical re-encoding ends in "0".
    assert line == f"ed25519 1 {SPEC_SEED[:-1]}0"
    [reference_key] = signedjson.key.read_signing_keys(io.StringIO(line))
    assert bytes(reference_key) == spec_key.seed
    assert reference_key.version == spec_key.version

    written = io.StringIO()
    signedjson.key.write_signing_keys(written, [reference_key])
    assert SigningKey.parse(written.getvalue()) == spec_key


# --- Behaviour of sign_json ---------------------------------------------------


def test_multiple_signatures_and_servers_are_kept(spec_key: SigningKey) -> None:
    second = _other_key("2")
    third = _other_key("a_b", fill=9)
    obj = {"content": {"x": 1}}
    signed = sign_json(obj, "one.example", spec_key)
    signed = sign_json(signed, "one.example", second)
    signed = sign_json(signed, "two.example", third)

    assert set(signed["signatures"]) == {"one.example", "two.example"}
    assert set(signed["signatures"]["one.example"]) == {"ed25519:1", "ed25519:2"}
    assert set(signed["signatures"]["two.example"]) == {"ed25519:a_b"}
    verify_signature(signed, "one.example", "ed25519:1", spec_key.verify_key)
    verify_signature(signed, "one.example", "ed25519:2", second.verify_key)
    verify_signature(signed, "two.example", "ed25519:a_b", third.verify_key)
    # Each signature is the one a lone signer would have made.
    alone = sign_json(obj, "two.example", third)
    assert alone["signatures"]["two.example"] == signed["signatures"]["two.example"]


def test_resigning_with_the_same_key_replaces_only_that_signature(spec_key: SigningKey) -> None:
    obj = {"a": 1, "signatures": {"domain": {"ed25519:1": "stale", "ed25519:0": "kept"}}}
    signed = sign_json(obj, SERVER_NAME, spec_key)
    assert signed["signatures"]["domain"]["ed25519:0"] == "kept"
    verify_signature(signed, SERVER_NAME, KEY_ID, spec_key.verify_key)


@pytest.mark.parametrize(
    "signatures", [None, "sig", ["a"], {"domain": "sig"}, {"other.example": None}]
)
def test_sign_json_rejects_malformed_existing_signatures(
    spec_key: SigningKey, signatures: Any
) -> None:
    with pytest.raises(SignatureError, match="object of objects"):
        sign_json({"a": 1, "signatures": signatures}, SERVER_NAME, spec_key)


def test_sign_json_rejects_non_canonical_content(spec_key: SigningKey) -> None:
    with pytest.raises(ValueError):
        sign_json({"a": 1.5}, SERVER_NAME, spec_key)


def test_sign_json_does_not_modify_its_input(spec_key: SigningKey) -> None:
    obj = {"a": [1], "signatures": {"x.example": {"ed25519:1": "abc"}}, "unsigned": {"u": 1}}
    snapshot = copy.deepcopy(obj)
    sign_json(obj, "x.example", spec_key)
    sign_json(obj, "y.example", spec_key)
    assert obj == snapshot


def test_unsigned_is_excluded_and_carried_over(spec_key: SigningKey) -> None:
    plain = sign_json({"one": 1, "two": "Two"}, SERVER_NAME, spec_key)
    with_unsigned = sign_json(
        {"one": 1, "two": "Two", "unsigned": {"age_ts": 922834800000}}, SERVER_NAME, spec_key
    )
    assert with_unsigned["unsigned"] == {"age_ts": 922834800000}
    assert with_unsigned["signatures"] == plain["signatures"]
    # Intermediaries may change unsigned data and add signatures.
    with_unsigned["unsigned"]["age"] = 10
    with_unsigned["signatures"]["other.example"] = {"ed25519:x": "c2ln"}
    verify_signature(with_unsigned, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_signable_bytes_drop_signatures_and_unsigned_only() -> None:
    obj = {"b": 1, "a": {"unsigned": 1, "signatures": 2}, "signatures": {}, "unsigned": {}}
    assert signable_bytes(obj) == b'{"a":{"signatures":2,"unsigned":1},"b":1}'


def test_spec_signing_details_example_shape(spec_key: SigningKey) -> None:
    # Appendices, "Signing Details": signatures land under
    # signatures[<entity>][<algorithm>:<key id>], unsigned survives.
    obj = {
        "name": "example.org",
        "signing_keys": {"ed25519:1": encode_base64(spec_key.verify_key)},
        "unsigned": {"age_ts": 922834800000},
    }
    signed = sign_json(obj, "example.org", spec_key)
    assert list(signed["signatures"]) == ["example.org"]
    assert list(signed["signatures"]["example.org"]) == ["ed25519:1"]
    assert len(decode_base64(signed["signatures"]["example.org"]["ed25519:1"])) == 64
    assert signed["unsigned"] == {"age_ts": 922834800000}


# --- Failing checks -----------------------------------------------------------


@pytest.fixture(scope="module")
def signed(spec_key: SigningKey) -> dict[str, Any]:
    return sign_json({"one": 1, "two": "Two", "nested": {"k": ["v"]}}, SERVER_NAME, spec_key)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: o.update(one=2),
        lambda o: o.update(extra=None),
        lambda o: o.pop("two"),
        lambda o: o["nested"]["k"].append("w"),
        lambda o: o["nested"].update(k="v"),
        lambda o: o.update(two="two"),
    ],
)
def test_tampered_content_fails(spec_key: SigningKey, signed: dict[str, Any], tamper: Any) -> None:
    tampered = copy.deepcopy(signed)
    tamper(tampered)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_signature(tampered, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_wrong_key_fails(signed: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        verify_signature(signed, SERVER_NAME, KEY_ID, _other_key().verify_key)


def test_signature_from_another_server_does_not_count(
    spec_key: SigningKey, signed: dict[str, Any]
) -> None:
    moved = {**signed, "signatures": {"evil.example": signed["signatures"][SERVER_NAME]}}
    with pytest.raises(SignatureError, match="missing signature"):
        verify_signature(moved, SERVER_NAME, KEY_ID, spec_key.verify_key)


@pytest.mark.parametrize(
    "signatures",
    [
        None,
        {},
        {"domain": {}},
        {"domain": {"ed25519:2": "c2ln"}},
        {"domain": "not an object"},
        {"domain": ["ed25519:1"]},
        "not an object",
    ],
)
def test_missing_signature_fails(spec_key: SigningKey, signatures: Any) -> None:
    obj: dict[str, Any] = {"one": 1}
    if signatures is not None:
        obj["signatures"] = signatures
    with pytest.raises(SignatureError, match="missing signature"):
        verify_signature(obj, SERVER_NAME, KEY_ID, spec_key.verify_key)


@pytest.mark.parametrize(
    "signature",
    [
        "not base64!",
        "Z",
        "",  # decodes to zero bytes: not a signature
        "c2ln",  # valid base64, three bytes
        encode_base64(bytes(80)),
        12345,
        None,
    ],
)
def test_malformed_signature_fails(
    spec_key: SigningKey, signed: dict[str, Any], signature: Any
) -> None:
    obj = {**signed, "signatures": {SERVER_NAME: {KEY_ID: signature}}}
    with pytest.raises(SignatureError):
        verify_signature(obj, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_urlsafe_or_padded_signature_still_verifies(
    spec_key: SigningKey, signed: dict[str, Any]
) -> None:
    raw = decode_base64(signed["signatures"][SERVER_NAME][KEY_ID])
    for variant in (encode_base64(raw, urlsafe=True), encode_base64(raw) + "=="):
        obj = {**signed, "signatures": {SERVER_NAME: {KEY_ID: variant}}}
        verify_signature(obj, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_unknown_algorithm_fails(spec_key: SigningKey, signed: dict[str, Any]) -> None:
    signature = signed["signatures"][SERVER_NAME][KEY_ID]
    obj = {**signed, "signatures": {SERVER_NAME: {"curve25519:1": signature}}}
    with pytest.raises(SignatureError, match="unsupported key algorithm"):
        verify_signature(obj, SERVER_NAME, "curve25519:1", spec_key.verify_key)


@pytest.mark.parametrize("verify_key", [b"", bytes(31), bytes(33)])
def test_malformed_verify_key_fails(signed: dict[str, Any], verify_key: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(signed, SERVER_NAME, KEY_ID, verify_key)


def test_object_that_is_not_canonical_json_fails(
    spec_key: SigningKey, signed: dict[str, Any]
) -> None:
    with pytest.raises(SignatureError):
        verify_signature({**signed, "one": 1.0}, SERVER_NAME, KEY_ID, spec_key.verify_key)


def test_signature_error_is_a_value_error() -> None:
    assert issubclass(SignatureError, ValueError)


# --- SigningKey ---------------------------------------------------------------


def test_serialise_parse_roundtrip() -> None:
    for key in (_other_key("a_1"), SigningKey.generate("auto"), SigningKey("x", bytes(32))):
        line = key.serialise()
        assert line.startswith(f"ed25519 {key.version} ")
        assert "=" not in line
        assert SigningKey.parse(line) == key
        assert SigningKey.parse(f"  {line}\n") == key


def test_parse_accepts_padded_and_urlsafe_seed() -> None:
    key = _other_key("1", fill=0xFB)
    raw = key.seed
    assert SigningKey.parse(f"ed25519 1 {encode_base64(raw)}==") == key
    assert SigningKey.parse(f"ed25519 1 {encode_base64(raw, urlsafe=True)}") == key


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ed25519",
        "ed25519 1",
        f"ed25519 1 {SPEC_SEED} extra",
        f"curve25519 1 {SPEC_SEED}",
        f"ED25519 1 {SPEC_SEED}",
        "ed25519 1 !!!not-base64!!!",
        f"ed25519 1 {encode_base64(bytes(31))}",
        f"ed25519 1 {encode_base64(bytes(33))}",
        f"ed25519 1 {encode_base64(bytes(64))}",
    ],
)
def test_parse_rejects_bad_lines(line: str) -> None:
    with pytest.raises(ValueError):
        SigningKey.parse(line)


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "0" * 32])
def test_seed_must_be_32_bytes(seed: Any) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SigningKey("1", seed)


def test_generate_makes_distinct_working_keys() -> None:
    first, second = SigningKey.generate("a"), SigningKey.generate("a")
    assert first.key_id == "ed25519:a"
    assert len(first.seed) == 32
    assert first.seed != second.seed
    signed = sign_json({"x": 1}, "s.example", first)
    verify_signature(signed, "s.example", "ed25519:a", first.verify_key)
    with pytest.raises(SignatureError):
        verify_signature(signed, "s.example", "ed25519:a", second.verify_key)


def test_repr_does_not_leak_the_seed(spec_key: SigningKey) -> None:
    text = repr(spec_key)
    assert "version='1'" in text
    assert SPEC_SEED not in text
    assert repr(spec_key.seed) not in text


def test_keys_compare_by_value_and_stay_hashable(spec_key: SigningKey) -> None:
    twin = SigningKey("1", decode_base64(SPEC_SEED))
    spec_key.sign(b"warm the cache")
    assert twin == spec_key
    assert hash(twin) == hash(spec_key)
    assert twin != SigningKey("2", decode_base64(SPEC_SEED))


def test_raw_sign_is_ed25519(spec_key: SigningKey, reference_key: Any) -> None:
    message = b"canonical bytes"
    assert spec_key.sign(message) == bytes(reference_key.sign(message).signature)
    assert len(spec_key.verify_key) == 32
