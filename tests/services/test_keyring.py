"""The keyring (Server-Server API, "Retrieving server keys"): cache → store →
the server itself → trusted notaries, with the validity rules of the spec,
against scripted remotes (tests/federation_support.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from ranvier.config import TrustedKeyServer
from ranvier.core.signing import SigningKey, encode_base64, sign_json
from ranvier.services.federation.keyring import (
    FOREVER_TS,
    MAX_KEY_VALIDITY_MS,
    KeyDocumentError,
    Keyring,
    VerifyKey,
    parse_key_document,
    parse_notary_response,
)
from ranvier.storage import Database, open_database
from ranvier.storage.server_keys import ServerKeyStore
from tests.federation_support import FakeFederation, FakeServer

NOW = 1_700_000_000_000
HOUR = 3_600_000
OUR_NAME = "us.example"
KEYS_PATH = "/_matrix/key/v2/server"
QUERY_PATH = "/_matrix/key/v2/query"


class Clock:
    def __init__(self) -> None:
        self.now_ms = NOW

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    # The keyring's logic, not the SQL (tests/storage covers both engines).
    db = await open_database("sqlite:///:memory:")
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def federation() -> FakeFederation:
    return FakeFederation()


@pytest.fixture
def remote() -> FakeServer:
    return FakeServer("remote.example")


@pytest.fixture
def notary() -> FakeServer:
    return FakeServer("notary.example", SigningKey.generate("n1"))


@pytest.fixture
def our_key() -> SigningKey:
    return SigningKey.generate("ours")


def _keyring(
    database: Database,
    clock: Clock,
    federation: FakeFederation | None,
    our_key: SigningKey,
    notaries: tuple[FakeServer, ...] = (),
) -> Keyring:
    return Keyring(
        server_name=OUR_NAME,
        signing_key=our_key,
        store=ServerKeyStore(database),
        clock_ms=clock,
        fetch_json=federation,
        trusted_key_servers=[
            TrustedKeyServer(n.server_name, {n.key.key_id: n.key.verify_key}) for n in notaries
        ],
    )


@pytest.fixture
def keyring(
    database: Database, clock: Clock, federation: FakeFederation, our_key: SigningKey
) -> Keyring:
    return _keyring(database, clock, federation, our_key)


def _direct(server: FakeServer) -> tuple[str, str, str, None]:
    return (server.server_name, "GET", KEYS_PATH, None)


# --- fetching from the server itself ---------------------------------------------------


async def test_unknown_key_is_fetched_from_the_server_then_cached_and_stored(
    keyring: Keyring,
    federation: FakeFederation,
    remote: FakeServer,
    database: Database,
    clock: Clock,
    our_key: SigningKey,
) -> None:
    federation.serve_keys(remote, NOW + HOUR)
    key_id = remote.key.key_id
    keys = await keyring.get_verify_keys(remote.server_name, [key_id], NOW)
    assert keys == {key_id: VerifyKey(key_id, remote.key.verify_key, NOW + HOUR, expired=False)}
    assert federation.calls == [_direct(remote)]
    # Cached: no second request.
    assert await keyring.get_verify_keys(remote.server_name, [key_id], NOW) == keys
    assert len(federation.calls) == 1
    # Stored: a new keyring (a restart) finds it without asking.
    restarted = _keyring(database, clock, FakeFederation(), our_key)
    assert await restarted.get_verify_keys(remote.server_name, [key_id], NOW) == keys


async def test_our_own_key_is_never_fetched(
    keyring: Keyring, federation: FakeFederation, our_key: SigningKey
) -> None:
    keys = await keyring.get_verify_keys(OUR_NAME, [our_key.key_id, "ed25519:other"], NOW)
    assert keys == {
        our_key.key_id: VerifyKey(our_key.key_id, our_key.verify_key, FOREVER_TS, expired=False)
    }
    assert federation.calls == []


async def test_without_a_federation_client_only_stored_keys_are_known(
    database: Database, clock: Clock, our_key: SigningKey, remote: FakeServer
) -> None:
    keyring = _keyring(database, clock, None, our_key)
    assert await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW) == {}
    await keyring.store_keys(remote.key_rows(NOW, NOW + HOUR))
    keys = await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW)
    assert set(keys) == {remote.key.key_id}


async def test_an_unreachable_server_gives_no_keys_and_no_error(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer
) -> None:
    assert await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW) == {}
    assert federation.calls == [_direct(remote)]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda doc: {**doc, "server_name": "evil.example"},
        lambda doc: {**doc, "valid_until_ts": doc["valid_until_ts"] + 1},  # breaks the signature
        lambda doc: {k: v for k, v in doc.items() if k != "signatures"},
        lambda doc: "not an object",
    ],
    ids=["other server", "tampered", "unsigned", "not an object"],
)
async def test_a_bad_answer_is_not_stored(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, tamper: Any
) -> None:
    federation.answers[(remote.server_name, KEYS_PATH)] = tamper(remote.key_document(NOW + HOUR))
    assert await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW) == {}
    assert await keyring.store.get_keys(remote.server_name) == []


# --- validity --------------------------------------------------------------------------


async def test_a_key_too_short_lived_is_refetched(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    federation.serve_keys(remote, NOW + HOUR)
    key_id = remote.key.key_id
    assert set(await keyring.get_verify_keys(remote.server_name, [key_id], NOW + HOUR)) == {key_id}
    # Needed valid one ms longer than published: asked again, once the
    # refetch interval has passed, and the new document is used.
    assert await keyring.get_verify_keys(remote.server_name, [key_id], NOW + HOUR + 1) == {}
    assert len(federation.calls) == 1
    clock.now_ms += keyring.refetch_interval_ms
    federation.serve_keys(remote, NOW + 2 * HOUR)
    keys = await keyring.get_verify_keys(remote.server_name, [key_id], NOW + HOUR + 1)
    assert keys[key_id].valid_until_ts == NOW + 2 * HOUR
    assert len(federation.calls) == 2


async def test_validity_is_capped_at_seven_days_after_the_fetch(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer
) -> None:
    federation.serve_keys(remote, NOW + 30 * 24 * HOUR)
    key_id = remote.key.key_id
    keys = await keyring.get_verify_keys(remote.server_name, [key_id], NOW)
    assert keys[key_id].valid_until_ts == NOW + MAX_KEY_VALIDITY_MS
    beyond = NOW + MAX_KEY_VALIDITY_MS + 1
    assert await keyring.get_verify_keys(remote.server_name, [key_id], beyond) == {}


async def test_minimum_zero_accepts_any_stored_key_as_in_room_versions_1_to_4(
    keyring: Keyring, remote: FakeServer, federation: FakeFederation
) -> None:
    await keyring.store_keys(remote.key_rows(NOW - 30 * 24 * HOUR, NOW - 29 * 24 * HOUR))
    keys = await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], 0)
    assert set(keys) == {remote.key.key_id}
    assert federation.calls == []


async def test_old_keys_sign_events_before_they_expired_but_never_requests(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    old = SigningKey.generate("old")
    document = remote.key_document(NOW + HOUR, old_verify_keys={old.key_id: (old, NOW - HOUR)})
    federation.answers[(remote.server_name, KEYS_PATH)] = document
    keys = await keyring.get_verify_keys(remote.server_name, [old.key_id], NOW - 2 * HOUR)
    assert keys == {old.key_id: VerifyKey(old.key_id, old.verify_key, NOW - HOUR, expired=True)}
    assert await keyring.get_verify_keys(remote.server_name, [old.key_id], NOW - HOUR + 1) == {}
    clock.now_ms = NOW - 2 * HOUR  # even while it was valid: not for requests
    assert await keyring.get_request_key(remote.server_name, old.key_id) is None
    assert (await keyring.get_request_key(remote.server_name, remote.key.key_id)) is not None


async def test_only_the_keys_asked_for_are_returned(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer
) -> None:
    federation.serve_keys(remote, NOW + HOUR)
    keys = await keyring.get_verify_keys(
        remote.server_name, [remote.key.key_id, "ed25519:unknown"], NOW
    )
    assert set(keys) == {remote.key.key_id}


# --- notaries ----------------------------------------------------------------------------


def _notarised(notary: FakeServer, document: dict[str, Any]) -> dict[str, Any]:
    return sign_json(document, notary.server_name, notary.key)


async def test_notary_is_asked_when_the_server_cannot_be(
    database: Database,
    clock: Clock,
    federation: FakeFederation,
    our_key: SigningKey,
    remote: FakeServer,
    notary: FakeServer,
) -> None:
    keyring = _keyring(database, clock, federation, our_key, notaries=(notary,))
    answer = {"server_keys": [_notarised(notary, remote.key_document(NOW + HOUR))]}
    federation.answers[(notary.server_name, QUERY_PATH)] = answer
    key_id = remote.key.key_id
    keys = await keyring.get_verify_keys(remote.server_name, [key_id], NOW + 5)
    assert set(keys) == {key_id}
    assert federation.calls == [
        _direct(remote),
        (
            notary.server_name,
            "POST",
            QUERY_PATH,
            {"server_keys": {remote.server_name: {key_id: {"minimum_valid_until_ts": NOW + 5}}}},
        ),
    ]
    # What is stored carries the server's own signature, not the notary's.
    [row] = await keyring.store.get_keys(remote.server_name)
    assert set(orjson.loads(row.key_json)["signatures"]) == {remote.server_name}


async def test_notaries_are_never_asked_for_request_keys(
    database: Database,
    clock: Clock,
    federation: FakeFederation,
    our_key: SigningKey,
    remote: FakeServer,
    notary: FakeServer,
) -> None:
    keyring = _keyring(database, clock, federation, our_key, notaries=(notary,))
    answer = {"server_keys": [_notarised(notary, remote.key_document(NOW + HOUR))]}
    federation.answers[(notary.server_name, QUERY_PATH)] = answer
    assert await keyring.get_request_key(remote.server_name, remote.key.key_id) is None
    assert federation.calls == [_direct(remote)]


async def test_the_server_itself_is_asked_before_notaries(
    database: Database,
    clock: Clock,
    federation: FakeFederation,
    our_key: SigningKey,
    remote: FakeServer,
    notary: FakeServer,
) -> None:
    keyring = _keyring(database, clock, federation, our_key, notaries=(notary,))
    federation.serve_keys(remote, NOW + HOUR)
    assert set(await keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW))
    assert federation.calls == [_direct(remote)]


def test_notary_answers_need_the_notarys_and_the_servers_signatures(
    remote: FakeServer, notary: FakeServer
) -> None:
    trusted = TrustedKeyServer(notary.server_name, {notary.key.key_id: notary.key.verify_key})
    good = _notarised(notary, remote.key_document(NOW + HOUR))
    impostor = FakeServer(notary.server_name, SigningKey.generate("n1"))
    by_impostor = _notarised(impostor, remote.key_document(NOW + HOUR))
    unsigned_by_notary = remote.key_document(NOW + HOUR)
    # Self-signed by another key under the same key ID, claiming the real key.
    forged_origin = FakeServer(remote.server_name, SigningKey.generate(remote.key.version))
    forged = forged_origin.key_document(NOW + HOUR)
    forged["verify_keys"] = good["verify_keys"]
    forged = _notarised(notary, forged)
    other_server = _notarised(notary, FakeServer("other.example").key_document(NOW + HOUR))
    for bad in (by_impostor, unsigned_by_notary, forged, other_server):
        assert parse_notary_response({"server_keys": [bad]}, trusted, remote.server_name, NOW) == []
    rows = parse_notary_response(
        {"server_keys": [by_impostor, good]}, trusted, remote.server_name, NOW
    )
    assert [row.key_id for row in rows] == [remote.key.key_id]
    with pytest.raises(KeyDocumentError):
        parse_notary_response({"keys": []}, trusted, remote.server_name, NOW)


# --- fetch discipline --------------------------------------------------------------------


async def test_concurrent_lookups_share_one_fetch(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer
) -> None:
    federation.serve_keys(remote, NOW + HOUR)
    federation.gate = asyncio.Event()
    lookups = [
        asyncio.ensure_future(keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW))
        for _ in range(5)
    ]
    await asyncio.sleep(0.01)
    federation.gate.set()
    results = await asyncio.gather(*lookups)
    assert all(set(result) == {remote.key.key_id} for result in results)
    assert federation.calls == [_direct(remote)]


async def test_a_cancelled_lookup_does_not_cancel_the_shared_fetch(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer
) -> None:
    federation.serve_keys(remote, NOW + HOUR)
    federation.gate = asyncio.Event()
    first = asyncio.ensure_future(
        keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW)
    )
    second = asyncio.ensure_future(
        keyring.get_verify_keys(remote.server_name, [remote.key.key_id], NOW)
    )
    await asyncio.sleep(0.01)
    first.cancel()
    federation.gate.set()
    assert set(await second) == {remote.key.key_id}
    assert len(federation.calls) == 1


async def test_a_failed_fetch_is_not_retried_within_the_interval(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    for _ in range(3):
        assert await keyring.get_request_key(remote.server_name, "ed25519:random") is None
    assert len(federation.calls) == 1
    clock.now_ms += keyring.refetch_interval_ms
    federation.serve_keys(remote, clock.now_ms + HOUR)
    assert await keyring.get_request_key(remote.server_name, remote.key.key_id) is not None
    assert len(federation.calls) == 2


# --- serving as a notary -----------------------------------------------------------------


async def test_key_documents_fetch_once_then_serve_the_stored_copy(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    federation.serve_keys(remote, NOW + 10 * HOUR)
    expected = remote.key_document(NOW + 10 * HOUR)
    assert await keyring.key_documents(remote.server_name, [], NOW) == [expected]
    assert await keyring.key_documents(remote.server_name, [remote.key.key_id], NOW) == [expected]
    assert len(federation.calls) == 1
    # Past half its lifetime, the document is refreshed.
    clock.now_ms = NOW + 5 * HOUR + 1
    federation.serve_keys(remote, NOW + 20 * HOUR)
    assert await keyring.key_documents(remote.server_name, [], NOW) == [
        remote.key_document(NOW + 20 * HOUR)
    ]
    assert len(federation.calls) == 2


async def test_key_documents_of_an_unreachable_server_are_the_last_ones_seen(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    await keyring.store_keys(remote.key_rows(NOW - 10 * HOUR, NOW - HOUR))
    documents = await keyring.key_documents(remote.server_name, [], NOW)
    assert documents == [remote.key_document(NOW - HOUR)]
    assert federation.calls == [_direct(remote)]
    assert await keyring.key_documents("never.example", [], NOW) == []


async def test_key_documents_refetch_for_an_unknown_key_or_a_later_minimum(
    keyring: Keyring, federation: FakeFederation, remote: FakeServer, clock: Clock
) -> None:
    await keyring.store_keys(remote.key_rows(NOW, NOW + 10 * HOUR))
    assert await keyring.key_documents(remote.server_name, [], NOW + HOUR) != []
    assert federation.calls == []
    await keyring.key_documents(remote.server_name, ["ed25519:new"], NOW)
    assert len(federation.calls) == 1
    clock.now_ms += keyring.refetch_interval_ms
    await keyring.key_documents(remote.server_name, [], NOW + 11 * HOUR)
    assert len(federation.calls) == 2


# --- parse_key_document --------------------------------------------------------------------


def _doc_without(remote: FakeServer, **changes: Any) -> dict[str, Any]:
    document = remote.key_document(NOW + HOUR)
    del document["signatures"]
    document.update(changes)
    return sign_json(document, remote.server_name, remote.key)


def test_parse_key_document_keeps_ed25519_keys_and_old_keys(remote: FakeServer) -> None:
    old = SigningKey.generate("old")
    document = remote.key_document(NOW + HOUR, old_verify_keys={old.key_id: (old, NOW - 1)})
    document["verify_keys"]["curve25519:x"] = {"key": "whatever"}
    document = sign_json(
        {k: v for k, v in document.items() if k != "signatures"}, remote.server_name, remote.key
    )
    rows = parse_key_document(document, remote.server_name, NOW)
    assert [(r.key_id, r.verify_key, r.expired_ts) for r in rows] == [
        (remote.key.key_id, remote.key.verify_key, None),
        (old.key_id, old.verify_key, NOW - 1),
    ]
    assert all(r.valid_until_ts == NOW + HOUR and r.fetched_ts == NOW for r in rows)


BAD_DOCUMENTS = {
    "no valid_until_ts": {"valid_until_ts": None},
    "negative valid_until_ts": {"valid_until_ts": -1},
    "boolean valid_until_ts": {"valid_until_ts": True},
    "verify_keys not an object": {"verify_keys": []},
    "key not base64": {"verify_keys": {"ed25519:remote1": {"key": "!!"}}},
    "key too short": {"verify_keys": {"ed25519:remote1": {"key": encode_base64(b"x" * 31)}}},
    "key entry without key": {"verify_keys": {"ed25519:remote1": {}}},
    "old key without expired_ts": {
        "old_verify_keys": {"ed25519:o": {"key": encode_base64(b"x" * 32)}}
    },
    "old_verify_keys not an object": {"old_verify_keys": "x"},
}


@pytest.mark.parametrize("changes", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_parse_key_document_refuses_malformed_documents(
    remote: FakeServer, changes: dict[str, Any]
) -> None:
    with pytest.raises(KeyDocumentError):
        parse_key_document(_doc_without(remote, **changes), remote.server_name, NOW)


def test_a_document_must_be_signed_by_a_key_it_lists(remote: FakeServer) -> None:
    stranger = SigningKey.generate("stranger")
    document = remote.key_document(NOW + HOUR)
    del document["signatures"]
    signed_by_stranger = sign_json(document, remote.server_name, stranger)
    with pytest.raises(KeyDocumentError, match="not signed by any key"):
        parse_key_document(signed_by_stranger, remote.server_name, NOW)
    # A document without verify_keys cannot be self-signed.
    with pytest.raises(KeyDocumentError):
        parse_key_document(
            {k: v for k, v in document.items() if k != "verify_keys"}, remote.server_name, NOW
        )
    # An extra signature by an unlisted key is ignored; a bad one by a listed key is not.
    both = sign_json(
        sign_json(document, remote.server_name, remote.key), remote.server_name, stranger
    )
    assert len(parse_key_document(both, remote.server_name, NOW)) == 1
    bad = sign_json(document, remote.server_name, remote.key)
    bad["signatures"][remote.server_name][remote.key.key_id] = encode_base64(b"\0" * 64)
    with pytest.raises(KeyDocumentError):
        parse_key_document(bad, remote.server_name, NOW)
