"""Notification counts in /sync (Client-Server API, "Push Notifications",
"Receipts": "Threaded read receipts"; sync.yaml ``unread_notifications``,
``unread_thread_notifications``), from push rule evaluation of every event a
local user receives (services/push.py). Every test runs on both engines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from tests.api.conftest import MakeClient
from tests.api.federation_api_support import FED, REMOTE, US, signed_request, transaction, trust
from tests.api.rooms_support import (
    ROOMS_CONFIG,
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
    make_sync_client_fixture,
    sync,
)
from tests.federation_dag import CREATOR, LOCAL, ROOM, Room, join_room

THREADS = {"room": {"timeline": {"unread_thread_notifications": True}}}


async def message(client: Client, user: User, room_id: str, body: str, **content: Any) -> str:
    status, payload = await send(
        client, user, room_id, {"msgtype": "m.text", "body": body, **content}, body
    )
    assert status == 200, payload
    event_id: str = payload["event_id"]
    return event_id


async def in_thread(client: Client, user: User, room_id: str, root: str, body: str) -> str:
    relation = {"rel_type": "m.thread", "event_id": root}
    return await message(client, user, room_id, body, **{"m.relates_to": relation})


async def receipt(
    client: Client,
    user: User,
    room_id: str,
    event_id: str,
    receipt_type: str = "m.read",
    thread_id: str | None = None,
) -> None:
    body = {} if thread_id is None else {"thread_id": thread_id}
    path = f"/rooms/{q(room_id)}/receipt/{receipt_type}/{q(event_id)}"
    status, payload = await call(client, "POST", path, user, body)
    assert status == 200, payload


async def group(client: Client, size: int = 3) -> tuple[list[User], str]:
    """``size`` users in a public room created by the first (power 100)."""
    users = [await make_user(client, name) for name in ("alice", "bob", "carol", "dan")[:size]]
    room_id = await create_room(client, users[0], preset="public_chat")
    for other in users[1:]:
        status, payload = await join(client, other, room_id)
        assert status == 200, payload
    return users, room_id


async def counts(client: Client, user: User, room_id: str, **params: Any) -> dict[str, Any]:
    body = await sync(client, user, **params)
    room: dict[str, Any] = body["rooms"]["join"][room_id]
    return room


def pair(notifications: int, highlights: int) -> dict[str, int]:
    return {"notification_count": notifications, "highlight_count": highlights}


async def test_messages_count_for_others_not_the_sender(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    first = await message(client, bob, room_id, "one")
    await message(client, bob, room_id, "two")
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(2, 0)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(2, 0)
    assert (await counts(client, bob, room_id))["unread_notifications"] == pair(0, 0)
    # Notices (.m.rule.suppress_notices) and reactions (.m.rule.reaction) do not count.
    await message(client, bob, room_id, "bot", msgtype="m.notice")
    status, _ = await send(
        client,
        bob,
        room_id,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": first, "key": "+1"}},
        "react",
        "m.reaction",
    )
    assert status == 200
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(2, 0)


async def test_user_mention_highlights_only_the_mentioned(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    await message(client, bob, room_id, "hey", **{"m.mentions": {"user_ids": [alice.user_id]}})
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(1, 1)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(1, 0)


async def test_room_mention_needs_the_senders_power(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    room_mention = {"m.mentions": {"room": True}}
    # Bob has power 0 < notifications.room (50): a plain message for the others.
    await message(client, bob, room_id, "@room from bob", **room_mention)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(1, 0)
    # Alice created the room (power 100): .m.rule.is_room_mention highlights.
    await message(client, alice, room_id, "@room from alice", **room_mention)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(2, 1)
    # Bob's own message is not counted for him.
    assert (await counts(client, bob, room_id))["unread_notifications"] == pair(1, 1)


async def test_edits_are_suppressed(migrated_dsn: str, make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, _), room_id = await group(client)
    original = await message(client, bob, room_id, "typo")
    await message(
        client,
        bob,
        room_id,
        "* fixed",
        **{
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(1, 0)


async def test_one_to_one_room_and_encrypted(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob), room_id = await group(client, size=2)
    status, _ = await send(
        client,
        bob,
        room_id,
        {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"},
        "e1",
        "m.room.encrypted",
    )
    assert status == 200
    await message(client, bob, room_id, "hi")
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(2, 0)
    status, listed = await call(client, "GET", "/notifications", alice)
    assert status == 200
    sound = {"set_tweak": "sound", "value": "default"}
    # .m.rule.room_one_to_one and .m.rule.encrypted_room_one_to_one (2 members).
    assert [entry["actions"] for entry in listed["notifications"]] == [
        ["notify", sound],
        ["notify", sound],
    ]


async def test_receipts_reset_counts(migrated_dsn: str, make_sync_client: MakeSyncClient) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    first = await message(client, bob, room_id, "one")
    await message(client, bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}})
    await receipt(client, alice, room_id, first)
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(1, 1)
    last = await message(client, bob, room_id, "three")
    await receipt(client, alice, room_id, last, "m.read.private")
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(0, 0)
    # Carol's counts are hers alone.
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(3, 0)


async def test_threaded_receipts_reset_only_their_thread(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, _), room_id = await group(client)
    root = await message(client, bob, room_id, "root")
    await in_thread(client, bob, room_id, root, "reply 1")
    reply = await in_thread(client, bob, room_id, root, "reply 2")
    # Without the filter flag: every thread in unread_notifications.
    room = await counts(client, alice, room_id)
    assert room["unread_notifications"] == pair(3, 0)
    assert "unread_thread_notifications" not in room
    room = await counts(client, alice, room_id, filter=THREADS)
    assert room["unread_notifications"] == pair(1, 0)
    assert room["unread_thread_notifications"] == {root: pair(2, 0)}

    await receipt(client, alice, room_id, reply, thread_id=root)
    room = await counts(client, alice, room_id, filter=THREADS)
    assert room["unread_notifications"] == pair(1, 0)
    assert room["unread_thread_notifications"] == {}

    await in_thread(client, bob, room_id, root, "reply 3")
    await receipt(client, alice, room_id, root, thread_id="main")
    room = await counts(client, alice, room_id, filter=THREADS)
    assert room["unread_notifications"] == pair(0, 0)
    assert room["unread_thread_notifications"] == {root: pair(1, 0)}

    # An unthreaded receipt covers every thread up to its event.
    last = await in_thread(client, bob, room_id, root, "reply 4")
    await message(client, bob, room_id, "main again")
    await receipt(client, alice, room_id, last)
    room = await counts(client, alice, room_id, filter=THREADS)
    assert room["unread_notifications"] == pair(1, 0)
    assert room["unread_thread_notifications"] == {}


async def test_incremental_sync_shows_rooms_whose_counts_changed(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, _), room_id = await group(client)
    event_id = await message(client, bob, room_id, "one")
    # Receipts filtered out of the ephemeral events: the room still comes
    # back, for its counts.
    no_receipts = {"room": {"ephemeral": {"not_types": ["m.receipt"]}}}
    since = (await sync(client, alice, filter=no_receipts))["next_batch"]
    await receipt(client, alice, room_id, event_id, "m.read.private")
    body = await sync(client, alice, since=since, filter=no_receipts)
    room = body["rooms"]["join"][room_id]
    assert room["unread_notifications"] == pair(0, 0)
    assert room["timeline"]["events"] == [] and room["ephemeral"]["events"] == []
    # Someone else's receipt changes nothing of Alice's counts: no room.
    since = body["next_batch"]
    await receipt(client, bob, room_id, event_id, "m.read.private")
    body = await sync(client, alice, since=since, filter=no_receipts)
    assert body["rooms"]["join"] == {}


async def test_counts_survive_a_restart(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    first = await make_sync_client(migrated_dsn)
    (alice, bob, _), room_id = await group(first)
    root = await message(first, bob, room_id, "root")
    await in_thread(first, bob, room_id, root, "in thread")
    read = await message(
        first, bob, room_id, "read", **{"m.mentions": {"user_ids": [alice.user_id]}}
    )
    await message(first, bob, room_id, "unread", **{"m.mentions": {"user_ids": [alice.user_id]}})
    await receipt(first, alice, room_id, read, thread_id="main")
    await first.close()

    second = await make_sync_client(migrated_dsn)
    room = await counts(second, alice, room_id, filter=THREADS)
    assert room["unread_notifications"] == pair(1, 1)
    assert room["unread_thread_notifications"] == {root: pair(1, 0)}


async def test_evaluations_lost_in_a_crash_are_done_at_the_next_start(
    make_sync_client: MakeSyncClient, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_sync_client(migrated_dsn)
    (alice, bob, _), room_id = await group(first)
    crashed = hs_of(first).push
    monkeypatch.setattr(crashed, "on_event", lambda *args: True)  # queued, then lost
    await message(first, bob, room_id, "lost")
    await message(first, bob, room_id, "lost too", **{"m.mentions": {"user_ids": [alice.user_id]}})
    crashed._closed = True  # as in a crash: nothing recorded at the end
    await first.close()

    second = await make_sync_client(migrated_dsn)
    push = hs_of(second).push
    await push.wait_idle()
    assert (await counts(second, alice, room_id))["unread_notifications"] == pair(2, 1)
    # Evaluated again, they are counted once and pushed never.
    pushers = RecordingPushers()
    hs_of(second).pushers = pushers  # type: ignore[attr-defined]
    await push.store.set_evaluated(0)  # as if the start had found an unclean stop again
    await push.start()
    await push.wait_idle()
    assert pushers.calls == []
    assert (await counts(second, alice, room_id))["unread_notifications"] == pair(2, 1)
    await message(second, bob, room_id, "new")
    await push.wait_idle()
    assert sorted((c["user_id"], c["counts"]) for c in pushers.calls) == [
        (alice.user_id, {"unread": 3}),
        ("@carol:localhost", {"unread": 3}),
    ]
    await second.close()
    third = await make_sync_client(migrated_dsn)
    recorded = await hs_of(third).push.store.evaluated()
    assert recorded is not None and recorded[1] is True  # a clean stop: nothing owed


async def test_muted_room_does_not_count(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    await message(client, bob, room_id, "before muting")
    # The usual "mute" of clients: a room rule with dont_notify (stripped: no actions).
    status, payload = await call(
        client, "PUT", f"/pushrules/global/room/{q(room_id)}", alice, {"actions": ["dont_notify"]}
    )
    assert status == 200, payload
    await message(client, bob, room_id, "after muting")
    await message(client, bob, room_id, "@alice", **{"m.mentions": {"user_ids": [alice.user_id]}})
    # The mention rule is an override: it still wins over the room rule.
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(2, 1)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(3, 0)
    # Unmuted again: counts again (the cached rules were invalidated both times).
    status, _ = await call(client, "DELETE", f"/pushrules/global/room/{q(room_id)}", alice)
    assert status == 200
    await message(client, bob, room_id, "unmuted")
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(3, 1)


async def test_display_name_rule_of_a_user(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    status, _ = await put_state(
        client,
        alice,
        room_id,
        "m.room.member",
        alice.user_id,
        {"membership": "join", "displayname": "Alicia"},
    )
    assert status == 200
    rule = {
        "conditions": [{"kind": "contains_display_name"}],
        "actions": ["notify", {"set_tweak": "highlight"}],
    }
    status, payload = await call(client, "PUT", "/pushrules/global/override/name", alice, rule)
    assert status == 200, payload
    await message(client, bob, room_id, "ask alicia about it")
    await message(client, bob, room_id, "Alicias are many")  # not at a word boundary
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(2, 1)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(2, 0)


async def test_invite_notifies_the_invitee(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(client, alice)
    status, _ = await call(
        client, "POST", f"/rooms/{q(room_id)}/invite", alice, {"user_id": bob.user_id}
    )
    assert status == 200
    status, listed = await call(client, "GET", "/notifications", bob)
    assert status == 200
    [entry] = listed["notifications"]
    assert entry["room_id"] == room_id and entry["event"]["type"] == "m.room.member"
    assert entry["actions"] == ["notify", {"set_tweak": "sound", "value": "default"}]


class RecordingPushers:
    """Stands for the pushers service (tests/api/test_push_gateway_flow.py drives
    the real one to a gateway): records what push evaluation hands it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def users_with_pushers(self, user_ids: Iterable[str]) -> set[str]:
        return set(user_ids)  # as if everyone had one

    async def on_notification(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)

    async def close(self) -> None:
        pass


async def test_pushers_get_each_notification_once(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    status, _ = await call(
        client, "PUT", f"/pushrules/global/room/{q(room_id)}", carol, {"actions": []}
    )
    assert status == 200
    hs = hs_of(client)
    pushers = RecordingPushers()
    hs.pushers = pushers  # type: ignore[attr-defined]
    await message(client, bob, room_id, "one")
    mention = await message(
        client, bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}}
    )
    await hs.push.wait_idle()
    # Not Bob (the sender), not Carol (muted the room).
    assert [(c["user_id"], c["counts"]) for c in pushers.calls] == [
        (alice.user_id, {"unread": 1}),
        (alice.user_id, {"unread": 2}),
    ]
    last = pushers.calls[-1]
    assert last["room_id"] == room_id and last["event"].event_id == mention
    assert {"set_tweak": "highlight"} in last["actions"]


@pytest.mark.parametrize("members", [40])
async def test_many_members_each_evaluated(
    make_sync_client: MakeSyncClient, migrated_dsn: str, members: int
) -> None:
    """The shared evaluation of users without own rules gives each member
    their own answer: the mentioned ones highlight, the sender gets nothing."""
    client = await make_sync_client(migrated_dsn)
    owner = await make_user(client, "owner")
    room_id = await create_room(client, owner, preset="public_chat")
    users = [await make_user(client, f"u{i}") for i in range(members)]
    for user in users:
        status, _ = await join(client, user, room_id)
        assert status == 200
    muted = users[5]
    status, _ = await call(
        client, "PUT", f"/pushrules/global/room/{q(room_id)}", muted, {"actions": []}
    )
    assert status == 200
    mentioned = [users[3].user_id, users[7].user_id]
    await message(client, users[0], room_id, "hi", **{"m.mentions": {"user_ids": mentioned}})
    for user in (owner, users[3], users[7], users[8], users[-1]):
        expected = pair(1, 1) if user.user_id in mentioned else pair(1, 0)
        assert (await counts(client, user, room_id))["unread_notifications"] == expected
    for user in (users[0], muted):  # the sender; the member who muted the room
        assert (await counts(client, user, room_id))["unread_notifications"] == pair(0, 0)
    # The rows: one per notified member, none for the sender or the muted member.
    status, listed = await call(client, "GET", "/notifications", users[8])
    assert status == 200 and len(listed["notifications"]) == 1
    late = await make_user(client, "late")
    status, _ = await join(client, late, room_id)
    assert status == 200
    # Joined after the message: not notified of it.
    assert (await counts(client, late, room_id))["unread_notifications"] == pair(0, 0)


# --- events from other servers ----------------------------------------------------------


async def test_federated_events_are_evaluated(migrated_dsn: str, make_client: MakeClient) -> None:
    """A PDU from another server (PUT /send) counts for the local member like a
    local event: the same hook, after the event is durable."""
    client = await make_client({**ROOMS_CONFIG, "server_name": US, "database": migrated_dsn})
    await trust(client, REMOTE)
    room = Room()
    await join_room(hs_of(client).rooms.events, room)
    contents = [
        {"msgtype": "m.text", "body": "hello"},
        {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [LOCAL]}},
    ]
    prev = room.alice_join
    for index, content in enumerate(contents):
        pdu = room.dag.event(
            "m.room.message", CREATOR, content, [prev], [room.create, room.creator_join, room.power]
        )
        status, body = await signed_request(
            client, "PUT", f"{FED}/v1/send/t{index}", transaction(dict(pdu.pdu))
        )
        assert (status, body) == (200, {"pdus": {pdu.event_id: {}}})
        prev = pdu
    push = hs_of(client).push
    await push.wait_idle()
    assert await push.unread_counts(LOCAL, [ROOM]) == {ROOM: {"main": (2, 1)}}


async def test_an_ignored_users_messages_never_notify(
    make_sync_client: MakeSyncClient, migrated_dsn: str
) -> None:
    """ "Ignoring Users": events from an ignored user never notify; other
    members still count them, and /notifications leaves them out."""
    client = await make_sync_client(migrated_dsn)
    (alice, bob, carol), room_id = await group(client)
    path = f"/user/{q(alice.user_id)}/account_data/m.ignored_user_list"
    status, payload = await call(client, "PUT", path, alice, {"ignored_users": {bob.user_id: {}}})
    assert status == 200, payload
    await message(client, bob, room_id, f"hello {alice.user_id}")
    await message(client, carol, room_id, "from carol")
    assert (await counts(client, alice, room_id))["unread_notifications"] == pair(1, 0)
    assert (await counts(client, carol, room_id))["unread_notifications"] == pair(1, 0)
    status, notifications = await call(client, "GET", "/notifications", alice)
    assert status == 200, notifications
    assert [n["event"]["sender"] for n in notifications["notifications"]] == [carol.user_id]


async def test_initial_sync_of_joined_rooms_needs_no_state_lookup_for_the_join(
    make_sync_client: MakeSyncClient, database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A joined member sees their own join and everything after it: an initial
    /sync whose timelines hold only those reads no state per room to decide
    (each lookup was a round trip on PostgreSQL: scenario 13's /sync of 200
    rooms), and still shows the right events with their counts."""
    client = await make_sync_client(database_dsn)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    rooms = []
    for _ in range(3):
        room_id = await create_room(client, bob, preset="public_chat")
        assert (await join(client, alice, room_id))[0] == 200
        await message(client, bob, room_id, "after the join")
        rooms.append(room_id)
    hs = hs_of(client)
    await hs.push.wait_idle()
    lookups: list[int] = []
    original = hs.rooms.state_store.get_state_ids_for_keys

    async def counted(group: int, keys: Iterable[Any], db: Any = None) -> Any:
        lookups.append(group)
        return await original(group, keys, db)

    monkeypatch.setattr(hs.rooms.state_store, "get_state_ids_for_keys", counted)
    for limit, expected in ((1, ["m.room.message"]), (2, ["m.room.member", "m.room.message"])):
        body = await sync(client, alice, filter={"room": {"timeline": {"limit": limit}}})
        for room_id in rooms:
            room = body["rooms"]["join"][room_id]
            assert [e["type"] for e in room["timeline"]["events"]] == expected
            assert room["timeline"]["limited"] is True
            assert room["unread_notifications"]["notification_count"] == 1
        if limit == 1:
            # The message and the join (read to know "limited"): no lookup.
            assert lookups == []
    # With 2, the event before the join is read too: that one needs the state.
    assert len(lookups) == len(rooms)
