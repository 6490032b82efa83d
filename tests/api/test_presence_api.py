"""GET/PUT /presence/{userId}/status, set_presence_from_sync and the presence /sync provider."""

from __future__ import annotations

import pytest

from ranvier.services import presence as presence_service
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.user_data_fakes import FakeClock, auth, fake_client, user

ROOM = "!room:localhost"
ALICE, BOB, CAROL = user("alice"), user("bob"), user("carol")


def url(who: str = ALICE) -> str:
    return f"/_matrix/client/v3/presence/{who}/status"


async def test_set_and_get_own(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    response = await client.put(
        url(), json={"presence": "online", "status_msg": "here"}, headers=auth("alice")
    )
    assert response.status == 200
    assert await response.json() == {}
    clock.now_ms += 1234
    response = await client.get(url(), headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == {
        "presence": "online",
        "last_active_ago": 1234,
        "currently_active": True,
        "status_msg": "here",
    }
    # Past a minute the user is no longer "currently active"; past 5 minutes, idle.
    clock.now_ms += 60_000
    assert (await (await client.get(url(), headers=auth("alice"))).json())[
        "currently_active"
    ] is False
    clock.now_ms += 5 * 60_000
    assert await (await client.get(url(), headers=auth("alice"))).json() == {
        "presence": "unavailable",
        "last_active_ago": 1234 + 60_000 + 5 * 60_000,
        "status_msg": "here",
    }


async def test_unavailable_keeps_last_active_and_absent_msg_clears(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    await client.put(url(), json={"presence": "online", "status_msg": "x"}, headers=auth("alice"))
    clock.now_ms += 10_000
    await client.put(url(), json={"presence": "unavailable"}, headers=auth("alice"))
    clock.now_ms += 5_000
    body = await (await client.get(url(), headers=auth("alice"))).json()
    assert body == {"presence": "unavailable", "last_active_ago": 15_000}
    await client.put(
        url(), json={"presence": "offline", "status_msg": "gone"}, headers=auth("alice")
    )
    body = await (await client.get(url(), headers=auth("alice"))).json()
    assert body == {"presence": "offline", "last_active_ago": 15_000, "status_msg": "gone"}


async def test_never_set_is_offline(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.get(url(), headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == {"presence": "offline"}


async def test_visibility(make_client: MakeClient) -> None:
    client, rooms, _ = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    await client.put(url(), json={"presence": "online"}, headers=auth("alice"))
    response = await client.get(url(), headers=auth("bob"))
    assert response.status == 200
    assert (await response.json())["presence"] == "online"
    response = await client.get(url(), headers=auth("carol"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    # Sharing a room only through a left membership is not enough.
    rooms.join("!old:localhost", ALICE)
    rooms.join("!old:localhost", CAROL)
    rooms.leave("!old:localhost", CAROL)
    assert (await client.get(url(), headers=auth("carol"))).status == 403


async def test_only_set_your_own(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    response = await client.put(url(BOB), json={"presence": "online"}, headers=auth("alice"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert await hs.presence.current_position() == 0


BAD_BODIES = [
    (b"{", "M_NOT_JSON"),
    (b"[]", "M_BAD_JSON"),
    (b"{}", "M_BAD_JSON"),
    (b'{"presence": 1}', "M_BAD_JSON"),
    (b'{"presence": "busy"}', "M_INVALID_PARAM"),
    (b'{"presence": "online", "status_msg": 5}', "M_BAD_JSON"),
]


async def test_bad_body(make_client: MakeClient) -> None:
    client, _, hs = await fake_client(make_client)
    for body, errcode in BAD_BODIES:
        response = await client.put(url(), data=body, headers=auth("alice"))
        assert response.status == 400, body
        assert (await response.json())["errcode"] == errcode, body
    assert await hs.presence.current_position() == 0


async def test_get_invalid_user_and_auth(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.get(url("alice"), headers=auth("alice"))
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"
    assert (await client.get(url())).status == 401
    assert (await client.put(url(), json={"presence": "online"})).status == 401


async def test_change_wakes_users_sharing_rooms(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    versions = {u: hs.notifier.version(u) for u in (ALICE, BOB, CAROL)}
    await client.put(url(), json={"presence": "online"}, headers=auth("alice"))
    assert hs.notifier.version(ALICE) == versions[ALICE] + 1
    assert hs.notifier.version(BOB) == versions[BOB] + 1
    assert hs.notifier.version(CAROL) == versions[CAROL]


async def test_sync_provider(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client, rooms, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    rooms.join(ROOM, ALICE, BOB)
    await client.put(url(), json={"presence": "online", "status_msg": "hi"}, headers=auth("alice"))
    await client.put(url(CAROL), json={"presence": "online"}, headers=auth("carol"))
    await client.put(url(BOB), json={"presence": "unavailable"}, headers=auth("bob"))
    assert await hs.presence.current_position() == 3
    clock.now_ms += 500
    events = await hs.presence.changes_for_user(BOB, 0, 3)
    assert events == [
        {
            "type": "m.presence",
            "sender": ALICE,
            "content": {
                "presence": "online",
                "last_active_ago": 500,
                "currently_active": True,
                "status_msg": "hi",
            },
        },
        {
            "type": "m.presence",
            "sender": BOB,
            "content": {"presence": "unavailable", "last_active_ago": 500},
        },
    ]
    assert [e["sender"] for e in await hs.presence.changes_for_user(BOB, 1, 3)] == [BOB]
    # More changes in the range than an incremental sync reads at once: the
    # presence of the users sharing a room is looked up instead, same answer.
    monkeypatch.setattr(presence_service, "RECENT_CHANGES", 1)
    assert [e["sender"] for e in await hs.presence.changes_for_user(BOB, 1, 3)] == [BOB]
    assert [e["sender"] for e in await hs.presence.changes_for_user(ALICE, 0, 3)] == [ALICE, BOB]
    monkeypatch.undo()
    assert [e["sender"] for e in await hs.presence.changes_for_user(BOB, 0, 1)] == [ALICE]
    # Carol shares no room: she sees only herself.
    assert [e["sender"] for e in await hs.presence.changes_for_user(CAROL, 0, 3)] == [CAROL]
    assert [e["sender"] for e in await hs.presence.presence_events_for_users([CAROL, BOB])] == [
        CAROL,
        BOB,
    ]


async def test_set_presence_from_sync(make_client: MakeClient) -> None:
    _, rooms, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    rooms.join(ROOM, ALICE)
    presence = hs.presence
    await presence.set_presence_from_sync(ALICE, "offline")  # never marks anything
    assert await presence.current_position() == 0
    await presence.set_presence_from_sync(ALICE, None)  # default: online
    assert await presence.current_position() == 1
    assert (await presence.get_presence(ALICE, ALICE))["presence"] == "online"
    clock.now_ms += 30_000
    await presence.set_presence_from_sync(ALICE, "online")  # still currently active
    assert await presence.current_position() == 1
    clock.now_ms += 30_000
    await presence.set_presence_from_sync(ALICE, "online")  # activity is announced again
    assert await presence.current_position() == 2
    assert (await presence.get_presence(ALICE, ALICE))["last_active_ago"] == 0
    await presence.set_presence_from_sync(ALICE, "unavailable")
    await presence.set_presence_from_sync(ALICE, "unavailable")
    assert await presence.current_position() == 3
    assert (await presence.get_presence(ALICE, ALICE))["presence"] == "unavailable"
    await presence.set_presence_from_sync(ALICE, "offline")
    assert (await presence.get_presence(ALICE, ALICE))["presence"] == "unavailable"
    await presence.set_presence_from_sync(ALICE, "online")
    assert (await presence.get_presence(ALICE, ALICE))["presence"] == "online"
    # A status message set explicitly survives syncing.
    await presence.set_presence(ALICE, "online", "busy")
    clock.now_ms += 120_000
    await presence.set_presence_from_sync(ALICE, "online")
    assert (await presence.get_presence(ALICE, ALICE))["status_msg"] == "busy"


async def test_an_online_users_refreshed_activity_wakes_no_one(make_client: MakeClient) -> None:
    """Coming online wakes those sharing a room; a /sync of a user already
    online that only refreshes their activity is stored (the next /sync shows
    it) but wakes no long-poll: hundreds of syncing clients must not wake each
    other in a loop."""
    _, rooms, hs = await fake_client(make_client)
    clock = FakeClock(NOW_MS)
    hs.clock_ms = clock
    rooms.join(ROOM, ALICE, BOB)
    presence = hs.presence
    before = hs.notifier.version(BOB)
    await presence.set_presence_from_sync(ALICE, None)  # offline → online: a change
    assert hs.notifier.version(BOB) == before + 1
    clock.now_ms += 90_000
    await presence.set_presence_from_sync(ALICE, None)  # still online, newer activity
    assert await presence.current_position() == 2
    assert hs.notifier.version(BOB) == before + 1
    assert (await presence.get_presence(BOB, ALICE))["currently_active"] is True
    await presence.set_presence_from_sync(ALICE, "unavailable")  # a change again
    assert hs.notifier.version(BOB) == before + 2
