"""PUT /rooms/{roomId}/typing/{userId} and the typing /sync provider."""

from __future__ import annotations

import asyncio

from tests.api.conftest import NOW_MS, MakeClient
from tests.api.user_data_fakes import FakeClock, auth, fake_client, user

ROOM = "!room:localhost"
ALICE, BOB = user("alice"), user("bob")


def url(room: str = ROOM, who: str = ALICE) -> str:
    return f"/_matrix/client/v3/rooms/{room}/typing/{who}"


async def test_start_and_stop(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    bob_version = hs.notifier.version(BOB)
    response = await client.put(
        url(), json={"typing": True, "timeout": 30000}, headers=auth("alice")
    )
    assert response.status == 200
    assert await response.json() == {}
    assert hs.typing.typing_user_ids(ROOM) == [ALICE]
    assert hs.notifier.version(BOB) == bob_version + 1
    assert hs.typing.current_position() == 1

    changes = await hs.typing.changes_for_user(BOB, 0, 1)
    assert changes == {ROOM: {"type": "m.typing", "content": {"user_ids": [ALICE]}}}

    # Typing again only moves the expiry: no change a client sees.
    await client.put(url(), json={"typing": True, "timeout": 30000}, headers=auth("alice"))
    assert hs.typing.current_position() == 1

    response = await client.put(url(), json={"typing": False}, headers=auth("alice"))
    assert response.status == 200
    assert hs.typing.typing_user_ids(ROOM) == []
    assert hs.typing.current_position() == 2
    assert await hs.typing.changes_for_user(BOB, 1, 2) == {
        ROOM: {"type": "m.typing", "content": {"user_ids": []}}
    }
    # Initial sync: rooms where nobody types are left out.
    assert await hs.typing.changes_for_user(BOB, 0, 2) == {}
    assert await hs.typing.changes_for_user(BOB, 2, 2) == {}
    # Stopping when not typing changes nothing.
    await client.put(url(), json={"typing": False}, headers=auth("alice"))
    assert hs.typing.current_position() == 2


async def test_timeout_expires_on_read(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    rooms.join(ROOM, ALICE, BOB)
    await client.put(url(), json={"typing": True, "timeout": 5000}, headers=auth("alice"))
    clock.now_ms += 4999
    assert hs.typing.typing_user_ids(ROOM) == [ALICE]
    clock.now_ms += 1
    bob_version = hs.notifier.version(BOB)
    assert hs.typing.current_position() == 2
    assert hs.typing.typing_user_ids(ROOM) == []
    assert await hs.typing.changes_for_user(BOB, 1, 2) == {
        ROOM: {"type": "m.typing", "content": {"user_ids": []}}
    }
    await asyncio.sleep(0)  # the expiry wakes the room's members
    await asyncio.sleep(0)
    assert hs.notifier.version(BOB) > bob_version


async def test_timeout_expires_by_timer(make_client: MakeClient) -> None:
    """No further request: the timer removes the user and wakes waiting syncs."""
    client, rooms, hs = await fake_client(make_client)
    hs.clock_ms = lambda: int(asyncio.get_running_loop().time() * 1000)
    rooms.join(ROOM, ALICE, BOB)
    await client.put(url(), json={"typing": True, "timeout": 50}, headers=auth("alice"))
    version = hs.notifier.version(BOB)
    assert await hs.notifier.wait(BOB, version, 2.0) is True
    assert hs.typing._typing == {}
    assert hs.typing.current_position() == 2


async def test_timeout_is_capped(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    rooms.join(ROOM, ALICE)
    await client.put(url(), json={"typing": True, "timeout": 10**9}, headers=auth("alice"))
    clock.now_ms += 120_000
    assert hs.typing.typing_user_ids(ROOM) == []
    # Without a timeout the default is 30 s.
    await client.put(url(), json={"typing": True}, headers=auth("alice"))
    clock.now_ms += 29_999
    assert hs.typing.typing_user_ids(ROOM) == [ALICE]
    clock.now_ms += 1
    assert hs.typing.typing_user_ids(ROOM) == []


async def test_only_for_yourself(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    response = await client.put(url(who=BOB), json={"typing": True}, headers=auth("alice"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert hs.typing.typing_user_ids(ROOM) == []


async def test_must_be_joined(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    for membership in (None, "leave", "invite", "ban"):
        rooms.memberships[ROOM] = {} if membership is None else {ALICE: membership}
        response = await client.put(url(), json={"typing": True}, headers=auth("alice"))
        assert response.status == 403, membership
        assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert hs.typing.current_position() == 0


BAD_BODIES = [
    (b"{", "M_NOT_JSON"),
    (b"[]", "M_BAD_JSON"),
    (b"{}", "M_BAD_JSON"),
    (b'{"typing": "yes"}', "M_BAD_JSON"),
    (b'{"typing": true, "timeout": "30000"}', "M_BAD_JSON"),
    (b'{"typing": true, "timeout": 1.5}', "M_BAD_JSON"),
    (b'{"typing": true, "timeout": true}', "M_BAD_JSON"),
    (b'{"typing": true, "timeout": -1}', "M_INVALID_PARAM"),
]


async def test_bad_body(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    for body, errcode in BAD_BODIES:
        response = await client.put(url(), data=body, headers=auth("alice"))
        assert response.status == 400, body
        assert (await response.json())["errcode"] == errcode, body
    assert hs.typing.current_position() == 0


async def test_invalid_room_id_and_auth(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.put(url(room="room"), json={"typing": True}, headers=auth("alice"))
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"
    response = await client.put(url(), json={"typing": True})
    assert response.status == 401


async def test_provider_limits_to_rooms(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    other = "!other:localhost"
    rooms.join(ROOM, ALICE, BOB)
    rooms.join(other, ALICE)
    await client.put(url(), json={"typing": True}, headers=auth("alice"))
    await client.put(url(room=other), json={"typing": True}, headers=auth("alice"))
    # Bob is joined only to ROOM.
    assert set(await hs.typing.changes_for_user(BOB, 0, 2)) == {ROOM}
    assert set(await hs.typing.changes_for_user(ALICE, 0, 2)) == {ROOM, other}
    assert set(await hs.typing.changes_for_user(ALICE, 1, 2)) == {other}
    assert set(await hs.typing.changes_for_user(ALICE, 0, 2, [other])) == {other}
    # A token from before a restart (position above the counter) counts as 0.
    assert set(await hs.typing.changes_for_user(ALICE, 99, 2)) == {ROOM, other}
