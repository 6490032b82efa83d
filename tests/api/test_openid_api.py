"""OpenID through the real HTTP stack, on both engines: a client asks for a
token (POST /user/{userId}/openid/request_token), a third party exchanges it
for the user's ID (GET /_matrix/federation/v1/openid/userinfo) until it
expires. And GET /.well-known/matrix/support from the config."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from ranvier.config import ConfigError, parse_config
from ranvier.services.openid import OPENID_TOKEN_LIFETIME_MS
from tests.api.conftest import Clock
from tests.api.directory_support import FED_V1, Client
from tests.api.rooms_support import User, make_user, q
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    make_sync_client_fixture,
)


@pytest.fixture
async def client(migrated_dsn: str, make_sync_client: MakeSyncClient) -> Client:
    return await make_sync_client(migrated_dsn)


async def request_token(
    client: Client, user: User, user_id: str, body: Any = None
) -> tuple[int, Any]:
    response = await client.post(
        f"/_matrix/client/v3/user/{q(user_id)}/openid/request_token",
        headers=user.headers,
        json={} if body is None else body,
    )
    return response.status, await response.json()


async def userinfo(client: Client, token: str) -> tuple[int, Any]:
    response = await client.get(f"{FED_V1}/openid/userinfo", params={"access_token": token})
    return response.status, await response.json()


async def test_token_for_the_user_until_it_expires(client: Client, clock: Clock) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    status, answer = await request_token(client, alice, alice.user_id)
    assert status == 200
    assert answer == {
        "access_token": answer["access_token"],
        "token_type": "Bearer",
        "matrix_server_name": client.app[HOMESERVER].server_name,
        "expires_in": OPENID_TOKEN_LIFETIME_MS // 1000,
    }
    token = answer["access_token"]
    assert isinstance(token, str) and len(token) >= 32
    _, other = await request_token(client, bob, bob.user_id)
    assert other["access_token"] != token
    assert await userinfo(client, token) == (200, {"sub": alice.user_id})
    assert await userinfo(client, other["access_token"]) == (200, {"sub": bob.user_id})
    # The token is not an access token of the account.
    response = await client.get(
        "/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status == 401
    clock.advance(OPENID_TOKEN_LIFETIME_MS - 1)
    assert (await userinfo(client, token))[0] == 200
    clock.advance(1)
    status, body = await userinfo(client, token)
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # New tokens sweep the expired ones away.
    await request_token(client, alice, alice.user_id)
    hs = client.app[HOMESERVER]
    assert await hs.database.fetch_val("SELECT COUNT(*) FROM openid_tokens") == 1


async def test_bad_input(client: Client) -> None:
    alice, bob = await make_user(client, "alice"), await make_user(client, "bob")
    status, body = await request_token(client, alice, bob.user_id)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await request_token(client, alice, alice.user_id, body=[1])
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    response = await client.post(
        f"/_matrix/client/v3/user/{q(alice.user_id)}/openid/request_token", json={}
    )
    assert response.status == 401
    assert (
        await client.app[HOMESERVER].database.fetch_val("SELECT COUNT(*) FROM openid_tokens") == 0
    )
    status, body = await userinfo(client, "")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await userinfo(client, "unknown")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    response = await client.get(f"{FED_V1}/openid/userinfo")
    assert (response.status, (await response.json())["errcode"]) == (400, "M_MISSING_PARAM")


# --- /.well-known/matrix/support --------------------------------------------------------------

SUPPORT = "/.well-known/matrix/support"


async def test_support_is_404_when_unset(client: Client) -> None:
    response = await client.get(SUPPORT)
    assert (response.status, (await response.json())["errcode"]) == (404, "M_NOT_FOUND")


async def test_support_from_config(make_client: Any) -> None:
    contacts = [
        {
            "role": "m.role.admin",
            "matrix_id": "@admin:example.org",
            "email_address": "a@example.org",
        },
        {"role": "m.role.security", "email_address": "security@example.org"},
    ]
    client = await make_client(
        {"well_known": {"support_contacts": contacts, "support_page": "https://example.org/help"}}
    )
    response = await client.get(SUPPORT)
    assert response.status == 200
    assert await response.json() == {
        "contacts": contacts,
        "support_page": "https://example.org/help",
    }
    only_page = await make_client({"well_known": {"support_page": "https://example.org/help"}})
    response = await only_page.get(SUPPORT)
    assert await response.json() == {"support_page": "https://example.org/help"}


@pytest.mark.parametrize(
    "well_known",
    [
        {"support_page": "not a url"},
        {"support_contacts": []},
        {"support_contacts": "admin@example.org"},
        {"support_contacts": [{"email_address": "a@example.org"}]},  # no role
        {"support_contacts": [{"role": "m.role.admin"}]},  # no way to reach it
        {"support_contacts": [{"role": "m.role.admin", "matrix_id": "admin"}]},
        {"support_contacts": [{"role": "m.role.admin", "email_address": "", "x": 1}]},
    ],
)
def test_bad_support_config_is_refused(tmp_path: Any, well_known: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config({"well_known": well_known}, tmp_path, env={})


def test_bad_publish_rule_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="publish_rule"):
        parse_config({"directory": {"publish_rule": "everyone"}}, tmp_path, env={})
    config = parse_config({}, tmp_path, env={})
    assert config.directory.publish_rule == "room_admins"
