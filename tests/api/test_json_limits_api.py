"""Issue 9, defects 1-3, as an attacker sends them, on both engines.

1. JSON nested deeper than MAX_JSON_DEPTH is refused (400 ``M_BAD_JSON``) on
   every endpoint, and data stored deeper by older versions is left out of
   /sync, /messages, /state and /context instead of failing them.
2. The user-data endpoints that answered 500 to nested input answer 400.
3. NUL (U+0000) in identifiers is 400 ``M_INVALID_PARAM`` on both engines;
   NUL inside JSON content is stored and served back as sent.

After each attack every user's /sync, /messages, /event and /state answer 200.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from ranvier.api import http
from ranvier.api.http import MatrixError, json_items_response, json_response
from ranvier.core.input_limits import MAX_JSON_DEPTH
from ranvier.services.rooms import EventSpec
from tests.api.conftest import Clock
from tests.api.json_limits_support import nested, nested_value, raw
from tests.api.rooms_support import V3, Client, User, create_room, hs_of, make_user, q, send
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    get,
    make_sync_client_fixture,
    sync,
)

ATTACK_DEPTHS = (MAX_JSON_DEPTH + 1, 248, 250, 254, 255, 1_000, 1_025, 5_000)


async def setup_room(client: Client) -> tuple[list[User], str, str]:
    """alice, bob and charlie in a room with one message; (users, room ID, its event ID)."""
    users = [await make_user(client, name) for name in ("alice", "bob", "charlie")]
    room_id = await create_room(client, users[0], preset="public_chat")
    for user in users[1:]:
        status, body = await raw(client, "POST", f"/rooms/{q(room_id)}/join", user, b"{}")
        assert status == 200, body
    status, body = await send(client, users[0], room_id, {"msgtype": "m.text", "body": "hi"}, "t0")
    assert status == 200, body
    return users, room_id, body["event_id"]


async def assert_everyone_reads(
    client: Client, users: list[User], room_id: str, event_id: str
) -> None:
    """Every user's /sync, /messages, /event and /state answer 200."""
    for user in users:
        await sync(client, user)
        room = f"{V3}/rooms/{q(room_id)}"
        for path, params in (
            (f"{room}/messages", {"dir": "b"}),
            (f"{room}/event/{q(event_id)}", {}),
            (f"{room}/state", {}),
        ):
            status, body = await get(client, path, user, **params)
            assert status == 200, (user.user_id, path, body)


async def test_deep_invite_cannot_break_the_invitees_sync(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    alice = users[0]
    victim = await make_user(client, "victim")
    status, _ = await raw(client, "POST", f"/rooms/{q(room_id)}/join", victim, b"{}")
    assert status == 200
    for depth in ATTACK_DEPTHS:
        # The repro: creation_content nested, the victim invited.
        body = (
            b'{"invite":["@victim:localhost"],"creation_content":{"x":' + nested(depth - 2) + b"}}"
        )
        status, answer = await raw(client, "POST", "/createRoom", alice, body)
        assert (status, answer["errcode"]) == (400, "M_BAD_JSON"), depth
    assert (await sync(client, victim))["rooms"]["invite"] == {}  # nothing half-created
    await assert_everyone_reads(client, [*users, victim], room_id, event_id)
    # The deepest accepted body still works end to end.
    body = (
        b'{"invite":["@victim:localhost"],"creation_content":{"x":'
        + nested(MAX_JSON_DEPTH - 2)
        + b"}}"
    )
    status, answer = await raw(client, "POST", "/createRoom", alice, body)
    assert status == 200, answer
    assert list((await sync(client, victim))["rooms"]["invite"]) == [answer["room_id"]]
    await assert_everyone_reads(client, [*users, victim], room_id, event_id)


async def test_deep_events_are_refused_and_the_deepest_allowed_round_trips(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    alice = users[0]
    room = f"/rooms/{q(room_id)}"
    for depth in ATTACK_DEPTHS:
        for path in (f"{room}/send/m.room.message/deep{depth}", f"{room}/state/m.deep/{depth}"):
            status, answer = await raw(client, "PUT", path, alice, nested(depth))
            assert (status, answer["errcode"]) == (400, "M_BAD_JSON"), (path, depth)
    await assert_everyone_reads(client, users, room_id, event_id)
    status, answer = await raw(
        client, "PUT", f"{room}/send/m.room.message/ok", alice, nested(MAX_JSON_DEPTH)
    )
    assert status == 200, answer
    status, event = await get(client, f"{V3}{room}/event/{q(answer['event_id'])}", users[1])
    assert status == 200 and event["content"] == nested_value(MAX_JSON_DEPTH)
    timeline = (await sync(client, users[2]))["rooms"]["join"][room_id]["timeline"]["events"]
    assert timeline[-1]["content"] == nested_value(MAX_JSON_DEPTH)


async def test_nested_user_data_is_400_not_500(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    alice, bob = users[0], users[1]
    me = q(alice.user_id)

    def bodies(depth: int) -> list[tuple[str, bytes]]:
        return [
            (f"/user/{me}/filter", b'{"room":{"x":' + nested(depth - 2) + b"}}"),
            (
                f"/sendToDevice/m.test/deep{depth}",
                b'{"messages":{"%s":{"*":' % bob.user_id.encode() + nested(depth - 3) + b"}}}",
            ),
            (f"/profile/{me}/displayname", b'{"displayname":' + nested(depth - 1) + b"}"),
            (f"/profile/{me}/m.custom", b'{"m.custom":' + nested(depth - 1) + b"}"),
            (f"/user/{me}/account_data/m.deep", nested(depth)),
            (f"/user/{me}/rooms/{q(room_id)}/account_data/m.deep", nested(depth)),
            (f"/presence/{me}/status", b'{"presence":"online","x":' + nested(depth - 1) + b"}"),
        ]

    for depth in ATTACK_DEPTHS:
        for path, body in bodies(depth):
            method = "POST" if path.endswith("/filter") else "PUT"
            status, answer = await raw(client, method, path, alice, body)
            assert (status, answer["errcode"]) == (400, "M_BAD_JSON"), (path, depth)
    # Nothing was stored, and everyone still syncs.
    status, _ = await get(client, f"{V3}/user/{me}/account_data/m.deep", alice)
    assert status == 404
    assert (await sync(client, bob))["to_device"]["events"] == []
    await assert_everyone_reads(client, users, room_id, event_id)
    # At exactly the limit, account data is accepted and served back.
    status, _ = await raw(
        client, "PUT", f"/user/{me}/account_data/m.deep", alice, nested(MAX_JSON_DEPTH)
    )
    assert status == 200
    events = (await sync(client, alice))["account_data"]["events"]
    assert {"type": "m.deep", "content": nested_value(MAX_JSON_DEPTH)} in events


async def test_deep_inline_filters_are_400(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    """JSON also enters through the ``filter`` query parameter of /sync and /messages
    (depths whose URL fits aiohttp's 8 KiB request line)."""
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    for depth in (MAX_JSON_DEPTH + 1, 250, 254):
        deep_filter = (b'{"room":{"timeline":{"x":' + nested(depth - 3) + b"}}}").decode()
        for path in (f"{V3}/sync", f"{V3}/rooms/{q(room_id)}/messages"):
            response = await client.get(
                path, params={"filter": deep_filter, "dir": "b"}, headers=users[0].headers
            )
            answer = await response.json()
            assert (response.status, answer["errcode"]) == (400, "M_BAD_JSON"), (path, depth)
    await assert_everyone_reads(client, users, room_id, event_id)


async def test_data_stored_too_deep_by_older_versions_is_left_out(
    make_sync_client: MakeSyncClient, migrated_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Older versions accepted any depth: such items are left out and logged."""
    client = await make_sync_client(migrated_dsn)
    users, room_id, good_id = await setup_room(client)
    alice, bob = users[0], users[1]
    hs = hs_of(client)
    # orjson encodes 254 levels at most; older versions stored up to ~1,000.
    too_deep = nested_value(900)
    # Written through the services, below the HTTP limit, as older versions did.
    deep_message = await hs.rooms.send_event(alice.user_id, room_id, EventSpec("m.x", too_deep))
    deep_state = await hs.rooms.send_state_event(alice.user_id, room_id, "m.deep", "", too_deep)
    for data_room in (None, room_id):  # account data straight through the store
        await hs.account_data.store.put(alice.user_id, data_room, "m.deep", nested(1_000).decode())
    await hs.account_data.set_account_data(alice.user_id, None, "m.fine", {"ok": True})
    status, after = await send(client, bob, room_id, {"msgtype": "m.text", "body": "after"}, "t1")
    assert status == 200

    with caplog.at_level(logging.WARNING, logger="ranvier.api.http"):
        for user in users:
            body = await sync(client, user)
            joined = body["rooms"]["join"][room_id]
            served = {
                e["event_id"] for e in joined["timeline"]["events"] + joined["state"]["events"]
            }
            assert {good_id, after["event_id"]} <= served or user is not alice
            assert not served & {deep_message.event_id, deep_state}
        body = await sync(client, alice)
        assert [e["type"] for e in body["account_data"]["events"]].count("m.deep") == 0
        assert {"type": "m.fine", "content": {"ok": True}} in body["account_data"]["events"]
        assert body["rooms"]["join"][room_id]["account_data"]["events"] == []
        await assert_everyone_reads(client, users, room_id, good_id)
        room = f"{V3}/rooms/{q(room_id)}"
        status, page = await get(client, f"{room}/messages", bob, dir="b", limit=50)
        ids = [e["event_id"] for e in page["chunk"]]
        assert status == 200 and good_id in ids and deep_message.event_id not in ids
        status, state = await get(client, f"{room}/state", bob)
        assert status == 200 and deep_state not in [e["event_id"] for e in state]
        status, context = await get(client, f"{room}/context/{q(good_id)}", bob, limit=50)
        assert status == 200 and context["event"]["event_id"] == good_id
        assert deep_message.event_id not in [e["event_id"] for e in context["events_after"]]
        for path in (f"{room}/event/{q(deep_message.event_id)}", f"{room}/state/m.deep/"):
            status, answer = await get(client, path, bob)
            assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), path
    assert any("Left out of the response" in r.getMessage() for r in caplog.records)


async def test_invite_stored_too_deep_by_an_older_version_stays_visible(
    make_sync_client: MakeSyncClient, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's repro as an older version stored it: the invitee still syncs,
    sees the invite without the unservable create event, and can reject it."""
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    victim = await make_user(client, "victim")
    body = b'{"invite":["@victim:localhost"],"creation_content":{"x":' + nested(300) + b"}}"
    with monkeypatch.context() as older_version:  # no depth limit on input
        older_version.setattr(http, "exceeds_depth", lambda value, limit: False)
        status, created = await raw(client, "POST", "/createRoom", users[0], body)
    assert status == 200, created
    invite = (await sync(client, victim))["rooms"]["invite"][created["room_id"]]
    stripped = {(e["type"], e["state_key"]) for e in invite["invite_state"]["events"]}
    assert ("m.room.member", victim.user_id) in stripped
    assert ("m.room.create", "") not in stripped
    status, _ = await raw(client, "POST", f"/rooms/{q(created['room_id'])}/leave", victim, b"{}")
    assert status == 200
    assert (await sync(client, victim))["rooms"]["invite"] == {}
    await assert_everyone_reads(client, users, room_id, event_id)


# --- NUL ---------------------------------------------------------------------------


async def test_nul_in_identifiers_is_400_on_both_engines(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    users, room_id, event_id = await setup_room(client)
    alice, bob = users[0], users[1]
    await hs_of(client).accounts.register("pat", "secret-pw")
    me = q(alice.user_id)
    room = f"/rooms/{q(room_id)}"
    attacks: list[tuple[str, str, User | None, Any]] = [
        ("PUT", f"{room}/state/m.room.topic/%00", alice, {"topic": "x"}),
        ("PUT", f"{room}/state/a%00b/", alice, {"x": 1}),
        ("PUT", f"{room}/send/a%00b/t1", alice, {"body": "x"}),
        ("PUT", f"{room}/send/m.room.message/t%00", alice, {"body": "x"}),
        ("PUT", f"/user/{me}/account_data/a%00b", alice, {"x": 1}),
        ("PUT", f"/user/{me}/rooms/{q(room_id)}/account_data/a%00b", alice, {"x": 1}),
        ("PUT", f"/directory/room/{q('#a' + chr(0) + 'b:localhost')}", alice, {"room_id": room_id}),
        ("PUT", "/sendToDevice/m.test/a%00b", alice, {"messages": {}}),
        (
            "PUT",
            "/sendToDevice/m.test/t2",
            alice,
            {"messages": {bob.user_id: {"a\x00b": {"x": 1}}}},
        ),
        ("POST", f"{room}/receipt/m.read/{q(event_id)}", alice, {"thread_id": "a\x00b"}),
        (
            "POST",
            "/createRoom",
            alice,
            {"initial_state": [{"type": "m.x", "state_key": "\x00", "content": {}}]},
        ),
        ("POST", "/createRoom", alice, {"initial_state": [{"type": "a\x00b", "content": {}}]}),
        ("GET", "/sync?access_token=a%00b", None, None),
        # Free text stored as plain text, not JSON: refused alike on both engines.
        ("PUT", f"/presence/{me}/status", alice, {"presence": "online", "status_msg": "a\x00b"}),
        ("PUT", f"/devices/{q(alice.device_id)}", alice, {"display_name": "a\x00b"}),
        (
            "POST",
            "/login",
            None,
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "pat"},
                "password": "secret-pw",
                "initial_device_display_name": "a\x00b",
            },
        ),
        (
            "POST",
            "/login",
            None,
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "a\x00b"},
                "password": "x",
            },
        ),
        ("POST", "/login", None, {"type": "m.login.password", "user": "a\x00b", "password": "x"}),
        (
            "POST",
            "/login",
            None,
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "pat"},
                "password": "secret-pw",
                "device_id": "a\x00b",
            },
        ),
    ]
    rooms_before = await joined_rooms(client, alice)
    pat_devices = await hs_of(client).accounts.get_devices("@pat:localhost")
    for method, path, user, body in attacks:
        data = None if body is None else orjson.dumps(body)
        status, answer = await raw(client, method, path, user, data or b"")
        assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM"), (method, path, answer)
    assert await joined_rooms(client, alice) == rooms_before  # no half-created room
    status, presence = await get(client, f"{V3}/presence/{me}/status", alice)
    assert status == 200 and "status_msg" not in presence
    status, device = await get(client, f"{V3}/devices/{q(alice.device_id)}", alice)
    assert status == 200 and device.get("display_name") is None
    # No login half-done: pat has no new device.
    assert await hs_of(client).accounts.get_devices("@pat:localhost") == pat_devices
    assert (await sync(client, bob))["to_device"]["events"] == []
    await assert_everyone_reads(client, users, room_id, event_id)


async def joined_rooms(client: Client, user: User) -> list[str]:
    status, body = await get(client, f"{V3}/joined_rooms", user)
    assert status == 200
    rooms: list[str] = body["joined_rooms"]
    return sorted(rooms)


async def test_nul_in_json_content_round_trips_on_both_engines(
    make_sync_client: MakeSyncClient, migrated_dsn: str, clock: Clock
) -> None:
    client = await make_sync_client(migrated_dsn)
    users, room_id, _ = await setup_room(client)
    alice, bob = users[0], users[1]
    me = q(alice.user_id)
    text = "a\x00b\x00"
    content = {"msgtype": "m.text", "body": text, text: [text]}
    status, sent = await send(client, alice, room_id, content, "nul")
    assert status == 200, sent
    status, state = await raw(
        client,
        "PUT",
        f"/rooms/{q(room_id)}/state/m.room.topic/",
        alice,
        orjson.dumps({"topic": text}),
    )
    assert status == 200, state
    for path, body in (
        (f"/user/{me}/account_data/m.nul", {"v": text}),
        (f"/profile/{me}/displayname", {"displayname": text}),
    ):
        status, answer = await raw(client, "PUT", path, alice, orjson.dumps(body))
        assert status == 200, (path, answer)

    status, event = await get(client, f"{V3}/rooms/{q(room_id)}/event/{q(sent['event_id'])}", bob)
    assert status == 200 and event["content"] == content
    timeline = (await sync(client, bob))["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"] for e in timeline if e["event_id"] == sent["event_id"]] == [content]
    status, topic = await get(client, f"{V3}/rooms/{q(room_id)}/state/m.room.topic", bob)
    assert status == 200 and topic == {"topic": text}
    status, data = await get(client, f"{V3}/user/{me}/account_data/m.nul", alice)
    assert status == 200 and data == {"v": text}
    status, name = await get(client, f"{V3}/profile/{me}/displayname", bob)
    assert status == 200 and name == {"displayname": text}


def test_items_are_left_out_whole_never_altered() -> None:
    """An event whose content has a list with a too-deep element is left out
    whole; a good event and the wrappers around both stay as they were."""
    deep_list_content = {"x": [1, nested_value(300)]}
    good = {"type": "m.a", "content": {"x": [1, 2]}}
    body = {
        "rooms": {
            "join": {
                "!r:x": {
                    "timeline": {
                        "events": [good, {"type": "m.b", "content": deep_list_content}],
                        "limited": False,
                    }
                }
            }
        },
        "account_data": {"events": [{"type": "m.c", "content": nested_value(300)}]},
        "next_batch": "s1",
    }
    answer = orjson.loads(json_items_response(body).body)  # type: ignore[arg-type]
    assert answer == {
        "rooms": {"join": {"!r:x": {"timeline": {"events": [good], "limited": False}}}},
        "account_data": {"events": []},
        "next_batch": "s1",
    }
    with pytest.raises(MatrixError) as raised:  # a single item that cannot be served
        json_response({"type": "m.b", "content": deep_list_content})
    assert (raised.value.status, raised.value.errcode) == (404, "M_NOT_FOUND")
