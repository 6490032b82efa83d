"""POST /account/password and /account/deactivate, both behind m.login.password UIA."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from tests.api.accounts_support import (
    AccountsClient,
    Client,
    auth_header,
    login,
    register,
    whoami,
)

PASSWORD = "/_matrix/client/v3/account/password"
DEACTIVATE = "/_matrix/client/v3/account/deactivate"
FLOWS = [{"stages": ["m.login.password"]}]


def password_auth(password: str = "pw", user: str = "alice", **extra: Any) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }


async def _post(client: Client, path: str, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, json=body, headers=auth_header(token) if token else None)
    return response.status, await response.json()


async def test_password_change_dance(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    me = await register(client, "alice", "pw")
    other = await login(client, "alice", "pw")
    token = me["access_token"]

    status, first = await _post(client, PASSWORD, {"new_password": "new-pw"}, token)
    assert status == 401
    assert first["flows"] == FLOWS and first["params"] == {}
    assert "errcode" not in first

    # A wrong password: 401 with the flows and M_FORBIDDEN, the session lives on.
    status, body = await _post(
        client, PASSWORD, {"auth": password_auth("wrong", session=first["session"])}, token
    )
    assert (status, body["errcode"], body["flows"], body["session"]) == (
        401,
        "M_FORBIDDEN",
        FLOWS,
        first["session"],
    )
    status, body = await _post(
        client, PASSWORD, {"auth": password_auth(session=first["session"])}, token
    )
    assert (status, body) == (200, {})
    # The new password works, the old does not; other devices are logged out.
    assert (await login(client, "alice", "new-pw"))["user_id"] == "@alice:localhost"
    response = await client.post(
        "/_matrix/client/v3/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
    )
    assert response.status == 403
    assert (await whoami(client, token))[0] == 200
    assert (await whoami(client, other["access_token"]))[0] == 401
    devices = await client.app[HOMESERVER].accounts.get_devices("@alice:localhost")
    assert other["device_id"] not in [d.device_id for d in devices]
    assert me["device_id"] in [d.device_id for d in devices]


async def test_password_change_can_keep_other_devices(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    token = (await register(client, "alice", "pw"))["access_token"]
    other = await login(client, "alice", "pw")
    status, _ = await _post(
        client,
        PASSWORD,
        {"new_password": "new", "logout_devices": False, "auth": password_auth()},
        token,
    )
    assert status == 200
    assert (await whoami(client, other["access_token"]))[0] == 200


async def test_password_stage_must_name_the_requester(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    token = (await register(client, "alice", "pw"))["access_token"]
    await register(client, "bob", "bobpw")
    status, body = await _post(
        client, PASSWORD, {"new_password": "x", "auth": password_auth("bobpw", "bob")}, token
    )
    assert (status, body["errcode"]) == (401, "M_FORBIDDEN")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"new_password": 5}, "M_BAD_JSON"),
        ({"new_password": "x" * 513}, "M_INVALID_PARAM"),
        ({"new_password": "x", "logout_devices": "no"}, "M_BAD_JSON"),
        ({"auth": password_auth()}, "M_MISSING_PARAM"),
        ({"new_password": "x", "auth": {"type": "m.login.password", "password": "pw"}}, "M_MISSING_PARAM"),
        ({"new_password": "x", "auth": {"type": "m.login.dummy"}}, "M_UNRECOGNIZED"),
    ],
)
async def test_password_change_errors(
    accounts_client: AccountsClient, body: dict[str, Any], errcode: str
) -> None:
    client = await accounts_client()
    token = (await register(client, "alice", "pw"))["access_token"]
    status, answer = await _post(client, PASSWORD, body, token)
    assert (status, answer["errcode"]) == (400, errcode)


async def test_password_change_needs_a_token(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    status, body = await _post(client, PASSWORD, {"new_password": "x"}, None)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_session_of_another_user_is_refused(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    alice = (await register(client, "alice", "pw"))["access_token"]
    bob = (await register(client, "bob", "pw"))["access_token"]
    _, first = await _post(client, PASSWORD, {"new_password": "x"}, alice)
    status, body = await _post(
        client, PASSWORD, {"auth": password_auth(user="bob", session=first["session"])}, bob
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_password_stage_is_rate_limited(accounts_client: AccountsClient) -> None:
    client = await accounts_client(
        {"ratelimit": {"enabled": True, "login": {"per_second": 0.001, "burst": 1}}}
    )
    token = (await register(client, "alice", "pw"))["access_token"]
    status, _ = await _post(client, PASSWORD, {"new_password": "x", "auth": password_auth("no")}, token)
    assert status == 401
    status, body = await _post(client, PASSWORD, {"new_password": "x", "auth": password_auth()}, token)
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")


# --- deactivation ---------------------------------------------------------------------


class FakeRooms:
    def __init__(self) -> None:
        self.deactivated: list[str] = []

    async def on_user_deactivated(self, user_id: str) -> None:
        self.deactivated.append(user_id)

    async def users_sharing_rooms_with(self, user_id: str) -> list[str]:
        return []  # no rooms: the device-list announcement of the deleted devices goes nowhere


async def test_deactivation(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    me = await register(client, "alice", "pw")
    other = await login(client, "alice", "pw")
    hs = client.app[HOMESERVER]
    rooms = FakeRooms()
    hs.rooms = rooms  # type: ignore[attr-defined]
    token = me["access_token"]
    status, first = await _post(client, DEACTIVATE, {"erase": False}, token)
    assert (status, first["flows"]) == (401, FLOWS)
    status, body = await _post(client, DEACTIVATE, {"auth": password_auth(session=first["session"])}, token)
    assert (status, body) == (200, {"id_server_unbind_result": "success"})
    assert rooms.deactivated == ["@alice:localhost"]
    for access_token in (token, other["access_token"]):
        assert (await whoami(client, access_token))[0] == 401
    assert await hs.accounts.is_deactivated("@alice:localhost")
    assert await hs.accounts.get_devices("@alice:localhost") == []
    response = await client.post(
        "/_matrix/client/v3/login", json={"type": "m.login.password", "user": "alice", "password": "pw"}
    )
    assert (response.status, (await response.json())["errcode"]) == (403, "M_USER_DEACTIVATED")
    # The user ID stays taken.
    response = await client.get("/_matrix/client/v3/register/available", params={"username": "alice"})
    assert (await response.json())["errcode"] == "M_USER_IN_USE"


@pytest.mark.parametrize(
    "body", [{"erase": "yes"}, {"id_server": 5}, {"auth": password_auth(), "erase": 1}]
)
async def test_deactivation_bad_params(accounts_client: AccountsClient, body: dict[str, Any]) -> None:
    client = await accounts_client()
    token = (await register(client, "alice", "pw"))["access_token"]
    status, answer = await _post(client, DEACTIVATE, body, token)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert not await client.app[HOMESERVER].accounts.is_deactivated("@alice:localhost")


async def test_deactivation_wrong_password(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    token = (await register(client, "alice", "pw"))["access_token"]
    status, body = await _post(client, DEACTIVATE, {"auth": password_auth("nope")}, token)
    assert (status, body["errcode"], body["flows"]) == (401, "M_FORBIDDEN", FLOWS)
    assert not await client.app[HOMESERVER].accounts.is_deactivated("@alice:localhost")


async def test_service_interface(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    await register(client, "alice", "pw")
    accounts = client.app[HOMESERVER].accounts
    assert await accounts.user_exists("@alice:localhost")
    assert not await accounts.user_exists("@bob:localhost")
    assert not await accounts.is_admin("@alice:localhost")
    assert await accounts.set_admin("@alice:localhost", True)
    assert await accounts.is_admin("@alice:localhost")
    assert not await accounts.is_deactivated("@alice:localhost")
    assert not await accounts.is_deactivated("@bob:localhost")
