"""Issue 10's repros: a server whose name has a port (or is an IPv6 literal)
treats its own users as its own.

Federation test set-ups and many deployments use names like
``example.org:8448`` or ``127.0.0.1:8448``; locality used to be decided with
``user_id.rpartition(":")[2]``, which reads ``8448`` as the server. Each test
runs under each name below (the ``server_name`` fixture of tests/api/conftest.py,
overridden here).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.accounts_support import AccountsClient
from tests.api.e2e_support import Client, Device, call, new_device, new_user
from tests.api.rooms_support import create_room, join, q

SERVER_NAMES = ["127.0.0.1:8448", "example.org:8448", "[::1]:8448"]


@pytest.fixture(params=SERVER_NAMES)
def server_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def client(accounts_client: AccountsClient) -> Client:
    return await accounts_client()


async def _sync(client: Client, device: Device, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0"} if since is None else {"timeout": "0", "since": since}
    status, body = await call(client, "GET", "/sync", device, params=params)
    assert status == 200, body
    return body


async def test_registered_users_carry_the_whole_server_name(client: Client, server_name: str) -> None:
    alice = await new_user(client, "alice")
    assert alice.user_id == f"@alice:{server_name}"
    # m.id.user with the full user ID (login resolves it as one of this server's).
    second = await new_device(client, alice, "SECOND")
    assert (second.user_id, second.device_id) == (alice.user_id, "SECOND")
    status, body = await call(client, "GET", "/account/whoami", second)
    assert (status, body["user_id"]) == (200, alice.user_id)


async def test_inviting_a_local_user(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await create_room(client, alice)  # type: ignore[arg-type]
    path = f"/rooms/{q(room_id)}/invite"
    assert await call(client, "POST", path, alice, {"user_id": bob.user_id}) == (200, {})
    assert list((await _sync(client, bob))["rooms"]["invite"]) == [room_id]
    assert await join(client, bob, room_id) == (200, {"room_id": room_id})  # type: ignore[arg-type]
    # createRoom's invite list too.
    other = await create_room(client, alice, invite=[bob.user_id])  # type: ignore[arg-type]
    assert other in (await _sync(client, bob))["rooms"]["invite"]


async def test_setting_ones_own_display_name(client: Client) -> None:
    alice = await new_user(client, "alice")
    path = f"/profile/{q(alice.user_id)}/displayname"
    assert await call(client, "PUT", path, alice, {"displayname": "Alice"}) == (200, {})
    assert await call(client, "GET", path) == (200, {"displayname": "Alice"})
    assert await call(client, "GET", f"/profile/{q(alice.user_id)}") == (
        200,
        {"displayname": "Alice"},
    )


async def test_keys_query_includes_local_users(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    status, _ = await call(client, "POST", "/keys/upload", bob, {"device_keys": bob.device_keys()})
    assert status == 200
    status, body = await call(
        client, "POST", "/keys/query", alice, {"device_keys": {bob.user_id: [], alice.user_id: []}}
    )
    assert status == 200
    assert body["failures"] == {}
    assert body["device_keys"] == {
        bob.user_id: {bob.device_id: bob.device_keys() | {"unsigned": {}}},
        alice.user_id: {},
    }


async def test_to_device_messages_reach_local_users(client: Client) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    messages = {bob.user_id: {bob.device_id: {"hello": "bob"}}}
    status, _ = await call(client, "PUT", "/sendToDevice/m.test/t1", alice, {"messages": messages})
    assert status == 200
    assert (await _sync(client, bob))["to_device"]["events"] == [
        {"type": "m.test", "sender": alice.user_id, "content": {"hello": "bob"}}
    ]


async def test_room_aliases_of_this_server(client: Client, server_name: str) -> None:
    alice = await new_user(client, "alice")
    bob = await new_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat", room_alias_name="lobby")  # type: ignore[arg-type]
    alias = f"#lobby:{server_name}"
    assert await call(client, "GET", "/directory/room/" + q(alias)) == (
        200,
        {"room_id": room_id, "servers": [server_name]},
    )
    assert await call(client, "POST", "/join/" + q(alias), bob, {}) == (200, {"room_id": room_id})
    # An alias of the same host on another port belongs to another server.
    host = server_name.rpartition(":")[0]
    status, body = await call(client, "GET", "/directory/room/" + q(f"#lobby:{host}"))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
