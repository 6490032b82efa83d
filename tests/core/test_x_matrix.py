"""X-Matrix request signatures (Server-Server API, "Request Authentication").

The spec's example header, cross-checks against matrix.org's ``signedjson``
(the spec's own example code), the header grammar of RFC 9110 section 11.4 as
the spec summarises it, and every way a request signature must fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import signedjson.key
import signedjson.sign

from ranvier.core.signing import SigningKey, decode_base64
from ranvier.core.x_matrix import (
    XMatrixAuthorization,
    XMatrixError,
    authorization_header,
    format_header,
    is_x_matrix,
    parse_header,
    request_json,
    request_signer,
    sign_request,
    verify_request,
)

# Appendices, "Cryptographic Test Vectors" > "Signing Key".
SPEC_SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
ORIGIN = "origin.hs.example.com"
DESTINATION = "destination.hs.example.com"
URI = "/_matrix/federation/v1/send/txn1?with=query&x=%2F"
CONTENT = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"typing": True}}]}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("1", decode_base64(SPEC_SEED))


def _spec_example_header(
    origin: str, signing_key: Any, destination: str, method: str, target: str, content: Any
) -> str:
    """The spec's example code (step 1 and 2), run with signedjson."""
    request = {"method": method, "uri": target, "origin": origin, "destination": destination}
    if content is not None:
        request["content"] = content
    signed = signedjson.sign.sign_json(request, origin, signing_key)
    headers = [
        f'X-Matrix origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'
        for key_id, sig in signed["signatures"][origin].items()
    ]
    return headers[0]


# --- the spec's example and the reference implementation -----------------------------


def test_the_spec_example_header_parses() -> None:
    header = (
        'X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",'
        'key="ed25519:key1",sig="ABCDEF..."'
    )
    assert parse_header(header) == XMatrixAuthorization(
        origin="origin.hs.example.com",
        destination="destination.hs.example.com",
        key_id="ed25519:key1",
        signature="ABCDEF...",
    )


@pytest.mark.parametrize("content", [None, CONTENT, {}, [1, "two"]])
def test_header_matches_the_spec_example_code(key: SigningKey, content: Any) -> None:
    reference_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    expected = _spec_example_header(ORIGIN, reference_key, DESTINATION, "PUT", URI, content)
    assert authorization_header(key, ORIGIN, DESTINATION, "PUT", URI, content) == expected


def test_reference_signed_header_verifies(key: SigningKey) -> None:
    reference_key = signedjson.key.decode_signing_key_base64("ed25519", "1", SPEC_SEED)
    header = _spec_example_header(ORIGIN, reference_key, DESTINATION, "POST", URI, CONTENT)
    verify_request(parse_header(header), DESTINATION, "POST", URI, CONTENT, key.verify_key)


def test_signed_object_has_content_only_when_there_is_a_body() -> None:
    assert request_json("GET", "/x", "a", "b") == {
        "method": "GET",
        "uri": "/x",
        "origin": "a",
        "destination": "b",
    }
    assert request_json("PUT", "/x", "a", "b", {"k": 1})["content"] == {"k": 1}


def test_request_signer_signs_as_the_origin(key: SigningKey) -> None:
    signer = request_signer(ORIGIN, key)
    header = signer("PUT", DESTINATION, URI, CONTENT)
    assert header == authorization_header(key, ORIGIN, DESTINATION, "PUT", URI, CONTENT)
    assert header.startswith(f'X-Matrix origin="{ORIGIN}",destination="{DESTINATION}",')
    verify_request(parse_header(header), DESTINATION, "PUT", URI, CONTENT, key.verify_key)


# --- header grammar --------------------------------------------------------------------

VALID_VARIANTS = [
    # The compatible form every sender should use.
    'X-Matrix origin="o.example",destination="d.example",key="ed25519:k",sig="c2ln"',
    # Scheme and names are case-insensitive; order does not matter.
    'x-matrix SIG="c2ln",Key="ed25519:k",DESTINATION="d.example",Origin="o.example"',
    # Several spaces after the scheme; spaces and tabs around the commas.
    'X-Matrix   origin="o.example" ,\tdestination="d.example" ,key="ed25519:k",\t sig="c2ln"',
    # Token values need no quotes; colons are allowed unquoted for older servers.
    "X-Matrix origin=o.example,destination=d.example,key=ed25519:k,sig=c2ln",
    # Backslash escapes in quoted values are undone.
    r'X-Matrix origin="o\.example",destination="d.example",key="ed25519\:k",sig="c\2ln"',
    # Unknown parameters are ignored, quoted or not, even with commas inside quotes.
    'X-Matrix origin="o.example",future="a, b",destination="d.example",x=1,key="ed25519:k",'
    'sig="c2ln"',
]


@pytest.mark.parametrize("header", VALID_VARIANTS)
def test_header_variants_parse_to_the_same_parameters(header: str) -> None:
    assert parse_header(header) == XMatrixAuthorization(
        "o.example", "d.example", "ed25519:k", "c2ln"
    )


def test_destination_may_be_missing_for_older_servers() -> None:
    parsed = parse_header('X-Matrix origin="o.example",key="ed25519:k",sig="c2ln"')
    assert parsed.destination is None


def test_base64_signature_with_plus_slash_survives() -> None:
    sig = "ab+/cd+/XSl0kuyvrXNj6A+7/tkrB9sxSbRi08Of5uRhxOqZtEQ"
    header = f'X-Matrix origin="o.example",destination="d.example",key="ed25519:k",sig="{sig}"'
    assert parse_header(header).signature == sig


def test_ipv6_and_port_origins_are_valid() -> None:
    header = 'X-Matrix origin="[::1]:8448",destination="d.example",key="ed25519:k",sig="c2ln"'
    assert parse_header(header).origin == "[::1]:8448"


def test_format_then_parse_round_trips() -> None:
    auth = XMatrixAuthorization("example.org:8448", "other.example", "ed25519:a_Bc1", "c2ln+/x")
    assert parse_header(format_header(auth)) == auth
    no_destination = XMatrixAuthorization("example.org", None, "ed25519:a", "c2ln")
    assert (
        format_header(no_destination) == 'X-Matrix origin="example.org",key="ed25519:a",sig="c2ln"'
    )


def test_format_refuses_values_needing_escapes() -> None:
    with pytest.raises(XMatrixError):
        format_header(XMatrixAuthorization('bad"name', None, "ed25519:a", "c2ln"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('X-Matrix origin="o"', True),
        ('x-MATRIX origin="o"', True),
        ("Bearer abc", False),
        ("X-Matrixorigin=o", False),
        ("", False),
    ],
)
def test_is_x_matrix(header: str, expected: bool) -> None:
    assert is_x_matrix(header) is expected


MALFORMED = {
    "other scheme": 'Bearer origin="o.example",key="ed25519:k",sig="c2ln"',
    "no space after scheme": 'X-Matrix,origin="o.example",key="ed25519:k",sig="c2ln"',
    "scheme only": "X-Matrix",
    "scheme and spaces only": "X-Matrix   ",
    "no origin": 'X-Matrix destination="d.example",key="ed25519:k",sig="c2ln"',
    "no key": 'X-Matrix origin="o.example",sig="c2ln"',
    "no sig": 'X-Matrix origin="o.example",key="ed25519:k"',
    "signature instead of sig": 'X-Matrix origin="o.example",key="ed25519:k",signature="c2ln"',
    "empty origin": 'X-Matrix origin="",key="ed25519:k",sig="c2ln"',
    "empty sig": 'X-Matrix origin="o.example",key="ed25519:k",sig=""',
    "empty destination": 'X-Matrix origin="o.example",destination="",key="ed25519:k",sig="c2ln"',
    "invalid origin": 'X-Matrix origin="o example",key="ed25519:k",sig="c2ln"',
    "origin with path": 'X-Matrix origin="o.example/x",key="ed25519:k",sig="c2ln"',
    "origin with a six-digit port": 'X-Matrix origin="o.example:123456",key="ed25519:k",sig="c2ln"',
    "parameter twice": 'X-Matrix origin="o.example",ORIGIN="evil.example",key="ed25519:k",sig="c"',
    "missing =": 'X-Matrix origin="o.example",key,sig="c2ln"',
    "unterminated quote": 'X-Matrix origin="o.example,key="ed25519:k",sig="c2ln',
    "trailing comma": 'X-Matrix origin="o.example",key="ed25519:k",sig="c2ln",',
    "junk after value": 'X-Matrix origin="o.example"x,key="ed25519:k",sig="c2ln"',
    "space instead of comma": 'X-Matrix origin="o.example" key="ed25519:k",sig="c2ln"',
    "control character": 'X-Matrix origin="o.example",key="ed25519:k\x01",sig="c2ln"',
    "empty name": 'X-Matrix ="x",origin="o.example",key="ed25519:k",sig="c2ln"',
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(XMatrixError):
        parse_header(header)


# --- verification ------------------------------------------------------------------------


def _signed(key: SigningKey, **overrides: Any) -> XMatrixAuthorization:
    request: dict[str, Any] = {
        "origin": ORIGIN,
        "destination": DESTINATION,
        "method": "PUT",
        "uri": URI,
        "content": CONTENT,
    }
    request.update(overrides)
    return sign_request(key, **request)


def test_a_correct_signature_verifies(key: SigningKey) -> None:
    verify_request(_signed(key), DESTINATION, "PUT", URI, CONTENT, key.verify_key)


def test_missing_destination_is_checked_against_our_own_name(key: SigningKey) -> None:
    signed = _signed(key)
    without = XMatrixAuthorization(signed.origin, None, signed.key_id, signed.signature)
    verify_request(without, DESTINATION, "PUT", URI, CONTENT, key.verify_key)
    # Signed for another destination: the signature no longer matches our name.
    elsewhere = _signed(key, destination="elsewhere.example")
    stripped = XMatrixAuthorization(elsewhere.origin, None, elsewhere.key_id, elsewhere.signature)
    with pytest.raises(XMatrixError):
        verify_request(stripped, DESTINATION, "PUT", URI, CONTENT, key.verify_key)


# (what was signed, what was received): each differs in one part the signature covers.
SIGNED = {"method": "PUT", "uri": URI, "content": CONTENT}
FORGERIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "other method": (SIGNED, {**SIGNED, "method": "POST"}),
    "other path": (SIGNED, {**SIGNED, "uri": "/_matrix/federation/v1/send/txn2?with=query&x=%2F"}),
    "other query": (SIGNED, {**SIGNED, "uri": "/_matrix/federation/v1/send/txn1?with=query&x=/"}),
    "query dropped": (SIGNED, {**SIGNED, "uri": "/_matrix/federation/v1/send/txn1"}),
    "modified content": (SIGNED, {**SIGNED, "content": {**CONTENT, "pdus": [{"evil": True}]}}),
    "content dropped": (SIGNED, {**SIGNED, "content": None}),
    "content added": ({**SIGNED, "content": None}, SIGNED),
}


@pytest.mark.parametrize(("signed", "received"), FORGERIES.values(), ids=FORGERIES.keys())
def test_any_change_to_the_request_breaks_the_signature(
    key: SigningKey, signed: dict[str, Any], received: dict[str, Any]
) -> None:
    authorization = _signed(key, **signed)
    verify_request(authorization, DESTINATION, **signed, verify_key=key.verify_key)
    with pytest.raises(XMatrixError):
        verify_request(authorization, DESTINATION, **received, verify_key=key.verify_key)


def test_wrong_key_fails(key: SigningKey) -> None:
    other = SigningKey("1", bytes(32))
    with pytest.raises(XMatrixError):
        verify_request(_signed(other), DESTINATION, "PUT", URI, CONTENT, key.verify_key)


def test_header_destination_not_us_fails(key: SigningKey) -> None:
    signed = _signed(key, destination="elsewhere.example")
    with pytest.raises(XMatrixError, match="destination"):
        verify_request(signed, DESTINATION, "PUT", URI, CONTENT, key.verify_key)


def test_origin_swapped_fails(key: SigningKey) -> None:
    signed = _signed(key)
    claimed = XMatrixAuthorization("victim.example", DESTINATION, signed.key_id, signed.signature)
    with pytest.raises(XMatrixError):
        verify_request(claimed, DESTINATION, "PUT", URI, CONTENT, key.verify_key)


@pytest.mark.parametrize("signature", ["not base64!", "", "c2ln"])
def test_garbage_signatures_fail(key: SigningKey, signature: str) -> None:
    auth = XMatrixAuthorization(ORIGIN, DESTINATION, "ed25519:1", signature)
    with pytest.raises(XMatrixError):
        verify_request(auth, DESTINATION, "PUT", URI, CONTENT, key.verify_key)


def test_unsupported_algorithm_fails(key: SigningKey) -> None:
    signed = _signed(key)
    other_algorithm = XMatrixAuthorization(ORIGIN, DESTINATION, "curve25519:1", signed.signature)
    with pytest.raises(XMatrixError):
        verify_request(other_algorithm, DESTINATION, "PUT", URI, CONTENT, key.verify_key)
