"""POST /register with User-Interactive Authentication, /register/available,
registration token validity, guests, rate limiting."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from tests.api.accounts_support import (
    AccountsClient,
    Client,
    login,
    register,
    whoami,
)
from tests.api.conftest import MakeClient

REGISTER = "/_matrix/client/v3/register"
AVAILABLE = "/_matrix/client/v3/register/available"
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"


async def _post(client: Client, body: Any, path: str = REGISTER) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, json=body)
    return response.status, await response.json()


async def test_registration_is_closed_by_default(make_client: MakeClient) -> None:
    client = await make_client()
    status, body = await _post(client, {"username": "alice", "password": "pw"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    response = await client.get(AVAILABLE, params={"username": "alice"})
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"


async def test_first_request_gets_the_flows_and_a_session(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    status, body = await _post(client, {"username": "alice", "password": "pw"})
    assert status == 401
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    assert body["params"] == {}
    assert isinstance(body["session"], str) and body["session"]
    assert "errcode" not in body and "completed" not in body


async def test_dummy_stage_with_the_session_registers_with_the_first_requests_params(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    _, first = await _post(
        client,
        {"username": "alice", "password": "pw", "initial_device_display_name": "Phone"},
    )
    status, body = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert status == 200, body
    assert body["user_id"] == "@alice:localhost"
    assert body["home_server"] == "localhost"
    assert body["access_token"].startswith("rvt_")
    assert "refresh_token" not in body and "expires_in_ms" not in body
    assert await whoami(client, body["access_token"]) == (
        200,
        {"user_id": "@alice:localhost", "device_id": body["device_id"], "is_guest": False},
    )
    hs = client.app[HOMESERVER]
    device = await hs.accounts.get_device("@alice:localhost", body["device_id"])
    assert device is not None and device.display_name == "Phone"
    # The session is spent.
    status, body = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")
    # The password works.
    assert (await login(client, "alice", "pw"))["user_id"] == "@alice:localhost"


async def test_register_with_device_id_refresh_token_and_inhibit_login(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client({"refreshable_access_token_lifetime": "1m"})
    body = await register(client, "alice", device_id="MYDEVICE", refresh_token=True)
    assert body["device_id"] == "MYDEVICE"
    assert body["refresh_token"].startswith("rvr_")
    assert body["expires_in_ms"] == 60_000
    body = await register(client, "bob", inhibit_login=True)
    assert body == {"user_id": "@bob:localhost", "home_server": "localhost"}
    assert (await login(client, "bob"))["user_id"] == "@bob:localhost"


async def test_username_is_generated_when_absent(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    first = await _post(client, {"password": "pw", "auth": {"type": "m.login.dummy"}})
    second = await _post(client, {"password": "pw", "auth": {"type": "m.login.dummy"}})
    assert (first[0], second[0]) == (200, 200)
    assert first[1]["user_id"] == "@1:localhost"
    assert second[1]["user_id"] == "@2:localhost"


@pytest.mark.parametrize(
    "username", ["Alice", "al ice", "al:ice", "", "123", "_bridge", "é", "a" * 250]
)
async def test_invalid_usernames_are_refused_before_auth(
    accounts_client: AccountsClient, username: str
) -> None:
    client = await accounts_client()
    status, body = await _post(client, {"username": username, "password": "pw"})
    assert (status, body["errcode"]) == (400, "M_INVALID_USERNAME")
    response = await client.get(AVAILABLE, params={"username": username})
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_USERNAME"


async def test_taken_username_is_refused_before_and_after_auth(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    _, started = await _post(client, {"username": "alice", "password": "pw"})
    await register(client, "alice")
    status, body = await _post(client, {"username": "alice", "password": "pw"})
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")
    # The session started before alice was taken: refused after auth too.
    status, body = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": started["session"]}}
    )
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")


async def test_username_availability(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    response = await client.get(AVAILABLE, params={"username": "alice"})
    assert (response.status, await response.json()) == (200, {"available": True})
    await register(client, "alice")
    response = await client.get(AVAILABLE, params={"username": "alice"})
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_USER_IN_USE"
    response = await client.get(AVAILABLE)
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_MISSING_PARAM"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"username": 1}, "M_BAD_JSON"),
        ({"password": 5}, "M_BAD_JSON"),
        ({"password": "x" * 513}, "M_INVALID_PARAM"),
        ({"device_id": ""}, "M_INVALID_PARAM"),
        ({"device_id": 7}, "M_INVALID_PARAM"),
        ({"initial_device_display_name": 3}, "M_BAD_JSON"),
        ({"initial_device_display_name": "x" * 101}, "M_TOO_LARGE"),
        ({"inhibit_login": "yes"}, "M_BAD_JSON"),
        ({"refresh_token": 1}, "M_BAD_JSON"),
        ({"auth": "dummy"}, "M_BAD_JSON"),
        ({"auth": {"type": 1}}, "M_BAD_JSON"),
        ({"auth": {"session": 1}}, "M_BAD_JSON"),
        ({"auth": {"type": "m.login.password"}}, "M_UNRECOGNIZED"),
        ({"auth": {"type": "m.login.dummy", "session": "nope"}}, "M_UNKNOWN"),
    ],
)
async def test_bad_parameters(
    accounts_client: AccountsClient, body: dict[str, Any], errcode: str
) -> None:
    client = await accounts_client()
    status, answer = await _post(client, body)
    assert (status, answer["errcode"]) == (400, errcode)


async def test_bad_json_and_bad_kind(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    response = await client.post(REGISTER, data=b"{nope")
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")
    response = await client.post(REGISTER, data=b"[1]")
    assert (response.status, (await response.json())["errcode"]) == (400, "M_BAD_JSON")
    response = await client.post(REGISTER, params={"kind": "robot"}, json={})
    assert (response.status, (await response.json())["errcode"]) == (400, "M_INVALID_PARAM")


async def test_password_is_required_once_auth_is_done(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    status, body = await _post(client, {"username": "alice", "auth": {"type": "m.login.dummy"}})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    assert not await client.app[HOMESERVER].accounts.user_exists("@alice:localhost")


async def test_later_params_replace_the_stored_ones(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    _, first = await _post(client, {"username": "alice", "password": "pw"})
    status, body = await _post(
        client,
        {
            "username": "bob",
            "password": "pw2",
            "auth": {"type": "m.login.dummy", "session": first["session"]},
        },
    )
    assert (status, body["user_id"]) == (200, "@bob:localhost")


async def test_session_is_pinned_to_its_operation(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    token = (await register(client, "alice"))["access_token"]
    _, first = await _post(client, {"username": "bob", "password": "pw"})
    response = await client.post(
        "/_matrix/client/v3/account/password",
        json={"new_password": "x", "auth": {"type": "m.login.password", "session": first["session"]}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"


async def test_sessions_expire_after_two_days(accounts_client: AccountsClient, clock: Any) -> None:
    client = await accounts_client()
    _, first = await _post(client, {"username": "alice", "password": "pw"})
    clock.advance(48 * 3600 * 1000 + 1)
    status, body = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")


# --- registration tokens ---------------------------------------------------------------


TOKEN_CONFIG = {"registration": {"enabled": True, "require_token": True}}


async def test_token_flow(accounts_client: AccountsClient) -> None:
    client = await accounts_client(TOKEN_CONFIG)
    accounts = client.app[HOMESERVER].accounts
    await accounts.create_registration_token("abc", 1, None)
    status, first = await _post(client, {"username": "alice", "password": "pw"})
    assert status == 401
    assert first["flows"] == [{"stages": ["m.login.registration_token"]}]
    # The dummy stage is not offered.
    status, body = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert (status, body["errcode"]) == (400, "M_UNRECOGNIZED")
    # A wrong token: 401 with the flows and an error.
    status, body = await _post(
        client,
        {"auth": {"type": "m.login.registration_token", "token": "nope", "session": first["session"]}},
    )
    assert status == 401
    assert body["errcode"] == "M_UNAUTHORIZED"
    assert body["session"] == first["session"]
    assert body["flows"] == first["flows"]
    # Missing token.
    status, body = await _post(
        client, {"auth": {"type": "m.login.registration_token", "session": first["session"]}}
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await _post(
        client,
        {"auth": {"type": "m.login.registration_token", "token": "abc", "session": first["session"]}},
    )
    assert (status, body["user_id"]) == (200, "@alice:localhost")
    row = await accounts.store.get_registration_token("abc")
    assert row is not None and (row.pending, row.completed) == (0, 1)
    # Used up.
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert (response.status, await response.json()) == (200, {"valid": False})
    status, body = await _post(
        client,
        {"username": "bob", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "abc"}},
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_token_validity(accounts_client: AccountsClient, clock: Any) -> None:
    client = await accounts_client(TOKEN_CONFIG)
    accounts = client.app[HOMESERVER].accounts
    await accounts.create_registration_token("abc", None, clock.now_ms + 1000)
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert (response.status, await response.json()) == (200, {"valid": True})
    response = await client.get(VALIDITY, params={"token": "zzz"})
    assert (response.status, await response.json()) == (200, {"valid": False})
    clock.advance(1000)
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert (response.status, await response.json()) == (200, {"valid": False})
    response = await client.get(VALIDITY)
    assert (response.status, (await response.json())["errcode"]) == (400, "M_MISSING_PARAM")


async def test_token_validity_is_forbidden_without_token_registration(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert (response.status, (await response.json())["errcode"]) == (403, "M_FORBIDDEN")


async def test_completed_stage_is_not_spent_twice(accounts_client: AccountsClient) -> None:
    client = await accounts_client(TOKEN_CONFIG)
    accounts = client.app[HOMESERVER].accounts
    await accounts.create_registration_token("abc", 2, None)
    # Completes the stage, then fails on the missing password: the session lives on.
    status, body = await _post(
        client, {"username": "alice", "auth": {"type": "m.login.registration_token", "token": "abc"}}
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    row = await accounts.store.get_registration_token("abc")
    assert row is not None and row.pending == 1


async def test_abandoned_token_registration_is_released(
    accounts_client: AccountsClient, clock: Any
) -> None:
    client = await accounts_client(TOKEN_CONFIG)
    accounts = client.app[HOMESERVER].accounts
    await accounts.create_registration_token("abc", 1, None)
    _, first = await _post(client, {"username": "alice"})
    await _post(
        client,
        {"auth": {"type": "m.login.registration_token", "token": "abc", "session": first["session"]}},
    )
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert await response.json() == {"valid": False}  # reserved by the pending registration
    clock.advance(48 * 3600 * 1000 + 1)
    await _post(client, {"username": "bob"})  # starting a session sweeps expired ones
    response = await client.get(VALIDITY, params={"token": "abc"})
    assert await response.json() == {"valid": True}


# --- guests ---------------------------------------------------------------------------


async def test_guest_registration(accounts_client: AccountsClient) -> None:
    client = await accounts_client({"registration": {"enabled": False, "guest_access": True}})
    response = await client.post(
        REGISTER,
        params={"kind": "guest"},
        json={"username": "ignored", "device_id": "IGNORED", "initial_device_display_name": "G"},
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["user_id"] == "@1:localhost"
    assert body["device_id"] != "IGNORED"
    status, me = await whoami(client, body["access_token"])
    assert (status, me["is_guest"]) == (200, True)
    # Guests may not change a password.
    response = await client.post(
        "/_matrix/client/v3/account/password",
        json={"new_password": "x"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert (response.status, (await response.json())["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_guest_registration_is_off_by_default(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    response = await client.post(REGISTER, params={"kind": "guest"}, json={})
    assert (response.status, (await response.json())["errcode"]) == (403, "M_FORBIDDEN")


# --- rate limiting --------------------------------------------------------------------


async def test_registration_is_rate_limited_per_address(accounts_client: AccountsClient) -> None:
    client = await accounts_client(
        {"ratelimit": {"enabled": True, "registration": {"per_second": 0.001, "burst": 2}}}
    )
    first = await _post(client, {"username": "alice", "password": "pw"})
    # Continuing a session costs nothing.
    status, _ = await _post(
        client, {"auth": {"type": "m.login.dummy", "session": first[1]["session"]}}
    )
    assert status == 200
    assert (await _post(client, {"username": "bob", "password": "pw"}))[0] == 401
    status, body = await _post(client, {"username": "carol", "password": "pw"})
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
