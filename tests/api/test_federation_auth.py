"""Inbound X-Matrix authentication through the real HTTP stack.

A fake remote (tests/federation_support.py) has its own ed25519 key, written
straight into the key store (or served by a scripted federation client), and
signs requests to a small test endpoint that echoes the authenticated origin.
Then every forgery the spec's check must catch.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from ranvier.api.federation.auth import authenticate_server
from ranvier.api.http import HOMESERVER, json_response
from ranvier.core.signing import SigningKey
from ranvier.core.x_matrix import XMatrixAuthorization, format_header, sign_request
from ranvier.services.federation.keyring import Keyring, parse_key_document
from tests.api.conftest import NOW_MS, MakeClient
from tests.federation_support import FakeFederation, FakeServer

US = "us.example"
HOUR = 3_600_000
PATH = "/_matrix/federation/v1/test_auth"
CONTENT = {"pdus": [], "edus": [], "origin_server_ts": 1}


async def _echo_origin(request: web.Request) -> web.Response:
    authenticated = await authenticate_server(request)
    return json_response({"origin": authenticated.origin, "content": authenticated.content})


def _add_test_endpoint(app: web.Application) -> None:
    app.router.add_route("*", PATH + "/{tail:.*}", _echo_origin)


@pytest.fixture
def remote() -> FakeServer:
    return FakeServer("remote.example:8448")


@pytest.fixture
async def client(make_client: MakeClient, remote: FakeServer) -> TestClient[Any, Any]:
    client = await make_client({"server_name": US}, setup=_add_test_endpoint)
    await _keyring(client).store_keys(remote.key_rows(NOW_MS - HOUR, NOW_MS + HOUR))
    return client


def _keyring(client: TestClient[Any, Any]) -> Keyring:
    return client.app[HOMESERVER].keyring


async def _send(
    client: TestClient[Any, Any],
    method: str,
    uri: str,
    authorization: str | None,
    body: bytes | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {} if authorization is None else {"Authorization": authorization}
    # encoded=True: the target goes out byte for byte as signed (yarl would
    # otherwise normalise %3A to ':'), as a remote server sends it.
    response = await client.request(method, URL(uri, encoded=True), data=body, headers=headers)
    return response.status, await response.json()


def _body(content: Any) -> bytes:
    return orjson.dumps(content)


# --- accepted ---------------------------------------------------------------------------


async def test_a_signed_put_is_accepted_with_its_origin_and_content(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/txn1"
    header = remote.authorization(US, "PUT", uri, CONTENT)
    assert await _send(client, "PUT", uri, header, _body(CONTENT)) == (
        200,
        {"origin": remote.server_name, "content": CONTENT},
    )


async def test_the_uri_is_signed_as_received_with_its_query(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/a%2Fb%3Ac?limit=10&v=%21x&v=2"
    header = remote.authorization(US, "GET", uri)
    assert await _send(client, "GET", uri, header) == (
        200,
        {"origin": remote.server_name, "content": None},
    )


async def test_a_header_without_destination_is_accepted(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/x"
    signed = sign_request(remote.key, remote.server_name, US, "POST", uri, CONTENT)
    header = format_header(
        XMatrixAuthorization(signed.origin, None, signed.key_id, signed.signature)
    )
    status, body = await _send(client, "POST", uri, header, _body(CONTENT))
    assert (status, body["origin"]) == (200, remote.server_name)


async def test_an_unknown_origin_key_is_fetched_from_the_origin(
    make_client: MakeClient,
) -> None:
    client = await make_client({"server_name": US}, setup=_add_test_endpoint)
    newcomer = FakeServer("new.example")
    federation = FakeFederation()
    federation.serve_keys(newcomer, NOW_MS + HOUR)
    _keyring(client).fetch_json = federation
    uri = PATH + "/y"
    status, body = await _send(client, "GET", uri, newcomer.authorization(US, "GET", uri))
    assert (status, body["origin"]) == (200, "new.example")
    assert federation.calls == [("new.example", "GET", "/_matrix/key/v2/server", None)]


# --- refused ----------------------------------------------------------------------------


async def _assert_unauthorized(
    client: TestClient[Any, Any],
    method: str,
    uri: str,
    authorization: str | None,
    body: bytes | None = None,
) -> None:
    status, answer = await _send(client, method, uri, authorization, body)
    assert status == 401
    assert answer["errcode"] == "M_UNAUTHORIZED"
    assert "Traceback" not in answer["error"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer some_access_token",
        "X-Matrix",
        'X-Matrix origin="remote.example:8448",key="ed25519:remote1"',
        'X-Matrix origin="not a server",key="ed25519:remote1",sig="c2ln"',
        'X-Matrix origin="remote.example:8448" key="ed25519:remote1" sig="c2ln"',
    ],
    ids=["missing", "bearer", "empty", "no sig", "bad origin", "no commas"],
)
async def test_missing_or_malformed_headers_are_refused(
    client: TestClient[Any, Any], authorization: str | None
) -> None:
    await _assert_unauthorized(client, "GET", PATH + "/x", authorization)


async def test_a_request_for_another_destination_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/x"
    await _assert_unauthorized(
        client, "GET", uri, remote.authorization("elsewhere.example", "GET", uri)
    )


async def test_a_signature_by_another_key_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/x"
    impostor = FakeServer(remote.server_name, SigningKey.generate(remote.key.version))
    await _assert_unauthorized(client, "GET", uri, impostor.authorization(US, "GET", uri))


async def test_an_origin_that_did_not_sign_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    # The attacker's own, valid key, but the request claims another origin.
    attacker = FakeServer("attacker.example", remote.key)
    uri = PATH + "/x"
    signed = sign_request(attacker.key, attacker.server_name, US, "GET", uri)
    claimed = XMatrixAuthorization("victim.example", US, signed.key_id, signed.signature)
    await _assert_unauthorized(client, "GET", uri, format_header(claimed))


async def test_modified_content_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/txn"
    header = remote.authorization(US, "PUT", uri, CONTENT)
    forged = {**CONTENT, "pdus": [{"type": "m.room.message"}]}
    await _assert_unauthorized(client, "PUT", uri, header, _body(forged))
    # The same bytes reordered are the same JSON: still accepted.
    reordered = b'{"origin_server_ts":1,"edus":[],"pdus":[]}'
    assert (await _send(client, "PUT", uri, header, reordered))[0] == 200


async def test_a_replay_to_another_uri_or_method_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    header = remote.authorization(US, "PUT", PATH + "/txn1?a=1", CONTENT)
    for method, uri in (
        ("PUT", PATH + "/txn2?a=1"),
        ("PUT", PATH + "/txn1?a=2"),
        ("PUT", PATH + "/txn1"),
        ("POST", PATH + "/txn1?a=1"),
    ):
        await _assert_unauthorized(client, method, uri, header, _body(CONTENT))
    assert (await _send(client, "PUT", PATH + "/txn1?a=1", header, _body(CONTENT)))[0] == 200


async def test_signed_without_content_but_sent_with_a_body_is_refused(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/x"
    header = remote.authorization(US, "POST", uri)
    await _assert_unauthorized(client, "POST", uri, header, _body(CONTENT))


async def test_an_unknown_key_is_refused_without_a_federation_client(
    client: TestClient[Any, Any],
) -> None:
    stranger = FakeServer("stranger.example")
    uri = PATH + "/x"
    await _assert_unauthorized(client, "GET", uri, stranger.authorization(US, "GET", uri))


async def test_an_expired_key_is_refused(make_client: MakeClient) -> None:
    client = await make_client({"server_name": US}, setup=_add_test_endpoint)
    stale = FakeServer("stale.example")
    await _keyring(client).store_keys(stale.key_rows(NOW_MS - 2 * HOUR, NOW_MS - 1))
    uri = PATH + "/x"
    await _assert_unauthorized(client, "GET", uri, stale.authorization(US, "GET", uri))


async def test_an_old_key_never_authenticates_a_request(make_client: MakeClient) -> None:
    client = await make_client({"server_name": US}, setup=_add_test_endpoint)
    server = FakeServer("rotated.example")
    old = SigningKey.generate("old")
    document = server.key_document(
        NOW_MS + HOUR, old_verify_keys={old.key_id: (old, NOW_MS + HOUR)}
    )
    await _keyring(client).store_keys(parse_key_document(document, server.server_name, NOW_MS))
    uri = PATH + "/x"
    signed_by_old = FakeServer(server.server_name, old).authorization(US, "GET", uri)
    await _assert_unauthorized(client, "GET", uri, signed_by_old)
    assert (await _send(client, "GET", uri, server.authorization(US, "GET", uri)))[0] == 200


async def test_a_body_that_is_not_json_is_a_400(
    client: TestClient[Any, Any], remote: FakeServer
) -> None:
    uri = PATH + "/x"
    status, answer = await _send(
        client, "PUT", uri, remote.authorization(US, "PUT", uri, {}), b"{not json"
    )
    assert (status, answer["errcode"]) == (400, "M_NOT_JSON")


async def test_our_outbound_signer_produces_headers_a_server_accepts(
    client: TestClient[Any, Any],
) -> None:
    """hs.sign_request is the client's authorization hook; a request it signs
    to ourselves checks out against our own key (never fetched)."""
    hs = client.app[HOMESERVER]
    uri = PATH + "/send/1?x=%2F"
    header = hs.sign_request("PUT", US, uri, CONTENT)
    assert header.startswith(f'X-Matrix origin="{US}",destination="{US}",key="ed25519:test1",')
    assert await _send(client, "PUT", uri, header, _body(CONTENT)) == (
        200,
        {"origin": US, "content": CONTENT},
    )
    elsewhere = hs.sign_request("PUT", "remote.example:8448", uri, CONTENT)
    await _assert_unauthorized(client, "PUT", uri, elsewhere, _body(CONTENT))
