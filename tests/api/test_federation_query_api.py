"""Federation query endpoints through the real HTTP stack, called by a fake
remote server with X-Matrix signed requests (tests/federation_support.py):
profiles, aliases, devices, keys (query and claim), the public room directory,
space hierarchies, OpenID userinfo. And the client side: a local client's
/keys/query, /keys/claim, /profile and /directory/room for users and aliases of
another server, answered by a scripted federation client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from yarl import URL

from ranvier.api.http import HOMESERVER
from ranvier.services.federation.client import FederationResponseError, FederationUnreachable
from ranvier.services.requester import Requester
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.e2e_support import CrossSigning, Device
from tests.api.rooms_support import ROOMS_CONFIG, create_room, make_user, put_state, q
from tests.api.rooms_support import call as client_call
from tests.federation_support import FakeServer

HOUR = 3_600_000
V1 = "/_matrix/federation/v1"
REMOTE = "remote.example"

Client = TestClient[Any, Any]


@pytest.fixture
def remote() -> FakeServer:
    return FakeServer(REMOTE)


@pytest.fixture
async def client(make_client: MakeClient, remote: FakeServer) -> Client:
    client = await make_client(ROOMS_CONFIG)
    await client.app[HOMESERVER].keyring.store_keys(remote.key_rows(NOW_MS - HOUR, NOW_MS + HOUR))
    return client


async def fed(
    client: Client, remote: FakeServer, method: str, uri: str, body: Any = None
) -> tuple[int, Any]:
    """A request signed by ``remote``."""
    hs = client.app[HOMESERVER]
    headers = {"Authorization": remote.authorization(hs.server_name, method, uri, body)}
    data = None if body is None else orjson.dumps(body)
    response = await client.request(method, URL(uri, encoded=True), data=data, headers=headers)
    return response.status, await response.json()


async def user_with_keys(client: Client, localpart: str, one_time: int = 0) -> Device:
    user = await make_user(client, localpart, device_id="DEV1")
    device = Device(user.user_id, user.device_id, user.token)
    body: dict[str, Any] = {"device_keys": device.device_keys()}
    if one_time:
        body["one_time_keys"] = {
            f"signed_curve25519:K{n}": device.signed_key(f"otk{n}") for n in range(one_time)
        }
    await client.app[HOMESERVER].e2e_keys.upload_keys(Requester(user.user_id, "DEV1"), body)
    return device


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/query/profile?user_id=%40a%3Ab"),
        ("GET", "/query/directory?room_alias=%23a%3Ab"),
        ("GET", "/user/devices/%40a%3Ab"),
        ("POST", "/user/keys/query"),
        ("POST", "/user/keys/claim"),
        ("GET", "/publicRooms"),
        ("POST", "/publicRooms"),
        ("GET", "/hierarchy/%21r%3Ab"),
        ("GET", "/query/weather?city=here"),
    ],
)
async def test_queries_need_a_signed_request(client: Client, method: str, path: str) -> None:
    response = await client.request(method, URL(V1 + path, encoded=True), json={})
    assert response.status == 401
    assert (await response.json())["errcode"] == "M_UNAUTHORIZED"


# --- profile and directory ------------------------------------------------------------------


async def test_query_profile(client: Client, remote: FakeServer) -> None:
    alice = await make_user(client, "alice")
    await client_call(client, "PUT", f"/profile/{q(alice.user_id)}/displayname", alice, {"displayname": "Alice"})
    base = f"{V1}/query/profile?user_id={q(alice.user_id)}"
    assert await fed(client, remote, "GET", base) == (200, {"displayname": "Alice"})
    assert await fed(client, remote, "GET", base + "&field=displayname") == (
        200,
        {"displayname": "Alice"},
    )
    status, body = await fed(client, remote, "GET", base + "&field=avatar_url")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    for user_id in ("@nobody:" + alice.user_id.partition(":")[2], "@bob:" + REMOTE, "not-a-user"):
        status, body = await fed(client, remote, "GET", f"{V1}/query/profile?user_id={q(user_id)}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await fed(client, remote, "GET", f"{V1}/query/profile")
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_query_directory(client: Client, remote: FakeServer) -> None:
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, room_alias_name="lobby")
    server_name = client.app[HOMESERVER].server_name
    alias = f"#lobby:{server_name}"
    assert await fed(client, remote, "GET", f"{V1}/query/directory?room_alias={q(alias)}") == (
        200,
        {"room_id": room_id, "servers": [server_name]},
    )
    for unknown in (f"#nope:{server_name}", f"#lobby:{REMOTE}", "lobby"):
        status, body = await fed(client, remote, "GET", f"{V1}/query/directory?room_alias={q(unknown)}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_an_unknown_query_type_is_unrecognised(client: Client, remote: FakeServer) -> None:
    """The generic /query/{queryType}: types other than directory and profile
    are unknown to this server (404 M_UNRECOGNIZED, as Synapse answers)."""
    status, body = await fed(client, remote, "GET", f"{V1}/query/weather?city=here")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
    assert "weather" in body["error"]


# --- devices and keys --------------------------------------------------------------------------


async def test_user_devices_lists_devices_keys_and_cross_signing(
    client: Client, remote: FakeServer
) -> None:
    device = await user_with_keys(client, "alice")
    hs = client.app[HOMESERVER]
    await hs.accounts.login(device.user_id, device_id="BARE", initial_display_name="Phone", want_refresh=False, ip=None)
    signing = CrossSigning(device.user_id)
    upload = signing.upload_body()
    keys, _ = await hs.e2e_keys.parse_cross_signing_upload(device.user_id, upload)
    await hs.e2e_keys.store_cross_signing_keys(device.user_id, keys)
    status, body = await fed(client, remote, "GET", f"{V1}/user/devices/{q(device.user_id)}")
    assert status == 200
    assert body["user_id"] == device.user_id
    assert isinstance(body["stream_id"], int) and body["stream_id"] > 0
    assert body["devices"] == [
        # No display names over federation; a device without keys has none.
        {"device_id": "BARE"},
        {"device_id": "DEV1", "keys": device.device_keys() | {"unsigned": {}}},
    ]
    assert body["master_key"] == upload["master_key"]
    assert body["self_signing_key"] == upload["self_signing_key"]
    assert "user_signing_key" not in body
    # Nothing changed: the same stream_id again.
    assert (await fed(client, remote, "GET", f"{V1}/user/devices/{q(device.user_id)}"))[1] == body
    status, body = await fed(client, remote, "GET", f"{V1}/user/devices/{q('@bob:' + REMOTE)}")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_user_keys_query(client: Client, remote: FakeServer) -> None:
    device = await user_with_keys(client, "alice")
    query = {"device_keys": {device.user_id: [], "@bob:" + REMOTE: []}}
    status, body = await fed(client, remote, "POST", f"{V1}/user/keys/query", query)
    assert status == 200
    assert body["device_keys"] == {
        device.user_id: {"DEV1": device.device_keys() | {"unsigned": {}}}
    }
    assert body["master_keys"] == body["self_signing_keys"] == {}
    assert "user_signing_keys" not in body
    for bad, errcode in (({"device_keys": []}, "M_BAD_JSON"), ({"device_keys": {"x": []}}, "M_INVALID_PARAM"), ([], "M_BAD_JSON")):
        status, body = await fed(client, remote, "POST", f"{V1}/user/keys/query", bad)
        assert (status, body["errcode"]) == (400, errcode)


async def test_user_keys_claim_hands_out_each_key_once(client: Client, remote: FakeServer) -> None:
    device = await user_with_keys(client, "alice", one_time=2)
    claim = {"one_time_keys": {device.user_id: {"DEV1": "signed_curve25519"}}}
    seen = []
    for _ in range(3):
        status, body = await fed(client, remote, "POST", f"{V1}/user/keys/claim", claim)
        assert status == 200
        seen.append(body["one_time_keys"].get(device.user_id, {}).get("DEV1"))
    assert seen[0] == {"signed_curve25519:K0": device.signed_key("otk0")}
    assert seen[1] == {"signed_curve25519:K1": device.signed_key("otk1")}
    assert seen[2] is None  # none left, no fallback key


# --- public rooms, hierarchy, openid ------------------------------------------------------------


async def test_public_rooms(client: Client, remote: FakeServer) -> None:
    alice = await make_user(client, "alice")
    public = await create_room(client, alice, visibility="public", name="Lobby", topic="Chat here")
    await create_room(client, alice, name="Hidden")
    status, body = await fed(client, remote, "GET", f"{V1}/publicRooms")
    assert status == 200
    assert body == {
        "chunk": [
            {
                "room_id": public,
                "num_joined_members": 1,
                "world_readable": False,
                "guest_can_join": False,
                "join_rule": "public",
                "name": "Lobby",
                "topic": "Chat here",
            }
        ],
        "total_room_count_estimate": 1,
    }
    status, found = await fed(client, remote, "POST", f"{V1}/publicRooms", {"filter": {"generic_search_term": "chat"}})
    assert (status, [r["room_id"] for r in found["chunk"]]) == (200, [public])
    status, none = await fed(client, remote, "POST", f"{V1}/publicRooms", {"filter": {"generic_search_term": "zzz"}})
    assert (status, none["chunk"]) == (200, [])
    status, bad = await fed(client, remote, "GET", f"{V1}/publicRooms?since=nonsense")
    assert (status, bad["errcode"]) == (400, "M_INVALID_PARAM")


async def test_public_rooms_paginate(client: Client, remote: FakeServer) -> None:
    alice = await make_user(client, "alice")
    rooms = sorted([await create_room(client, alice, visibility="public") for _ in range(3)])
    status, first = await fed(client, remote, "GET", f"{V1}/publicRooms?limit=2")
    assert status == 200 and first["next_batch"] and "prev_batch" not in first
    status, second = await fed(client, remote, "GET", f"{V1}/publicRooms?limit=2&since={first['next_batch']}")
    assert status == 200 and "next_batch" not in second and second["prev_batch"]
    assert sorted(r["room_id"] for r in first["chunk"] + second["chunk"]) == rooms


async def test_hierarchy(client: Client, remote: FakeServer) -> None:
    alice = await make_user(client, "alice")
    space = await create_room(client, alice, preset="public_chat", creation_content={"type": "m.space"}, name="Space")
    child = await create_room(client, alice, preset="public_chat", name="Child")
    private = await create_room(client, alice, preset="private_chat")
    server_name = client.app[HOMESERVER].server_name
    for room in (child, private):
        status, _ = await put_state(client, alice, space, "m.space.child", room, {"via": [server_name]})
        assert status == 200
    status, body = await fed(client, remote, "GET", f"{V1}/hierarchy/{q(space)}")
    assert status == 200
    assert body["room"]["room_id"] == space and body["room"]["room_type"] == "m.space"
    assert sorted(c["state_key"] for c in body["room"]["children_state"]) == sorted([child, private])
    assert [c["room_id"] for c in body["children"]] == [child]
    assert body["inaccessible_children"] == [private]
    # A room the remote may not see, and one nobody knows: 404.
    for room_id in (private, "!unknown:" + server_name):
        status, body = await fed(client, remote, "GET", f"{V1}/hierarchy/{q(room_id)}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_openid_userinfo_knows_no_token(client: Client) -> None:
    response = await client.get(f"{V1}/openid/userinfo?access_token=abc")
    assert (response.status, (await response.json())["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    response = await client.get(f"{V1}/openid/userinfo")
    assert (response.status, (await response.json())["errcode"]) == (400, "M_MISSING_PARAM")


# --- the client side: other servers' users and aliases --------------------------------------------


class ScriptedFederation:
    """Stands for ``hs.federation_client``: answers by (destination, path)."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, str, Any, Any]] = []

    async def request_json(
        self, method: str, destination: str, path: str, *, query: Any = None, content: Any = None, headers: Any = None
    ) -> Any:
        self.calls.append((method, destination, path, query, content))
        answer = self.answers.get((destination, path))
        if answer is None:
            raise FederationUnreachable(destination, "unreachable")
        if isinstance(answer, Exception):
            raise answer
        return answer(query, content) if callable(answer) else answer

    async def close(self) -> None:
        pass


def script(client: Client, answers: dict[tuple[str, str], Any]) -> ScriptedFederation:
    hs = client.app[HOMESERVER]
    fake = ScriptedFederation(answers)
    hs.federation_client = fake
    return fake


async def test_client_keys_query_and_claim_for_remote_users(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob_id = "@bob:" + REMOTE
    bob = Device(bob_id, "BOBDEV", "unused")
    fake = script(
        client,
        {
            (REMOTE, V1 + "/user/keys/query"): {
                "device_keys": {
                    # Keys of a device under another device's name are left out,
                    # as are users nobody asked about.
                    bob_id: {"BOBDEV": bob.device_keys(), "OTHER": bob.device_keys()},
                    "@intruder:elsewhere": {},
                },
                "master_keys": {},
                "self_signing_keys": {},
            },
            (REMOTE, V1 + "/user/keys/claim"): {
                "one_time_keys": {bob_id: {"BOBDEV": {"signed_curve25519:A": bob.signed_key("k")}}}
            },
        },
    )
    status, body = await client_call(
        client, "POST", "/keys/query", alice, {"device_keys": {bob_id: [], "@carol:down.example": []}}
    )
    assert status == 200
    assert body["device_keys"] == {bob_id: {"BOBDEV": bob.device_keys()}}
    assert list(body["failures"]) == ["down.example"]
    assert body["failures"]["down.example"]["status"] == 503
    assert fake.calls[0][4] == {"device_keys": {bob_id: []}}
    status, body = await client_call(
        client, "POST", "/keys/claim", alice, {"one_time_keys": {bob_id: {"BOBDEV": "signed_curve25519"}}}
    )
    assert status == 200
    assert body == {
        "one_time_keys": {bob_id: {"BOBDEV": {"signed_curve25519:A": bob.signed_key("k")}}},
        "failures": {},
    }


async def test_client_profile_and_alias_of_another_server(client: Client) -> None:
    alice = await make_user(client, "alice")
    bob_id = "@bob:" + REMOTE
    script(
        client,
        {
            (REMOTE, V1 + "/query/profile"): {"displayname": "Bob", "avatar_url": "mxc://r/a"},
            (REMOTE, V1 + "/query/directory"): lambda query, _: (
                {"room_id": "!room:" + REMOTE, "servers": [REMOTE]}
                if query["room_alias"] == "#lobby:" + REMOTE
                else _missing()
            ),
        },
    )
    assert await client_call(client, "GET", f"/profile/{q(bob_id)}", alice) == (
        200,
        {"displayname": "Bob", "avatar_url": "mxc://r/a"},
    )
    assert await client_call(client, "GET", f"/profile/{q(bob_id)}/displayname", alice) == (
        200,
        {"displayname": "Bob"},
    )
    assert await client_call(client, "GET", f"/directory/room/{q('#lobby:' + REMOTE)}") == (
        200,
        {"room_id": "!room:" + REMOTE, "servers": [REMOTE]},
    )
    status, body = await client_call(client, "GET", f"/directory/room/{q('#other:' + REMOTE)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # An unreachable server: 404, the only error profile.yaml lists.
    status, body = await client_call(client, "GET", f"/profile/{q('@x:down.example')}", alice)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert "could not be reached" in body["error"]


def _missing() -> Any:
    raise FederationResponseError(REMOTE, 404, {"errcode": "M_NOT_FOUND", "error": "no"})
