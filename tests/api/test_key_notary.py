"""The notary endpoints (Server-Server API, "Querying Keys Through Another
Server"): GET /_matrix/key/v2/query/{serverName} and POST /_matrix/key/v2/query,
through the real HTTP stack, with scripted remotes."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ranvier.api.federation.keys import MAX_SERVERS_PER_QUERY
from ranvier.api.http import HOMESERVER
from ranvier.config import TrustedKeyServer
from ranvier.core.signing import SigningKey, verify_signature
from ranvier.services.federation.keyring import Keyring
from ranvier.storage import open_database
from ranvier.storage.server_keys import ServerKeyStore
from tests.api.conftest import NOW_MS, MakeClient
from tests.federation_support import FakeFederation, FakeServer

US = "notary.example"
HOUR = 3_600_000
KEYS_PATH = "/_matrix/key/v2/server"


@pytest.fixture
def remote() -> FakeServer:
    return FakeServer("remote.example")


@pytest.fixture
def federation() -> FakeFederation:
    return FakeFederation()


@pytest.fixture
async def client(make_client: MakeClient, federation: FakeFederation) -> TestClient[Any, Any]:
    client = await make_client({"server_name": US})
    client.app[HOMESERVER].keyring.fetch_json = federation
    return client


def _notarised_by_us(document: dict[str, Any], signing_key: SigningKey) -> None:
    assert set(document["signatures"][US]) == {signing_key.key_id}
    verify_signature(document, US, signing_key.key_id, signing_key.verify_key)


async def _get(client: TestClient[Any, Any], path: str) -> tuple[int, dict[str, Any]]:
    response = await client.get(path)
    return response.status, await response.json()


async def _post(client: TestClient[Any, Any], body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/_matrix/key/v2/query", json=body)
    return response.status, await response.json()


# --- GET /query/{serverName} -------------------------------------------------------------


async def test_get_fetches_the_server_and_countersigns(
    client: TestClient[Any, Any],
    federation: FakeFederation,
    remote: FakeServer,
    signing_key: SigningKey,
) -> None:
    federation.serve_keys(remote, NOW_MS + HOUR)
    status, body = await _get(client, "/_matrix/key/v2/query/remote.example")
    assert status == 200
    [document] = body["server_keys"]
    _notarised_by_us(document, signing_key)
    verify_signature(document, remote.server_name, remote.key.key_id, remote.key.verify_key)
    expected = remote.key_document(NOW_MS + HOUR)
    assert {k: v for k, v in document.items() if k != "signatures"} == {
        k: v for k, v in expected.items() if k != "signatures"
    }
    assert federation.calls == [("remote.example", "GET", KEYS_PATH, None)]


async def test_get_serves_the_stored_document_while_the_server_is_down(
    client: TestClient[Any, Any],
    federation: FakeFederation,
    remote: FakeServer,
    signing_key: SigningKey,
) -> None:
    keyring = client.app[HOMESERVER].keyring
    await keyring.store_keys(remote.key_rows(NOW_MS - 3 * HOUR, NOW_MS - HOUR))
    status, body = await _get(client, "/_matrix/key/v2/query/remote.example")
    assert status == 200
    [document] = body["server_keys"]
    assert document["valid_until_ts"] == NOW_MS - HOUR
    _notarised_by_us(document, signing_key)
    assert len(federation.calls) == 1  # it tried


async def test_get_about_an_unreachable_unknown_server_is_empty(
    client: TestClient[Any, Any],
) -> None:
    assert await _get(client, "/_matrix/key/v2/query/gone.example") == (200, {"server_keys": []})


async def test_get_about_ourselves_is_our_own_document(
    client: TestClient[Any, Any], federation: FakeFederation, signing_key: SigningKey
) -> None:
    status, body = await _get(client, f"/_matrix/key/v2/query/{US}")
    assert status == 200
    [document] = body["server_keys"]
    assert document["server_name"] == US
    assert set(document["verify_keys"]) == {signing_key.key_id}
    _notarised_by_us(document, signing_key)
    assert federation.calls == []


async def test_get_passes_minimum_valid_until_ts(
    client: TestClient[Any, Any], federation: FakeFederation, remote: FakeServer
) -> None:
    keyring = client.app[HOMESERVER].keyring
    await keyring.store_keys(remote.key_rows(NOW_MS, NOW_MS + 10 * HOUR))
    await _get(client, f"/_matrix/key/v2/query/remote.example?minimum_valid_until_ts={NOW_MS}")
    assert federation.calls == []  # what is stored is good enough
    late = NOW_MS + 11 * HOUR
    await _get(client, f"/_matrix/key/v2/query/remote.example?minimum_valid_until_ts={late}")
    assert len(federation.calls) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/key/v2/query/not%20a%20server",
        "/_matrix/key/v2/query/remote.example?minimum_valid_until_ts=soon",
        "/_matrix/key/v2/query/remote.example?minimum_valid_until_ts=-1",
        "/_matrix/key/v2/query/remote.example?minimum_valid_until_ts=99999999999999999999",
    ],
)
async def test_get_bad_parameters_are_400(client: TestClient[Any, Any], path: str) -> None:
    status, body = await _get(client, path)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


# --- POST /query -----------------------------------------------------------------------------


async def test_post_answers_for_several_servers(
    client: TestClient[Any, Any],
    federation: FakeFederation,
    remote: FakeServer,
    signing_key: SigningKey,
) -> None:
    other = FakeServer("other.example:8448")
    federation.serve_keys(remote, NOW_MS + HOUR)
    federation.serve_keys(other, NOW_MS + HOUR)
    status, body = await _post(
        client,
        {
            "server_keys": {
                "remote.example": {remote.key.key_id: {"minimum_valid_until_ts": NOW_MS}},
                "other.example:8448": {},
                "gone.example": {},
                US: {},
            }
        },
    )
    assert status == 200
    assert [d["server_name"] for d in body["server_keys"]] == [
        "remote.example",
        "other.example:8448",
        US,
    ]
    for document in body["server_keys"]:
        _notarised_by_us(document, signing_key)


async def test_post_with_no_servers_is_empty(client: TestClient[Any, Any]) -> None:
    assert await _post(client, {"server_keys": {}}) == (200, {"server_keys": []})


async def test_post_uses_the_latest_minimum_of_a_servers_keys(
    client: TestClient[Any, Any], federation: FakeFederation, remote: FakeServer
) -> None:
    keyring = client.app[HOMESERVER].keyring
    await keyring.store_keys(remote.key_rows(NOW_MS, NOW_MS + 10 * HOUR))
    criteria = {
        remote.key.key_id: {"minimum_valid_until_ts": NOW_MS},
        "ed25519:other": {"minimum_valid_until_ts": NOW_MS + 11 * HOUR},
    }
    federation.serve_keys(remote, NOW_MS + 20 * HOUR)
    status, body = await _post(client, {"server_keys": {"remote.example": criteria}})
    assert status == 200
    assert [d["valid_until_ts"] for d in body["server_keys"]] == [NOW_MS + 20 * HOUR]


BAD_BODIES = {
    "no server_keys": ({}, "M_BAD_JSON"),
    "server_keys a list": ({"server_keys": []}, "M_BAD_JSON"),
    "key IDs a list": ({"server_keys": {"a.example": ["ed25519:a"]}}, "M_BAD_JSON"),
    "criteria not an object": ({"server_keys": {"a.example": {"ed25519:a": 5}}}, "M_BAD_JSON"),
    "minimum a string": (
        {"server_keys": {"a.example": {"ed25519:a": {"minimum_valid_until_ts": "1"}}}},
        "M_BAD_JSON",
    ),
    "minimum negative": (
        {"server_keys": {"a.example": {"ed25519:a": {"minimum_valid_until_ts": -5}}}},
        "M_BAD_JSON",
    ),
    "invalid server name": ({"server_keys": {"bad name": {}}}, "M_INVALID_PARAM"),
    "too many servers": (
        {"server_keys": {f"s{i}.example": {} for i in range(MAX_SERVERS_PER_QUERY + 1)}},
        "M_INVALID_PARAM",
    ),
    "not an object": ([1, 2], "M_BAD_JSON"),
}


@pytest.mark.parametrize(("body", "errcode"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
async def test_post_bad_bodies_are_400(
    client: TestClient[Any, Any], federation: FakeFederation, body: Any, errcode: str
) -> None:
    status, answer = await _post(client, body)
    assert (status, answer["errcode"]) == (400, errcode)
    assert federation.calls == []


async def test_post_not_json_is_400(client: TestClient[Any, Any]) -> None:
    response = await client.post("/_matrix/key/v2/query", data=b"{nope")
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_NOT_JSON"


# --- a keyring using this server as its notary -----------------------------------------------


async def test_another_keyring_trusts_our_notary_answers(
    client: TestClient[Any, Any],
    federation: FakeFederation,
    remote: FakeServer,
    signing_key: SigningKey,
) -> None:
    """Round trip: a second server's keyring, with us as its trusted notary,
    cannot reach remote.example itself, asks us, and accepts our answer."""
    federation.serve_keys(remote, NOW_MS + HOUR)

    async def through_us(destination: str, method: str, path: str, content: Any) -> Any:
        if destination != US:
            raise ConnectionError(f"{destination} unreachable from the second server")
        response = await client.request(method, path, json=content)
        assert response.status == 200
        return await response.json()

    database = await open_database("sqlite:///:memory:")
    try:
        keyring = Keyring(
            server_name="second.example",
            signing_key=SigningKey.generate("second"),
            store=ServerKeyStore(database),
            clock_ms=lambda: NOW_MS,
            fetch_json=through_us,
            trusted_key_servers=[
                TrustedKeyServer(US, {signing_key.key_id: signing_key.verify_key})
            ],
        )
        keys = await keyring.get_verify_keys("remote.example", [remote.key.key_id], NOW_MS)
        assert keys[remote.key.key_id].key == remote.key.verify_key
    finally:
        await database.close()
