"""Helpers for the federation endpoint tests: this server (``localhost``) in a
room of a fake remote (``remote.test``, tests/federation_dag.py), whose key is
in the key store, and requests it signs with X-Matrix."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from aiohttp.test_utils import TestClient
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
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


def q(value: str) -> str:
    return quote(value, safe="")


async def make_join(
    client: Client, room_id: str, user_id: str, versions: tuple[str, ...] = ("10", "11", "12")
) -> tuple[int, Any]:
    query = "&".join(f"ver={q(v)}" for v in versions)
    uri = f"{FED}/v1/make_join/{q(room_id)}/{q(user_id)}" + (f"?{query}" if query else "")
    return await signed_request(client, "GET", uri, None, server_of(user_id))


def signed_join(template: dict[str, Any], server: FakeServer = REMOTE) -> Event:
    """The join event built from a make_join answer, hashed and signed by ``server``."""
    version = get_room_version(template["room_version"])
    pdu = {**template["event"], "origin_server_ts": NOW_MS}
    return Event.from_pdu(
        version, hash_and_sign_event(version, pdu, server.server_name, server.key)
    )


async def send_join(
    client: Client, room_id: str, join: Event, version: str = "v2", server: FakeServer = REMOTE
) -> tuple[int, Any]:
    uri = f"{FED}/{version}/send_join/{q(room_id)}/{q(join.event_id)}"
    return await signed_request(client, "PUT", uri, dict(join.pdu), server)


async def remote_user_joins(client: Client, room_id: str, user_id: str) -> Event:
    status, template = await make_join(client, room_id, user_id)
    assert status == 200, template
    join = signed_join(template, server_of(user_id))
    status, answer = await send_join(client, room_id, join, server=server_of(user_id))
    assert status == 200, answer
    return join


SERVERS = {"remote.test": REMOTE}


def server_of(user_id: str) -> FakeServer:
    return SERVERS[user_id.split(":", 1)[1]]
