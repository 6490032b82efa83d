"""Helpers for the federation endpoint tests: this server (``localhost``) in a
room of a fake remote (``remote.test``, tests/federation_dag.py), whose key is
in the key store, and requests it signs with X-Matrix."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.homeserver import Homeserver
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.rooms_support import ROOMS_CONFIG
from tests.federation_dag import REMOTE_KEY, Room, join_room
from tests.federation_support import FakeServer

Client = TestClient[Any, Any]
US = "localhost"
HOUR = 3_600_000
REMOTE = FakeServer("remote.test", REMOTE_KEY)
FED = "/_matrix/federation"


def hs_of(client: Client) -> Homeserver:
    return client.app[HOMESERVER]


async def trust(client: Client, *servers: FakeServer) -> None:
    """Put the servers' keys in the key store, as if fetched just now."""
    for server in servers:
        await hs_of(client).keyring.store_keys(server.key_rows(NOW_MS - HOUR, NOW_MS + HOUR))


async def client_in_remote_room(make_client: MakeClient) -> tuple[Client, Room]:
    """This server, with @alice:localhost joined to remote.test's room."""
    client = await make_client({**ROOMS_CONFIG, "server_name": US})
    await trust(client, REMOTE)
    room = Room()
    await join_room(hs_of(client).rooms.events, room)
    return client, room


async def signed_request(
    client: Client,
    method: str,
    uri: str,
    content: Any = None,
    server: FakeServer = REMOTE,
    *,
    raw_body: bytes | None = None,
) -> tuple[int, Any]:
    """``uri`` (already percent-encoded) signed by ``server`` and sent as it is."""
    header = server.authorization(US, method, uri, content)
    body = (
        raw_body if raw_body is not None else (None if content is None else orjson.dumps(content))
    )
    response = await client.request(
        method, URL(uri, encoded=True), data=body, headers={"Authorization": header}
    )
    payload = await response.json() if response.content_type == "application/json" else None
    return response.status, payload


def transaction(*pdus: Any, origin: str = "remote.test", edus: Any = ()) -> dict[str, Any]:
    return {
        "origin": origin,
        "origin_server_ts": NOW_MS,
        "pdus": list(pdus),
        "edus": list(edus),
    }
