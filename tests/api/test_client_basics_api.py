"""GET /capabilities, /thirdparty/protocols and /voip/turnServer."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from ranvier.api.http import HOMESERVER
from ranvier.config import ConfigError, parse_config
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.test_push_rules_api import Client, new_user

PATHS = (
    "/_matrix/client/v3/capabilities",
    "/_matrix/client/v3/thirdparty/protocols",
    "/_matrix/client/v3/voip/turnServer",
)


async def get(client: Client, path: str, headers: dict[str, str] | None) -> tuple[int, Any]:
    response = await client.get(path, headers=headers or {})
    return response.status, await response.json()


async def test_all_need_a_valid_token_and_accept_guests(make_client: MakeClient) -> None:
    client = await make_client()
    guest = await new_user(client, "guest1", guest=True)
    for path in PATHS:
        status, body = await get(client, path, None)
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN"), path
        status, body = await get(client, path, {"Authorization": "Bearer wrong"})
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN"), path
        status, _ = await get(client, path, guest)
        assert status == 200, path


async def test_capabilities(make_client: MakeClient) -> None:
    client = await make_client()
    alice = await new_user(client, "alice")
    assert await get(client, "/_matrix/client/v3/capabilities", alice) == (
        200,
        {
            "capabilities": {
                "m.room_versions": {
                    "default": "12",
                    "available": {str(version): "stable" for version in range(1, 13)},
                },
                "m.change_password": {"enabled": True},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": False},
            }
        },
    )


async def test_thirdparty_protocols_without_bridges(make_client: MakeClient) -> None:
    client = await make_client()
    alice = await new_user(client, "alice")
    assert await get(client, "/_matrix/client/v3/thirdparty/protocols", alice) == (200, {})
    # The other third-party lookups are not served yet.
    status, body = await get(client, "/_matrix/client/v3/thirdparty/protocol/irc", alice)
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


async def test_turn_server_unconfigured_is_empty(make_client: MakeClient) -> None:
    client = await make_client({"turn": {"uris": ["turn:turn.example.org:3478"]}})
    alice = await new_user(client, "alice")
    assert await get(client, "/_matrix/client/v3/voip/turnServer", alice) == (200, {})


async def test_turn_server_credentials(make_client: MakeClient) -> None:
    uris = ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"]
    client = await make_client(
        {"turn": {"uris": uris, "shared_secret": "s3cret", "user_lifetime": "1d"}}
    )
    assert client.app[HOMESERVER].clock_ms() == NOW_MS
    alice = await new_user(client, "alice")
    status, body = await get(client, "/_matrix/client/v3/voip/turnServer", alice)
    expiry = NOW_MS // 1000 + 86400
    username = f"{expiry}:@alice:localhost"
    password = base64.b64encode(
        hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    ).decode()
    assert (status, body) == (
        200,
        {"username": username, "password": password, "uris": uris, "ttl": 86400},
    )
    # Computed independently: printf '1700086400:@alice:localhost' |
    # openssl dgst -sha1 -hmac s3cret -binary | base64
    assert (username, password) == ("1700086400:@alice:localhost", "yS4akW8ZCFWsoISzNcIUolTKqIU=")


async def test_turn_default_lifetime_is_an_hour(make_client: MakeClient) -> None:
    client = await make_client({"turn": {"uris": ["turn:t.example"], "shared_secret": "x"}})
    alice = await new_user(client, "alice")
    status, body = await get(client, "/_matrix/client/v3/voip/turnServer", alice)
    assert status == 200
    assert body["ttl"] == 3600
    assert body["username"] == f"{NOW_MS // 1000 + 3600}:@alice:localhost"


def test_turn_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"turn\.uris"):
        parse_config({"turn": {"uris": ["http://not-turn"]}}, tmp_path, env={})
    with pytest.raises(ConfigError, match=r"turn\.uris"):
        parse_config({"turn": {"uris": "turn:x"}}, tmp_path, env={})
    with pytest.raises(ConfigError, match=r"turn\.user_lifetime"):
        parse_config({"turn": {"user_lifetime": 0}}, tmp_path, env={})
    config = parse_config(
        {},
        tmp_path,
        env={"RANVIER_TURN_URIS": '["turn:a.example"]', "RANVIER_TURN_SHARED_SECRET": "yes"},
    )
    assert (config.turn.uris, config.turn.shared_secret) == (("turn:a.example",), "yes")


async def test_default_room_version_config_is_used_by_create_room_and_capabilities(
    make_client: MakeClient,
) -> None:
    client = await make_client({"default_room_version": "10"})
    alice = await new_user(client, "alice")
    status, body = await get(client, "/_matrix/client/v3/capabilities", alice)
    assert status == 200 and body["capabilities"]["m.room_versions"]["default"] == "10"
    hs = client.app[HOMESERVER]
    for request, expected in (({}, "10"), ({"room_version": "11"}, "11")):
        response = await client.post("/_matrix/client/v3/createRoom", json=request, headers=alice)
        assert response.status == 200
        room = await hs.rooms.store.get_room((await response.json())["room_id"])
        assert room is not None and room.room_version == expected
