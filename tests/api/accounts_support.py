"""Short-hands for the account tests: register, log in and ask who am I through
the real endpoints. The fixtures (``accounts_client``, ``clock``) are in conftest.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.conftest import Clock

__all__ = ["AccountsClient", "Client", "Clock", "auth_header", "login", "register", "whoami"]

Client = TestClient[Any, Any]
AccountsClient = Callable[..., Awaitable[Client]]


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    client: Client, username: str = "alice", password: str = "secret-pw", **extra: Any
) -> dict[str, Any]:
    """Register through the m.login.dummy flow; the 200 body."""
    response = await client.post(
        "/_matrix/client/v3/register",
        json={"username": username, "password": password, "auth": {"type": "m.login.dummy"}, **extra},
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def login(
    client: Client, user: str = "alice", password: str = "secret-pw", **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            **extra,
        },
    )
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def whoami(client: Client, token: str) -> tuple[int, dict[str, Any]]:
    response = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(token))
    return response.status, await response.json()
