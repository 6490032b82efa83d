"""Helpers for the room tests: an app with rate limits off and users registered
through the real accounts service (no password: nothing to hash)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

from ranvier.api.http import HOMESERVER
from ranvier.homeserver import Homeserver

Client = TestClient[Any, Any]
#: Rate limits off and the cheapest password hashing (its dummy hash is built at startup).
ROOMS_CONFIG: dict[str, Any] = {
    "ratelimit": {"enabled": False},
    "password_hashing": {"time_cost": 1, "memory_cost": 32},
}
V3 = "/_matrix/client/v3"


@dataclass
class User:
    user_id: str
    device_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def hs_of(client: Client) -> Homeserver:
    return client.app[HOMESERVER]


def local_id(client: Client, sigil_and_localpart: str) -> str:
    """``"#lobby"`` → ``"#lobby:<the app's server name>"``."""
    return f"{sigil_and_localpart}:{hs_of(client).server_name}"


#: Stands for the app's server name in test tables built before the app exists.
THIS_SERVER = "<this server>"


def on_this_server(client: Client, value: Any) -> Any:
    """``value`` (JSON) with every :data:`THIS_SERVER` in its strings replaced."""
    if isinstance(value, str):
        return value.replace(THIS_SERVER, hs_of(client).server_name)
    if isinstance(value, list):
        return [on_this_server(client, item) for item in value]
    if isinstance(value, dict):
        return {on_this_server(client, k): on_this_server(client, v) for k, v in value.items()}
    return value


async def make_user(client: Client, localpart: str, device_id: str | None = None) -> User:
    user_id, session = await hs_of(client).accounts.register(localpart, None, device_id=device_id)
    assert session is not None
    return User(user_id, session.device_id, session.access_token)


async def login_again(client: Client, user: User, device_id: str) -> User:
    session = await hs_of(client).accounts.login(
        user.user_id, device_id=device_id, initial_display_name=None, want_refresh=False, ip=None
    )
    return User(user.user_id, session.device_id, session.access_token)


def q(value: str) -> str:
    """A path segment, percent-encoded."""
    return quote(value, safe="")


async def call(
    client: Client, method: str, path: str, user: User | None = None, body: Any = None
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs["headers"] = user.headers
    if body is not None:
        kwargs["json"] = body
    response = await client.request(method, V3 + path, **kwargs)
    payload = await response.json() if response.content_type == "application/json" else None
    return response.status, payload


async def create_room(client: Client, user: User, **body: Any) -> str:
    status, payload = await call(client, "POST", "/createRoom", user, body)
    assert status == 200, payload
    room_id: str = payload["room_id"]
    return room_id


async def send(
    client: Client,
    user: User,
    room_id: str,
    body: Any,
    txn: str,
    event_type: str = "m.room.message",
) -> tuple[int, Any]:
    return await call(
        client, "PUT", f"/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn)}", user, body
    )


async def join(client: Client, user: User, room_id: str) -> tuple[int, Any]:
    return await call(client, "POST", f"/rooms/{q(room_id)}/join", user, {})


async def put_state(
    client: Client, user: User, room_id: str, event_type: str, state_key: str, content: Any
) -> tuple[int, Any]:
    return await call(
        client, "PUT", f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", user, content
    )


async def get_state(
    client: Client, user: User, room_id: str, event_type: str, state_key: str = ""
) -> tuple[int, Any]:
    return await call(
        client, "GET", f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", user
    )
