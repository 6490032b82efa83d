"""POST /keys/upload, /keys/query, /keys/claim, cross-signing and signatures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from ranvier.core.signing import SigningKey, encode_base64, sign_json
from ranvier.storage import current_stream_position
from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import (
    Client,
    CrossSigning,
    Device,
    call,
    new_device,
    new_user,
    password_auth,
    sign_with,
)
from tests.api.rooms_support import local_id

pytestmark = pytest.mark.port_server_name


async def _upload(client: Client, device: Device, body: dict[str, Any]) -> tuple[int, Any]:
    return await call(client, "POST", "/keys/upload", device, body)


async def _counts(client: Client, device: Device) -> dict[str, int]:
    status, body = await _upload(client, device, {})
    assert status == 200
    counts: dict[str, int] = body["one_time_key_counts"]
    return counts


# --- upload ------------------------------------------------------------------------


async def test_upload_device_and_one_time_keys(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    hs = client.app[HOMESERVER]
    # Registering made alice's first device: a device list change of its own.
    start = await current_stream_position(hs.database, "device_lists")
    status, body = await _upload(client, alice, {
        "device_keys": alice.device_keys(),
        "one_time_keys": {
            "signed_curve25519:AAAA": alice.signed_key("k1"),
            "signed_curve25519:AAAB": alice.signed_key("k2"),
            "curve25519:AAAC": "plain",
        },
        "fallback_keys": {"signed_curve25519:FB": alice.signed_key("fb", fallback=True)},
    })
    assert (status, body) == (200, {"one_time_key_counts": {"signed_curve25519": 2, "curve25519": 1}})
    assert await current_stream_position(hs.database, "device_lists") == start + 1
    # The same upload again changes nothing.
    status, body = await _upload(client, alice, {
        "device_keys": alice.device_keys(),
        "one_time_keys": {"signed_curve25519:AAAA": alice.signed_key("k1")},
    })
    assert body["one_time_key_counts"] == {"signed_curve25519": 2, "curve25519": 1}
    assert await current_stream_position(hs.database, "device_lists") == start + 1
    assert await hs.e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == ["signed_curve25519"]
    # No keys yet: signed_curve25519 is reported as 0.
    bob = await new_user(client, "bob")
    assert await _counts(client, bob) == {"signed_curve25519": 0}


async def test_upload_rejects_keys_of_another_user_or_device(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    for keys in (bob.device_keys(), alice.device_keys(device_id="OTHER"), alice.device_keys(user_id=bob.user_id)):
        status, body = await _upload(client, alice, {"device_keys": keys})
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), keys
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["device_keys"] == {alice.user_id: {}}


async def test_upload_rejects_bad_signature_and_stores_nothing(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    keys = alice.device_keys()
    keys["algorithms"] = ["m.megolm.v1.aes-sha2"]  # signed content changed afterwards
    status, body = await _upload(client, alice, {
        "device_keys": keys, "one_time_keys": {"signed_curve25519:A": alice.signed_key("k")},
    })
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    # Signed by some other key.
    impostor = sign_json({k: v for k, v in alice.device_keys().items() if k != "signatures"},
                         alice.user_id, SigningKey.generate(alice.device_id))
    status, body = await _upload(client, alice, {"device_keys": impostor})
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    # Not signed at all.
    unsigned = {k: v for k, v in alice.device_keys().items() if k != "signatures"}
    status, body = await _upload(client, alice, {"device_keys": unsigned})
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    assert await _counts(client, alice) == {"signed_curve25519": 0}


async def test_upload_malformed_keys(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"one_time_keys": {"nocolon": "k"}}, 400, "M_INVALID_PARAM"),
        ({"one_time_keys": {":id": "k"}}, 400, "M_INVALID_PARAM"),
        ({"one_time_keys": {"alg:": "k"}}, 400, "M_INVALID_PARAM"),
        ({"one_time_keys": {"signed_curve25519:A": 5}}, 400, "M_BAD_JSON"),
        ({"one_time_keys": {"signed_curve25519:A": {"nokey": 1}}}, 400, "M_BAD_JSON"),
        ({"one_time_keys": {"signed_curve25519:A": {"key": "k", "signatures": []}}}, 400, "M_BAD_JSON"),
        ({"one_time_keys": {"signed_curve25519:A": ""}}, 400, "M_INVALID_PARAM"),
        ({"one_time_keys": []}, 400, "M_BAD_JSON"),
        ({"fallback_keys": {"a:1": "x", "a:2": "y"}}, 400, "M_INVALID_PARAM"),
        ({"device_keys": []}, 400, "M_BAD_JSON"),
        ({"device_keys": alice.device_keys(algorithms="x")}, 400, "M_BAD_JSON"),
        ({"device_keys": alice.device_keys(keys={"ed25519:" + alice.device_id: 1})}, 400, "M_BAD_JSON"),
        ({"device_keys": alice.device_keys(keys={"curve25519:X": "c"})}, 400, "M_INVALID_PARAM"),
        ({"device_keys": alice.device_keys(keys={"nocolon": "c", f"ed25519:{alice.device_id}": alice.ed25519})},
         400, "M_INVALID_PARAM"),
        ({"one_time_keys": {f"signed_curve25519:{i}": "k" for i in range(1001)}}, 413, "M_TOO_LARGE"),
    ]
    for request, status, errcode in cases:
        got_status, body = await _upload(client, alice, request)
        assert (got_status, body["errcode"]) == (status, errcode), request
    status, body = await call(client, "POST", "/keys/upload", alice, data=b"nope", headers=alice.headers)
    assert (status, body["errcode"]) == (400, "M_NOT_JSON")
    status, body = await call(client, "POST", "/keys/upload", alice, data=b"x" * (1024 * 1024 + 1),
                              headers=alice.headers)
    assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
    status, body = await call(client, "POST", "/keys/upload", None, {})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    assert await _counts(client, alice) == {"signed_curve25519": 0}
    assert await client.app[HOMESERVER].e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []


async def test_duplicate_one_time_key_with_other_content_rejects_whole_upload(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    await _upload(client, alice, {"one_time_keys": {"signed_curve25519:A": alice.signed_key("k1")}})
    status, body = await _upload(client, alice, {
        "one_time_keys": {"signed_curve25519:A": alice.signed_key("other"),
                          "signed_curve25519:B": alice.signed_key("k2")},
        "fallback_keys": {"signed_curve25519:F": alice.signed_key("f", fallback=True)},
    })
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert await _counts(client, alice) == {"signed_curve25519": 1}
    assert await client.app[HOMESERVER].e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []


async def test_changed_device_keys_replace_and_count_as_a_change(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    hs = client.app[HOMESERVER]
    start = await current_stream_position(hs.database, "device_lists")
    await _upload(client, alice, {"device_keys": alice.device_keys()})
    alice.signing_key = SigningKey.generate(alice.device_id)
    status, _ = await _upload(client, alice, {"device_keys": alice.device_keys()})
    assert status == 200
    assert await current_stream_position(hs.database, "device_lists") == start + 2
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["device_keys"][alice.user_id][alice.device_id]["keys"][f"ed25519:{alice.device_id}"] == alice.ed25519


# --- query -------------------------------------------------------------------------


async def test_query_keys(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    second = await new_device(client, alice, "SECOND")
    bob = await new_user(client, "bob")
    await _upload(client, alice, {"device_keys": alice.device_keys()})
    await _upload(client, second, {"device_keys": second.device_keys()})
    await call(client, "PUT", "/devices/SECOND", second, {"display_name": "Laptop"})
    status, body = await call(client, "POST", "/keys/query", bob, {
        "device_keys": {alice.user_id: [], bob.user_id: [], local_id(client, "@ghost"): [], "@x:remote.example": []},
        "timeout": 1000,
    })
    assert status == 200
    expected_first = alice.device_keys() | {"unsigned": {}}
    assert body["device_keys"] == {
        alice.user_id: {
            alice.device_id: expected_first,
            "SECOND": second.device_keys() | {"unsigned": {"device_display_name": "Laptop"}},
        },
        bob.user_id: {},
    }
    # remote.example cannot be reached: its server goes into failures.
    assert list(body["failures"]) == ["remote.example"]
    assert body["failures"]["remote.example"]["status"] == 503
    assert body["master_keys"] == body["self_signing_keys"] == body["user_signing_keys"] == {}
    status, body = await call(client, "POST", "/keys/query", bob, {"device_keys": {alice.user_id: ["SECOND", "NOPE"]}})
    assert list(body["device_keys"][alice.user_id]) == ["SECOND"]


async def test_query_bad_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    for request, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"device_keys": []}, "M_BAD_JSON"),
        ({"device_keys": {"not-a-user": []}}, "M_INVALID_PARAM"),
        ({"device_keys": {alice.user_id: "D"}}, "M_BAD_JSON"),
        ({"device_keys": {alice.user_id: [1]}}, "M_BAD_JSON"),
    ):
        status, body = await call(client, "POST", "/keys/query", alice, request)
        assert (status, body["errcode"]) == (400, errcode), request


# --- claim -------------------------------------------------------------------------


async def test_claim_one_time_keys_then_fallback(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    hs = client.app[HOMESERVER]
    k1, k2 = alice.signed_key("k1"), alice.signed_key("k2")
    fallback = alice.signed_key("fb", fallback=True)
    await _upload(client, alice, {"one_time_keys": {"signed_curve25519:A1": k1}})
    await _upload(client, alice, {"one_time_keys": {"signed_curve25519:A0": k2},
                                  "fallback_keys": {"signed_curve25519:F": fallback}})
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}, "timeout": 10}
    answers = [await call(client, "POST", "/keys/claim", bob, request) for _ in range(4)]
    assert [a[0] for a in answers] == [200] * 4
    keys = [a[1]["one_time_keys"][alice.user_id][alice.device_id] for a in answers]
    # In upload order, each once; then the fallback key, again and again.
    assert keys == [
        {"signed_curve25519:A1": k1},
        {"signed_curve25519:A0": k2},
        {"signed_curve25519:F": fallback},
        {"signed_curve25519:F": fallback},
    ]
    assert answers[0][1]["failures"] == {}
    assert await _counts(client, alice) == {"signed_curve25519": 0}
    assert await hs.e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []
    # A new fallback key is unused again.
    await _upload(client, alice, {"fallback_keys": {"signed_curve25519:G": alice.signed_key("g", fallback=True)}})
    assert await hs.e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == ["signed_curve25519"]


async def test_claim_unknown_and_remote(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    status, body = await call(client, "POST", "/keys/claim", alice, {"one_time_keys": {
        alice.user_id: {"NOPE": "signed_curve25519", alice.device_id: "curve25519"},
        "@bob:remote.example": {"D": "signed_curve25519"},
    }})
    assert status == 200
    assert body["one_time_keys"] == {}
    assert list(body["failures"]) == ["remote.example"]
    assert body["failures"]["remote.example"]["status"] == 503
    for request, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"one_time_keys": []}, "M_BAD_JSON"),
        ({"one_time_keys": {"bad": {}}}, "M_INVALID_PARAM"),
        ({"one_time_keys": {alice.user_id: ["D"]}}, "M_BAD_JSON"),
        ({"one_time_keys": {alice.user_id: {"D": 1}}}, "M_BAD_JSON"),
    ):
        status, body = await call(client, "POST", "/keys/claim", alice, request)
        assert (status, body["errcode"]) == (400, errcode), request


async def test_concurrent_claims_never_hand_out_a_key_twice(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    await _upload(client, alice, {
        "one_time_keys": {f"signed_curve25519:K{i}": alice.signed_key(f"k{i}") for i in range(5)},
        "fallback_keys": {"signed_curve25519:F": alice.signed_key("fb", fallback=True)},
    })
    request = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    answers = await asyncio.gather(*(call(client, "POST", "/keys/claim", bob, request) for _ in range(20)))
    claimed = [next(iter(body["one_time_keys"][alice.user_id][alice.device_id])) for _, body in answers]
    assert sorted(k for k in claimed if k != "signed_curve25519:F") == [f"signed_curve25519:K{i}" for i in range(5)]
    assert claimed.count("signed_curve25519:F") == 15


# --- cross-signing -----------------------------------------------------------------


async def test_cross_signing_upload_and_query(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    hs = client.app[HOMESERVER]
    keys = CrossSigning(alice.user_id)
    upload = keys.upload_body()
    start = await current_stream_position(hs.database, "device_lists")
    # The first upload needs no authentication.
    assert await call(client, "POST", "/keys/device_signing/upload", alice, upload) == (200, {})
    assert await current_stream_position(hs.database, "device_lists") == start + 1
    # The same keys again: no authentication either, and no change.
    assert await call(client, "POST", "/keys/device_signing/upload", alice, upload) == (200, {})
    assert await current_stream_position(hs.database, "device_lists") == start + 1
    _, body = await call(client, "POST", "/keys/query", bob, {"device_keys": {alice.user_id: []}})
    assert body["master_keys"] == {alice.user_id: upload["master_key"]}
    assert body["self_signing_keys"] == {alice.user_id: upload["self_signing_key"]}
    assert body["user_signing_keys"] == {}  # only for the user themselves
    _status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["user_signing_keys"] == {alice.user_id: upload["user_signing_key"]}


async def test_replacing_cross_signing_keys_needs_password(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    await call(client, "POST", "/keys/device_signing/upload", alice, CrossSigning(alice.user_id).upload_body())
    new = CrossSigning(alice.user_id).upload_body()
    status, body = await call(client, "POST", "/keys/device_signing/upload", alice, new)
    assert status == 401 and body["flows"] == [{"stages": ["m.login.password"]}]
    status, body = await call(
        client, "POST", "/keys/device_signing/upload", alice, {**new, "auth": password_auth(alice, body["session"])}
    )
    assert (status, body) == (200, {})
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["master_keys"][alice.user_id] == new["master_key"]


async def test_cross_signing_upload_bad_input(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    keys = CrossSigning(alice.user_id)
    good = keys.upload_body()
    other = CrossSigning(alice.user_id)
    device_id_key = SigningKey.generate("x")
    clash = keys.key_object(device_id_key, "master")
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"self_signing_key": good["self_signing_key"]}, 400, "M_MISSING_PARAM"),
        ({**good, "self_signing_key": other.key_object(other.self_signing, "self_signing", other.master)},
         400, "M_INVALID_SIGNATURE"),
        ({**good, "user_signing_key": keys.key_object(keys.user_signing, "user_signing")}, 400, "M_INVALID_SIGNATURE"),
        ({**good, "master_key": keys.key_object(keys.master, "self_signing")}, 400, "M_INVALID_PARAM"),
        ({**good, "master_key": {**good["master_key"], "user_id": local_id(client, "@bob")}}, 400, "M_INVALID_PARAM"),
        ({**good, "master_key": {**good["master_key"], "keys": {"ed25519:abc": "abc"}}}, 400, "M_INVALID_PARAM"),
        ({**good, "master_key": {**good["master_key"], "keys": {}}}, 400, "M_INVALID_PARAM"),
        ({**good, "master_key": {**good["master_key"], "usage": "master"}}, 400, "M_BAD_JSON"),
        ({**good, "master_key": []}, 400, "M_BAD_JSON"),
    ]
    for request, status, errcode in cases:
        got, body = await call(client, "POST", "/keys/device_signing/upload", alice, request)
        assert (got, body["errcode"]) == (status, errcode), request
    # A key whose public key is one of the user's device IDs.
    await new_device(client, alice, CrossSigning.public(device_id_key))
    status, body = await call(client, "POST", "/keys/device_signing/upload", alice, {"master_key": clash})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {alice.user_id: []}})
    assert body["master_keys"] == {}


async def test_signatures_upload(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    carol = await new_user(client, "carol")
    alice_keys, bob_keys = CrossSigning(alice.user_id), CrossSigning(bob.user_id)
    await call(client, "POST", "/keys/device_signing/upload", alice, alice_keys.upload_body())
    await call(client, "POST", "/keys/device_signing/upload", bob, bob_keys.upload_body())
    device_keys = alice.device_keys()
    await _upload(client, alice, {"device_keys": device_keys})
    alice_master = alice_keys.upload_body()["master_key"]
    bob_master = bob_keys.upload_body()["master_key"]
    ssk_id = f"ed25519:{CrossSigning.public(alice_keys.self_signing)}"
    usk_id = f"ed25519:{CrossSigning.public(alice_keys.user_signing)}"
    signed_device = sign_with(device_keys, alice.user_id, alice_keys.self_signing)
    signed_master = sign_json(alice_master, alice.user_id, alice.signing_key)
    signed_bob = sign_with(bob_master, alice.user_id, alice_keys.user_signing)
    bad_device = {**signed_device, "signatures": {alice.user_id: {ssk_id: encode_base64(b"x" * 64)}}}
    status, body = await call(client, "POST", "/keys/signatures/upload", alice, {
        alice.user_id: {alice.device_id: signed_device, CrossSigning.public(alice_keys.master): signed_master,
                        "NOPE": signed_device},
        bob.user_id: {CrossSigning.public(bob_keys.master): signed_bob, "BOBDEVICE": bob_master},
    })
    assert status == 200
    assert {u: {k: v["errcode"] for k, v in f.items()} for u, f in body["failures"].items()} == {
        alice.user_id: {"NOPE": "M_NOT_FOUND"},
        bob.user_id: {"BOBDEVICE": "M_NOT_FOUND"},
    }
    # Alice's device now carries the self-signing signature, seen by everyone.
    status, body = await call(client, "POST", "/keys/query", carol, {"device_keys": {alice.user_id: [], bob.user_id: []}})
    device = body["device_keys"][alice.user_id][alice.device_id]
    assert device["signatures"][alice.user_id][ssk_id] == signed_device["signatures"][alice.user_id][ssk_id]
    master_sigs = body["master_keys"][alice.user_id]["signatures"][alice.user_id]
    assert f"ed25519:{alice.device_id}" in master_sigs
    # Alice's signature of Bob's master key is only shown to Alice.
    assert usk_id not in body["master_keys"][bob.user_id].get("signatures", {}).get(alice.user_id, {})
    status, body = await call(client, "POST", "/keys/query", alice, {"device_keys": {bob.user_id: []}})
    assert body["master_keys"][bob.user_id]["signatures"][alice.user_id][usk_id] == (
        signed_bob["signatures"][alice.user_id][usk_id]
    )
    # A bad signature is reported and not stored.
    status, body = await call(client, "POST", "/keys/signatures/upload", alice, {alice.user_id: {alice.device_id: bad_device}})
    assert body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    status, body = await call(client, "POST", "/keys/query", carol, {"device_keys": {alice.user_id: []}})
    assert body["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id][ssk_id] == (
        signed_device["signatures"][alice.user_id][ssk_id]
    )


async def test_signatures_upload_failures(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    await _upload(client, alice, {"device_keys": alice.device_keys()})
    alice_keys = CrossSigning(alice.user_id)
    signed = sign_with(alice.device_keys(), alice.user_id, alice_keys.self_signing)
    # No self-signing key uploaded yet.
    status, body = await call(client, "POST", "/keys/signatures/upload", alice, {alice.user_id: {alice.device_id: signed}})
    assert body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_MISSING_PARAM"
    await call(client, "POST", "/keys/device_signing/upload", alice, alice_keys.upload_body())
    # An object that is not the stored device key.
    changed = sign_with(alice.device_keys(algorithms=["x"]), alice.user_id, alice_keys.self_signing)
    status, body = await call(client, "POST", "/keys/signatures/upload", alice, {alice.user_id: {alice.device_id: changed}})
    assert body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_PARAM"
    # Signed by someone else's key name: no signature by the uploader.
    status, body = await call(client, "POST", "/keys/signatures/upload", bob, {alice.user_id: {alice.device_id: signed}})
    assert body["failures"][alice.user_id][alice.device_id]["errcode"] == "M_NOT_FOUND"
    status, body = await call(client, "POST", "/keys/signatures/upload", alice, {"@x:remote.example": {"K": {}}})
    assert body["failures"]["@x:remote.example"]["K"]["errcode"] == "M_UNRECOGNIZED"
    for request, errcode in (
        ({alice.user_id: []}, "M_BAD_JSON"),
        ({alice.user_id: {"K": 1}}, "M_BAD_JSON"),
        ({"bad": {}}, "M_INVALID_PARAM"),
    ):
        status, body = await call(client, "POST", "/keys/signatures/upload", alice, request)
        assert (status, body["errcode"]) == (400, errcode), request


# --- audit regressions -------------------------------------------------------------


async def test_device_keys_unsigned_must_be_an_object_and_query_never_fails_on_it(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    hs = client.app[HOMESERVER]
    for unsigned in ("xy", 5, [1], ["ab"]):
        status, body = await _upload(client, alice, {"device_keys": {**alice.device_keys(), "unsigned": unsigned}})
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), unsigned
    status, body = await call(client, "POST", "/keys/query", bob, {"device_keys": {alice.user_id: []}})
    assert (status, body["device_keys"]) == (200, {alice.user_id: {}})
    # A row stored before uploads were checked: /keys/query still answers (it used to 500).
    async with hs.database.transaction() as txn:
        await hs.e2e_keys.store.set_device_keys(
            txn, alice.user_id, alice.device_id, json.dumps({**alice.device_keys(), "unsigned": "xy"})
        )
    status, body = await call(client, "POST", "/keys/query", bob, {"device_keys": {alice.user_id: []}})
    assert status == 200
    assert body["device_keys"][alice.user_id][alice.device_id]["unsigned"] == {}


async def test_signed_one_time_and_fallback_keys_must_be_signed_by_the_device(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    hs = client.app[HOMESERVER]
    other = SigningKey.generate(alice.device_id)  # right key ID, wrong key
    forged = sign_json({"key": "k"}, alice.user_id, other)
    tampered = {**alice.signed_key("k"), "key": "changed"}
    bad_fallback = sign_json({"key": "f", "fallback": True}, alice.user_id, other)
    # In the same upload as the device keys: nothing at all is stored.
    status, body = await _upload(client, alice, {
        "device_keys": alice.device_keys(), "one_time_keys": {"signed_curve25519:A": forged},
    })
    assert (status, body["errcode"]) == (400, "M_INVALID_SIGNATURE")
    assert await hs.e2e_keys.store.get_device_keys(alice.user_id, alice.device_id) is None
    # Checked against the stored device keys afterwards.
    assert (await _upload(client, alice, {"device_keys": alice.device_keys()}))[0] == 200
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"one_time_keys": {"signed_curve25519:A": forged}}, 400, "M_INVALID_SIGNATURE"),
        ({"one_time_keys": {"signed_curve25519:A": tampered}}, 400, "M_INVALID_SIGNATURE"),
        ({"one_time_keys": {"signed_curve25519:A": alice.signed_key("ok"), "signed_curve25519:B": forged}},
         400, "M_INVALID_SIGNATURE"),
        ({"fallback_keys": {"signed_curve25519:F": bad_fallback}}, 400, "M_INVALID_SIGNATURE"),
        # KeyObject: signatures are required, and are strings.
        ({"one_time_keys": {"signed_curve25519:A": {"key": "k"}}}, 400, "M_BAD_JSON"),
        ({"one_time_keys": {"signed_curve25519:A": {"key": "k", "signatures": {alice.user_id: {"ed25519:X": 5}}}}},
         400, "M_BAD_JSON"),
        # signed_curve25519 keys are signed objects, never bare strings.
        ({"one_time_keys": {"signed_curve25519:A": "bare"}}, 400, "M_BAD_JSON"),
        ({"fallback_keys": {"signed_curve25519:F": "bare"}}, 400, "M_BAD_JSON"),
    ]
    for request, code, errcode in cases:
        status, body = await _upload(client, alice, request)
        assert (status, body["errcode"]) == (code, errcode), request
    assert await _counts(client, alice) == {"signed_curve25519": 0}
    assert await hs.e2e_keys.unused_fallback_key_types(alice.user_id, alice.device_id) == []
    # Correctly signed keys (and unsigned curve25519 strings) are fine.
    status, body = await _upload(client, alice, {
        "one_time_keys": {"signed_curve25519:A": alice.signed_key("ok"), "curve25519:C": "plain"},
        "fallback_keys": {"signed_curve25519:F": alice.signed_key("f", fallback=True)},
    })
    assert (status, body) == (200, {"one_time_key_counts": {"signed_curve25519": 1, "curve25519": 1}})


async def test_signing_another_users_master_key_is_a_device_list_change_for_the_signer(
    accounts_client: AccountsClient,
) -> None:
    from tests.api.rooms_support import create_room, join

    client = await accounts_client()
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    alice2 = await new_device(client, alice, "ALICE2")
    room = await create_room(client, alice, preset="public_chat")  # type: ignore[arg-type]
    assert (await join(client, bob, room))[0] == 200  # type: ignore[arg-type]
    alice_keys, bob_keys = CrossSigning(alice.user_id), CrossSigning(bob.user_id)
    await call(client, "POST", "/keys/device_signing/upload", alice, alice_keys.upload_body())
    await call(client, "POST", "/keys/device_signing/upload", bob, bob_keys.upload_body())
    status, body = await call(client, "GET", "/sync", alice2, params={"timeout": "0"})
    since = body["next_batch"]
    bob_master = bob_keys.upload_body()["master_key"]
    signed = sign_with(bob_master, alice.user_id, alice_keys.user_signing)
    status, body = await call(client, "POST", "/keys/signatures/upload", alice,
                              {bob.user_id: {CrossSigning.public(bob_keys.master): signed}})
    assert (status, body) == (200, {"failures": {}})
    # Alice's other device learns that Bob's keys (as Alice sees them) changed.
    status, body = await call(client, "GET", "/sync", alice2, params={"timeout": "0", "since": since})
    assert body["device_lists"] == {"changed": [bob.user_id], "left": []}
    status, changes = await call(client, "GET", "/keys/changes", alice2,
                                 params={"from": since, "to": body["next_batch"]})
    assert changes == {"changed": [bob.user_id], "left": []}


async def test_deleting_a_device_removes_its_signature_of_the_master_key(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = await new_user(client, "alice")
    second = await new_device(client, alice, "SECOND")
    bob = await new_user(client, "bob")
    keys = CrossSigning(alice.user_id)
    await call(client, "POST", "/keys/device_signing/upload", alice, keys.upload_body())
    await _upload(client, second, {"device_keys": second.device_keys()})
    master = keys.upload_body()["master_key"]
    signed = sign_json(master, alice.user_id, second.signing_key)
    status, body = await call(client, "POST", "/keys/signatures/upload", second,
                              {alice.user_id: {CrossSigning.public(keys.master): signed}})
    assert (status, body) == (200, {"failures": {}})

    async def master_signers() -> set[str]:
        _, body = await call(client, "POST", "/keys/query", bob, {"device_keys": {alice.user_id: []}})
        return set(body["master_keys"][alice.user_id].get("signatures", {}).get(alice.user_id, {}))

    assert await master_signers() == {"ed25519:SECOND"}
    status, _ = await call(client, "DELETE", "/devices/SECOND", alice, {"auth": password_auth(alice)})
    assert status == 200
    assert await master_signers() == set()
