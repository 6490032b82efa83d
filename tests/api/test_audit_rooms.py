"""Regression tests from the client-server core audit: query-parameter bounds,
``/members?at`` visibility, the ``/messages`` filter limit, every room event
filter field through /sync and /messages, guest access, typing expiry on the
real clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    V3,
    Client,
    User,
    call,
    create_room,
    hs_of,
    join,
    make_user,
    put_state,
    q,
    send,
)
from tests.api.sync_support import (  # noqa: F401  (fixture)
    MakeSyncClient,
    bodies,
    get,
    make_sync_client_fixture,
    messages,
    sync,
)

TS = "/_matrix/client/v1/rooms/{}/timestamp_to_event"


async def text(client: Client, user: User, room_id: str, body: str, **extra: Any) -> str:
    content = {"msgtype": "m.text", "body": body, **extra}
    status, payload = await send(client, user, room_id, content, body)
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def make_guest(client: Client) -> User:
    user_id, session = await hs_of(client).accounts.register(None, None, is_guest=True)
    assert session is not None
    return User(user_id, session.device_id, session.access_token)


def members_of(chunk: list[dict[str, Any]]) -> dict[str, str]:
    return {e["state_key"]: e["content"]["membership"] for e in chunk}


# --- integer query parameters ------------------------------------------------------------


async def test_integer_query_parameters_out_of_range_are_400_not_500(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    path = TS.format(q(room_id))
    # Beyond a 64-bit column: used to reach the database and fail with a 500.
    for ts in (str(2**63), "1" + "0" * 30, "9" * 31):
        status, body = await get(client, path, alice, ts=ts, dir="b")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), ts
    # The largest storable timestamp is fine: the newest event is before it.
    status, body = await get(client, path, alice, ts=str(2**63 - 1), dir="b")
    assert status == 200 and body["event_id"].startswith("$")
    # Only ASCII digits: int() would take "١٢", " 12", "1_0" and "12\n".
    for ts in ("١٢", " 12", "1_0", "12\n", "+5", "1.5", ""):
        status, body = await get(client, path, alice, ts=ts, dir="f")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), repr(ts)
    for limit in ("١", "1e3", "0x10"):
        status, body = await messages(client, alice, room_id, dir="b", limit=limit)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), limit
        status, body = await get(client, V3 + "/sync", alice, timeout=limit)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), limit


# --- /members?at --------------------------------------------------------------------------


async def test_members_at_bad_tokens_are_400_not_500(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice)
    path = f"{V3}/rooms/{q(room_id)}/members"
    for at in ("zz", "t" + "9" * 30, "s" + "9" * 30, "s1_2", "t--1", "t-", "t"):
        status, body = await get(client, path, alice, at=at)
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), at
    # A negative position is a valid token (backfilled history sorts below 0,
    # ranvier/storage/events.py); this room has no event there.
    status, body = await get(client, path, alice, at="t-1")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_members_at_shows_the_membership_list_at_the_token(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    before_bob = (await sync(client, alice))["next_batch"]
    await join(client, bob, room_id)
    path = f"{V3}/rooms/{q(room_id)}/members"
    status, body = await get(client, path, bob, at=before_bob)
    assert status == 200, body
    # shared history: Bob, now joined, sees the room before he came in.
    assert members_of(body["chunk"]) == {alice.user_id: "join"}
    status, body = await get(client, path, bob)
    assert members_of(body["chunk"]) == {alice.user_id: "join", bob.user_id: "join"}


async def test_members_at_respects_history_visibility(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {
                "type": "m.room.history_visibility",
                "state_key": "",
                "content": {"history_visibility": "joined"},
            }
        ],
    )
    await join(client, carol, room_id)
    before_bob = (await sync(client, alice))["next_batch"]
    await join(client, bob, room_id)
    path = f"{V3}/rooms/{q(room_id)}/members"
    # Before Bob joined a "joined" room: not his to see (it used to answer 200
    # with the member list of that time).
    status, body = await get(client, path, bob, at=before_bob)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Alice was there.
    status, body = await get(client, path, alice, at=before_bob)
    assert status == 200
    assert members_of(body["chunk"]) == {alice.user_id: "join", carol.user_id: "join"}


async def test_members_at_after_leaving_stops_at_the_leave(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    carol = await make_user(client, "carol")
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    assert (await call(client, "POST", f"/rooms/{q(room_id)}/leave", bob, {}))[0] == 200
    await join(client, carol, room_id)
    now = (await sync(client, alice))["next_batch"]
    status, body = await get(client, f"{V3}/rooms/{q(room_id)}/members", bob, at=now)
    assert status == 200, body
    # Carol joined after Bob left: Bob does not learn of her.
    assert members_of(body["chunk"]) == {alice.user_id: "join", bob.user_id: "leave"}


# --- room event filters: every field, through /sync and /messages --------------------------


async def _filter_room(client: Client) -> tuple[User, User, str, str]:
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    other_room = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    await text(client, alice, room_id, "a1")
    await text(client, bob, room_id, "b1")
    await text(client, alice, room_id, "img", msgtype="m.image", url="mxc://localhost/x")
    await text(client, alice, other_room, "o1")
    return alice, bob, room_id, other_room


async def test_sync_applies_every_timeline_filter_field(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id, other_room = await _filter_room(client)

    async def timelines(timeline_filter: dict[str, Any]) -> dict[str, list[str]]:
        body = await sync(client, alice, filter={"room": {"timeline": timeline_filter}})
        return {
            room: bodies(data["timeline"]["events"]) for room, data in body["rooms"]["join"].items()
        }

    assert await timelines({"not_senders": [bob.user_id]}) == {
        room_id: ["a1", "img"],
        other_room: ["o1"],
    }
    assert await timelines({"senders": [bob.user_id]}) == {room_id: ["b1"], other_room: []}
    assert await timelines({"contains_url": True}) == {room_id: ["img"], other_room: []}
    assert await timelines({"contains_url": False}) == {room_id: ["a1", "b1"], other_room: ["o1"]}
    assert (await timelines({"rooms": [other_room]}))[room_id] == []
    assert (await timelines({"not_rooms": [other_room]}))[other_room] == []
    assert await timelines({"types": ["m.room.message"], "limit": 2}) == {
        room_id: ["b1", "img"],
        other_room: ["o1"],
    }
    body = await sync(client, alice, filter={"room": {"timeline": {"limit": 1}}})
    timeline = body["rooms"]["join"][room_id]["timeline"]
    assert (bodies(timeline["events"]), timeline["limited"]) == (["img"], True)
    # Room-level rooms / not_rooms drop whole rooms.
    body = await sync(client, alice, filter={"room": {"rooms": [other_room]}})
    assert list(body["rooms"]["join"]) == [other_room]
    body = await sync(client, alice, filter={"room": {"not_rooms": [other_room]}})
    assert list(body["rooms"]["join"]) == [room_id]


async def test_messages_applies_every_filter_field(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice, bob, room_id, other_room = await _filter_room(client)

    async def page(event_filter: dict[str, Any], **params: Any) -> list[str]:
        status, body = await messages(client, alice, room_id, dir="b", filter=event_filter, **params)
        assert status == 200, body
        return bodies(body["chunk"])

    assert await page({"not_senders": [bob.user_id]}) == ["img", "a1"]
    assert await page({"senders": [bob.user_id]}) == ["b1"]
    assert await page({"contains_url": True}) == ["img"]
    assert await page({"contains_url": False}) == ["b1", "a1"]
    assert await page({"rooms": [other_room]}) == []
    assert await page({"not_rooms": [room_id]}) == []
    assert await page({"rooms": [room_id], "types": ["m.room.message"]}) == ["img", "b1", "a1"]
    status, body = await messages(
        client, alice, room_id, dir="b",
        filter={"types": ["m.room.*"], "not_types": ["m.room.member", "m.room.message"]},
    )
    types = {e["type"] for e in body["chunk"]}
    assert status == 200 and "m.room.create" in types
    assert not types & {"m.room.member", "m.room.message"}
    # The filter's own limit bounds the page (it used to be ignored).
    status, body = await messages(client, alice, room_id, dir="b", filter={"limit": 2})
    assert status == 200 and len(body["chunk"]) == 2 and "end" in body
    assert bodies(body["chunk"]) == ["img", "b1"]
    # The smaller of the two limits wins.
    assert await page({"limit": 5, "types": ["m.room.message"]}, limit=1) == ["img"]
    assert await page({"limit": 1, "types": ["m.room.message"]}, limit=5) == ["img"]


# --- guests ---------------------------------------------------------------------------------


async def test_guests_read_and_send_where_the_spec_allows(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    guest = await make_guest(client)
    room_id = await create_room(client, alice, preset="public_chat", name="Open")
    await put_state(client, alice, room_id, "m.room.guest_access", "", {"guest_access": "can_join"})
    event_id = await text(client, alice, room_id, "hello guest")
    assert (await join(client, guest, room_id))[0] == 200
    # "Guest Access", Client behaviour: reading.
    status, state = await call(client, "GET", f"/rooms/{q(room_id)}/state", guest)
    assert status == 200 and any(e["type"] == "m.room.name" for e in state)
    assert await call(client, "GET", f"/rooms/{q(room_id)}/state/m.room.name", guest) == (
        200,
        {"name": "Open"},
    )
    status, event = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(event_id)}", guest)
    assert (status, event["content"]["body"]) == (200, "hello guest")
    status, members = await call(client, "GET", f"/rooms/{q(room_id)}/members", guest)
    assert status == 200
    assert members_of(members["chunk"]) == {alice.user_id: "join", guest.user_id: "join"}
    # Sending any event type, and state (v1.2).
    status, sent = await send(client, guest, room_id, {"msgtype": "m.text", "body": "hi"}, "g1")
    assert status == 200 and sent["event_id"].startswith("$")
    status, _ = await send(client, guest, room_id, {"x": 1}, "g2", "org.example.custom")
    assert status == 200
    # Guests have power 0: the auth rules, not the guest check, refuse a topic.
    status, body = await put_state(client, guest, room_id, "m.room.topic", "", {"topic": "t"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # Account maintenance: the display name only.
    profile = f"/profile/{q(guest.user_id)}"
    status, _ = await call(client, "PUT", profile + "/displayname", guest, {"displayname": "G"})
    assert status == 200
    assert await call(client, "GET", profile + "/displayname") == (200, {"displayname": "G"})
    status, body = await call(client, "PUT", profile + "/avatar_url", guest, {"avatar_url": "mxc://a/b"})
    assert (status, body["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    status, body = await call(client, "DELETE", profile + "/avatar_url", guest)
    assert (status, body["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    assert (await call(client, "DELETE", profile + "/displayname", guest))[0] == 200
    # Still closed to guests.
    for method, path, body in (
        ("POST", "/createRoom", {}),
        ("GET", f"/rooms/{q(room_id)}/joined_members", None),
        ("PUT", f"/rooms/{q(room_id)}/redact/{q(event_id)}/r1", {}),
    ):
        status, payload = await call(client, method, path, guest, body)
        assert (status, payload["errcode"]) == (403, "M_GUEST_ACCESS_FORBIDDEN"), path


async def test_guests_leave_when_guest_access_is_revoked(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    guest = await make_guest(client)
    room_id = await create_room(client, alice, preset="public_chat")
    await put_state(client, alice, room_id, "m.room.guest_access", "", {"guest_access": "can_join"})
    assert (await join(client, guest, room_id))[0] == 200
    assert (await join(client, bob, room_id))[0] == 200
    status, _ = await put_state(
        client, alice, room_id, "m.room.guest_access", "", {"guest_access": "forbidden"}
    )
    assert status == 200
    # "the server MUST set those users' m.room.member state to leave": only the guest's.
    rooms = hs_of(client).rooms
    assert await rooms.get_membership(room_id, guest.user_id) == "leave"
    assert await rooms.get_membership(room_id, bob.user_id) == "join"
    status, body = await join(client, guest, room_id)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


# --- typing expires on the real clock, without further requests ----------------------------


async def test_typing_expires_by_itself_and_wakes_the_long_poll(
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey
) -> None:
    config = parse_config(dict(ROOMS_CONFIG), tmp_path, env={})
    app = build_app(config, signing_key=signing_key)  # the wall clock, as in production
    client: TestClient[Any, Any] = await aiohttp_client(app)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice, preset="public_chat")
    await join(client, bob, room_id)
    since = (await sync(client, bob))["next_batch"]
    status, _ = await call(
        client, "PUT", f"/rooms/{q(room_id)}/typing/{q(alice.user_id)}", alice,
        {"typing": True, "timeout": 300},
    )
    assert status == 200
    body = await sync(client, bob, since=since)
    typing = body["rooms"]["join"][room_id]["ephemeral"]["events"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": [alice.user_id]}}]
    # Nobody calls anything: the long-poll returns when the timeout runs out.
    started = time.monotonic()
    body = await sync(client, bob, since=body["next_batch"], timeout=10_000)
    elapsed = time.monotonic() - started
    typing = body["rooms"]["join"][room_id]["ephemeral"]["events"]
    assert typing == [{"type": "m.typing", "content": {"user_ids": []}}]
    assert 0.1 < elapsed < 5, elapsed
    await asyncio.sleep(0)


async def test_huge_filter_limits_are_capped_not_500(make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, preset="public_chat")
    await text(client, alice, room_id, "only")
    for limit in (2**63, 10**20):
        huge = {"limit": limit}
        for sync_filter in (
            {"room": {"timeline": huge}},
            {"room": {"include_leave": True, "timeline": huge}},
        ):
            status, body = await get(client, V3 + "/sync", alice, filter=sync_filter)
            assert status == 200, body
            timeline = body["rooms"]["join"][room_id]["timeline"]
            assert bodies(timeline["events"]) == ["only"] and timeline["limited"] is False
        status, body = await messages(client, alice, room_id, dir="b", filter=huge)
        assert status == 200 and bodies(body["chunk"]) == ["only"]


async def test_history_endpoints_answer_404_for_an_unknown_room(
    make_sync_client: MakeSyncClient,
) -> None:
    client = await make_sync_client()
    alice = await make_user(client, "alice")
    unknown = "!unknown:localhost"
    event_id = "$" + "a" * 43
    for path, params in (
        (f"{V3}/rooms/{q(unknown)}/messages", {"dir": "b"}),
        (f"{V3}/rooms/{q(unknown)}/context/{q(event_id)}", {}),
        (TS.format(q(unknown)), {"ts": 0, "dir": "f"}),
        (f"{V3}/rooms/{q(unknown)}/members", {}),
        (f"{V3}/rooms/{q(unknown)}/state", {}),
        (f"{V3}/rooms/{q(unknown)}/event/{q(event_id)}", {}),
    ):
        status, body = await get(client, path, alice, **params)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), path
