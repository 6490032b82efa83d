"""GET/POST /login, /refresh, /logout, /logout/all and /account/whoami."""

from __future__ import annotations

from typing import Any

import bcrypt
import pytest

from ranvier.api.http import HOMESERVER
from tests.api.accounts_support import (
    AccountsClient,
    Client,
    Clock,
    auth_header,
    login,
    register,
    whoami,
)

LOGIN = "/_matrix/client/v3/login"
REFRESH = "/_matrix/client/v3/refresh"
LOGOUT = "/_matrix/client/v3/logout"
LOGOUT_ALL = "/_matrix/client/v3/logout/all"


async def _post(
    client: Client, path: str, body: Any, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = auth_header(token) if token else None
    response = await client.post(path, json=body, headers=headers)
    return response.status, await response.json()


async def test_login_flows(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    response = await client.get(LOGIN)
    assert (response.status, await response.json()) == (
        200,
        {"flows": [{"type": "m.login.password"}]},
    )


@pytest.mark.parametrize(
    "identifier",
    [
        {"identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "@alice:localhost"}},
        {"user": "alice"},
        {"user": "@alice:localhost"},
    ],
)
async def test_password_login_by_localpart_user_id_or_legacy_user(
    accounts_client: AccountsClient, identifier: dict[str, Any]
) -> None:
    client = await accounts_client()
    await register(client, "alice", "pw")
    status, body = await _post(
        client,
        LOGIN,
        {"type": "m.login.password", "password": "pw", "initial_device_display_name": "Laptop", **identifier},
    )
    assert status == 200, body
    assert set(body) == {"user_id", "access_token", "device_id", "home_server"}
    assert body["user_id"] == "@alice:localhost"
    device = await client.app[HOMESERVER].accounts.get_device("@alice:localhost", body["device_id"])
    assert device is not None and device.display_name == "Laptop"
    assert (await whoami(client, body["access_token"]))[1]["device_id"] == body["device_id"]


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.user", "user": "nobody"}, "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.user", "user": "@alice:elsewhere"}, "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.user", "user": "@bad"}, "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"}, "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"medium": "email", "address": "a@b.c", "password": "pw"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.other"}, "password": "pw"}, 400, "M_UNKNOWN"),
        ({"identifier": "alice", "password": "pw"}, 400, "M_BAD_JSON"),
        ({"identifier": {"type": "m.id.user", "user": 5}, "password": "pw"}, 400, "M_BAD_JSON"),
        ({"user": 5, "password": "pw"}, 400, "M_BAD_JSON"),
        ({"password": "pw"}, 400, "M_MISSING_PARAM"),
        ({"user": "alice"}, 400, "M_MISSING_PARAM"),
        ({"user": "alice", "password": 1}, 400, "M_BAD_JSON"),
        ({"user": "alice", "password": "pw", "device_id": ""}, 400, "M_INVALID_PARAM"),
        ({"user": "alice", "password": "pw", "refresh_token": "yes"}, 400, "M_BAD_JSON"),
        ({"user": "alice", "password": "pw", "initial_device_display_name": "x" * 101}, 400, "M_TOO_LARGE"),
    ],
)
async def test_login_errors(
    accounts_client: AccountsClient, body: dict[str, Any], status: int, errcode: str
) -> None:
    client = await accounts_client()
    await register(client, "alice", "pw")
    answer = await _post(client, LOGIN, {"type": "m.login.password", **body})
    assert (answer[0], answer[1]["errcode"]) == (status, errcode)


async def test_login_type_errors(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    status, body = await _post(client, LOGIN, {"type": "m.login.token", "token": "t"})
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")
    status, body = await _post(client, LOGIN, {"user": "alice", "password": "pw"})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    response = await client.post(LOGIN, data=b"not json")
    assert (response.status, (await response.json())["errcode"]) == (400, "M_NOT_JSON")


async def test_deactivated_user_gets_user_deactivated(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    await register(client, "alice", "pw")
    await client.app[HOMESERVER].accounts.deactivate("@alice:localhost")
    status, body = await _post(client, LOGIN, {"type": "m.login.password", "user": "alice", "password": "pw"})
    assert (status, body["errcode"]) == (403, "M_USER_DEACTIVATED")
    status, body = await _post(client, LOGIN, {"type": "m.login.password", "user": "alice", "password": "no"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


async def test_reusing_a_device_id_revokes_its_old_tokens(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    await register(client, "alice", "pw", device_id="DEV", initial_device_display_name="First")
    old = await login(client, "alice", "pw", device_id="DEV")
    assert (await whoami(client, old["access_token"]))[0] == 200
    new = await login(client, "alice", "pw", device_id="DEV", initial_device_display_name="Second")
    assert new["device_id"] == "DEV"
    status, body = await whoami(client, old["access_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert (await whoami(client, new["access_token"]))[0] == 200
    device = await client.app[HOMESERVER].accounts.get_device("@alice:localhost", "DEV")
    assert device is not None and device.display_name == "First"


async def test_well_known_is_returned_when_configured(accounts_client: AccountsClient) -> None:
    client = await accounts_client({"well_known": {"client_base_url": "https://m.example.org"}})
    await register(client, "alice", "pw")
    body = await login(client, "alice", "pw")
    assert body["well_known"] == {"m.homeserver": {"base_url": "https://m.example.org"}}


async def test_login_is_rate_limited(accounts_client: AccountsClient) -> None:
    client = await accounts_client({"ratelimit": {"enabled": True, "login": {"per_second": 0.001, "burst": 2}}})
    for _ in range(2):
        status, _ = await _post(client, LOGIN, {"type": "m.login.password", "user": "x", "password": "y"})
        assert status == 403
    status, body = await _post(client, LOGIN, {"type": "m.login.password", "user": "x", "password": "y"})
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")


async def test_synapse_bcrypt_hash_logs_in_and_is_upgraded(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    accounts = client.app[HOMESERVER].accounts
    synapse_hash = bcrypt.hashpw(b"p\xc3\xa4ss", bcrypt.gensalt(4)).decode()  # "päss", NFC
    async with accounts.store.db.transaction() as txn:
        await accounts.store.create_user(txn, "@Imported:localhost", synapse_hash, 1)
    # NFKC normalisation as Synapse: the decomposed form is the same password.
    body = await login(client, "imported", "pa\u0308ss")
    assert body["user_id"] == "@Imported:localhost"
    user = await accounts.get_user("@Imported:localhost")
    assert user is not None and user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert (await login(client, "@Imported:localhost", "päss"))["user_id"] == "@Imported:localhost"


# --- tokens and refresh ---------------------------------------------------------------


async def test_missing_and_unknown_tokens(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    response = await client.get("/_matrix/client/v3/account/whoami")
    assert (response.status, (await response.json())["errcode"]) == (401, "M_MISSING_TOKEN")
    for token in ("rvt_unknown", "garbage"):
        status, body = await whoami(client, token)
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        assert "soft_logout" not in body
    response = await client.get(
        "/_matrix/client/v3/account/whoami", params={"access_token": "rvt_unknown"}
    )
    assert response.status == 401


async def test_query_string_token_works(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    token = (await register(client, "alice"))["access_token"]
    response = await client.get("/_matrix/client/v3/account/whoami", params={"access_token": token})
    assert response.status == 200


async def test_refreshable_token_expires_with_soft_logout(
    accounts_client: AccountsClient, clock: Clock
) -> None:
    client = await accounts_client()
    session = await login_with_refresh(client)
    assert session["expires_in_ms"] == 300_000  # the default lifetime
    assert (await whoami(client, session["access_token"]))[0] == 200
    clock.advance(300_000)
    status, body = await whoami(client, session["access_token"])
    assert (status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)
    # Refreshing gives a working token again.
    status, new = await _post(client, REFRESH, {"refresh_token": session["refresh_token"]})
    assert status == 200, new
    assert set(new) == {"access_token", "refresh_token", "expires_in_ms"}
    assert (await whoami(client, new["access_token"]))[0] == 200


async def login_with_refresh(client: Client) -> dict[str, Any]:
    await register(client, "alice", "pw")
    return await login(client, "alice", "pw", refresh_token=True)


async def test_refresh_rotation(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    first = await login_with_refresh(client)
    status, second = await _post(client, REFRESH, {"refresh_token": first["refresh_token"]})
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    # Until the new tokens are used, the old refresh token may be used again
    # (the client may have lost the answer); that replaces the unused pair.
    status, second_again = await _post(client, REFRESH, {"refresh_token": first["refresh_token"]})
    assert status == 200
    assert (await whoami(client, second["access_token"]))[0] == 401
    # The old access token still works until the new one is used.
    assert (await whoami(client, first["access_token"]))[0] == 200
    assert (await whoami(client, second_again["access_token"]))[0] == 200
    # Now the old refresh token and its access token are gone.
    status, body = await _post(client, REFRESH, {"refresh_token": first["refresh_token"]})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert (await whoami(client, first["access_token"]))[0] == 401
    assert (await whoami(client, second_again["access_token"]))[1]["user_id"] == "@alice:localhost"


async def test_using_the_new_refresh_token_revokes_the_old_one(
    accounts_client: AccountsClient,
) -> None:
    client = await accounts_client()
    first = await login_with_refresh(client)
    _, second = await _post(client, REFRESH, {"refresh_token": first["refresh_token"]})
    status, third = await _post(client, REFRESH, {"refresh_token": second["refresh_token"]})
    assert status == 200
    status, body = await _post(client, REFRESH, {"refresh_token": first["refresh_token"]})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert (await whoami(client, third["access_token"]))[0] == 200


async def test_refresh_errors(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    status, body = await _post(client, REFRESH, {"refresh_token": "rvr_nope"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await _post(client, REFRESH, {})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await _post(client, REFRESH, {"refresh_token": 3})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")


# --- logout ---------------------------------------------------------------------------


async def test_logout_revokes_the_token_and_deletes_the_device(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    first = await register(client, "alice", "pw")
    second = await login(client, "alice", "pw")
    assert (await whoami(client, first["access_token"]))[0] == 200  # now cached
    assert await _post(client, LOGOUT, {}, first["access_token"]) == (200, {})
    status, body = await whoami(client, first["access_token"])
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    accounts = client.app[HOMESERVER].accounts
    assert [d.device_id for d in await accounts.get_devices("@alice:localhost")] == [second["device_id"]]
    assert (await whoami(client, second["access_token"]))[0] == 200
    status, body = await _post(client, LOGOUT, {})
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")


async def test_logout_works_with_an_expired_token(
    accounts_client: AccountsClient, clock: Clock
) -> None:
    client = await accounts_client()
    session = await login_with_refresh(client)
    clock.advance(10 * 60 * 1000)
    assert await _post(client, LOGOUT, {}, session["access_token"]) == (200, {})
    status, _ = await _post(client, REFRESH, {"refresh_token": session["refresh_token"]})
    assert status == 401


async def test_logout_all(accounts_client: AccountsClient) -> None:
    client = await accounts_client()
    first = await register(client, "alice", "pw")
    second = await login(client, "alice", "pw")
    bob = await register(client, "bob", "pw")
    for token in (first["access_token"], second["access_token"]):
        assert (await whoami(client, token))[0] == 200
    assert await _post(client, LOGOUT_ALL, {}, second["access_token"]) == (200, {})
    for token in (first["access_token"], second["access_token"]):
        assert (await whoami(client, token))[0] == 401
    assert await client.app[HOMESERVER].accounts.get_devices("@alice:localhost") == []
    assert (await whoami(client, bob["access_token"]))[0] == 200
