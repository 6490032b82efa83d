"""Events, state groups, memberships and aliases on both engines.

Events are built by the real rooms service (signed PDUs) on a Homeserver over
the ``database`` fixture, so every store path runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ranvier.config import parse_config
from ranvier.core.ids import server_name_of
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from ranvier.storage import Database
from ranvier.storage import rooms as rooms_store
from ranvier.storage.events import AliasTaken, EventToPersist, NewRoom
from ranvier.storage.state import MAX_CHAIN_LENGTH

NOW = 1_700_000_000_000


@pytest.fixture
async def hs(database: Database, tmp_path: Path) -> AsyncIterator[Homeserver]:
    config = parse_config({}, tmp_path, env={})
    homeserver = Homeserver(config, database, SigningKey.generate("t"), lambda: NOW)
    for name in ("alice", "bob"):
        await homeserver.accounts.register(name, None, login=False)
    yield homeserver


async def _room(hs: Homeserver, **body: object) -> str:
    return await create_room(hs.rooms, Requester("@alice:localhost", "DEV"), dict(body))


async def _count(db: Database, table: str) -> int:
    return int(await db.fetch_val(f"SELECT COUNT(*) FROM {table}"))


async def _bulk_join(hs: Homeserver, room_id: str, count: int) -> None:
    """``count`` users join in one transaction (built and authorized like any event)."""
    rooms = hs.rooms
    room = await rooms.require_room(room_id)
    async with rooms.room_lock(room_id):
        head = await rooms._load_head(room)
        events = []
        for n in range(count):
            user = f"@user{n}:localhost"
            spec = EventSpec("m.room.member", {"membership": "join"}, user)
            events.append(await rooms._build_event(head, user, spec))
        await rooms.events.persist_local_events(room_id, [EventToPersist(e) for e in events])


async def test_event_is_stored_once_with_its_columns(hs: Homeserver, database: Database) -> None:
    room_id = await _room(hs, preset="public_chat")
    sent = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.message", {"body": "hi"})
    )
    row = await database.fetch_one(
        "SELECT room_id, type, state_key, sender, depth, rejected, outlier, redacted_by"
        " FROM events WHERE event_id = ?",
        sent.event_id,
    )
    assert row is not None
    assert tuple(row) in (
        (room_id, "m.room.message", None, "@alice:localhost", sent.event.depth, False, False, None),
        (room_id, "m.room.message", None, "@alice:localhost", sent.event.depth, 0, 0, None),
    )
    again = hs.rooms.events
    again._cache.clear()
    loaded = await again.get_event(sent.event_id)
    assert loaded is not None
    assert loaded.event.pdu == sent.event.pdu
    assert loaded.stream_ordering == sent.stream_ordering == await again.current_position()
    # A message points at the state group of the state before it: no new group.
    assert loaded.state_group == loaded.state_group_before
    # The PDU is signed and its ID is its reference hash (room version 12).
    assert "localhost" in loaded.event.pdu["signatures"]
    assert loaded.event.pdu["prev_events"] and loaded.event.depth > 1


async def test_message_in_room_of_2000_adds_no_state_rows_and_membership_one(
    hs: Homeserver, database: Database
) -> None:
    room_id = await _room(hs, preset="public_chat")
    await _bulk_join(hs, room_id, 2000)
    state = await hs.rooms.events.current_state_ids(room_id)
    assert len([k for k in state if k[0] == "m.room.member"]) == 2001
    # Make sure the next state event is a delta (not at a snapshot boundary).
    group = await hs.rooms.events.current_state_group(room_id)
    chain = await database.fetch_val("SELECT chain_length FROM state_groups WHERE id = ?", group)
    if chain >= MAX_CHAIN_LENGTH:
        await hs.rooms.send_event(
            "@alice:localhost", room_id, EventSpec("m.room.topic", {"topic": "x"}, "")
        )

    groups, entries = (
        await _count(database, "state_groups"),
        await _count(database, "state_group_entries"),
    )
    await hs.rooms.send_event(
        "@user7:localhost", room_id, EventSpec("m.room.message", {"body": "x"})
    )
    assert (
        await _count(database, "state_groups"),
        await _count(database, "state_group_entries"),
    ) == (
        groups,
        entries,
    )

    await hs.rooms.send_event(
        "@user7:localhost",
        room_id,
        EventSpec("m.room.member", {"membership": "leave"}, "@user7:localhost"),
    )
    assert await _count(database, "state_groups") == groups + 1
    assert await _count(database, "state_group_entries") == entries + 1

    # The resolved state of the new group is the full room state.
    group = await hs.rooms.events.current_state_group(room_id)
    assert group is not None
    hs.rooms.state_store._groups = type(hs.rooms.state_store._groups)(8)  # cold cache
    resolved = await hs.rooms.state_store.get_state_ids(group)
    assert resolved == await hs.rooms.events.current_state_ids(room_id)
    # Total rows stay far below a copy per event (2000 events x 2000 members).
    assert await _count(database, "state_group_entries") < 2001 * 2001 // 20


async def test_chains_are_bounded_and_every_group_resolves(
    hs: Homeserver, database: Database
) -> None:
    room_id = await _room(hs, preset="public_chat")
    expected: dict[int, dict[tuple[str, str], str]] = {}
    for n in range(2 * MAX_CHAIN_LENGTH + 5):
        stored = await hs.rooms.send_event(
            "@alice:localhost", room_id, EventSpec("m.room.topic", {"topic": str(n)}, "")
        )
        assert stored.state_group is not None
        expected[stored.state_group] = dict(await hs.rooms.events.current_state_ids(room_id))
    assert (
        await database.fetch_val("SELECT MAX(chain_length) FROM state_groups") == MAX_CHAIN_LENGTH
    )
    snapshots = await database.fetch_val(
        "SELECT COUNT(*) FROM state_groups WHERE parent_group IS NULL AND room_id = ?", room_id
    )
    assert snapshots >= 3  # the first group, then one per MAX_CHAIN_LENGTH + 1 state events
    hs.rooms.state_store._groups = type(hs.rooms.state_store._groups)(8)
    for group, state in expected.items():
        assert await hs.rooms.state_store.get_state_ids(group) == state
        topic = await hs.rooms.state_store.get_state_ids_for_keys(group, [("m.room.topic", "")])
        assert topic == {("m.room.topic", ""): state[("m.room.topic", "")]}
    # The batch read (an initial /sync's): the same answers, more than one chunk
    # of groups, some cached and some not, across snapshots and deltas.
    hs.rooms.state_store._groups = type(hs.rooms.state_store._groups)(8)
    some = list(expected)[::7]
    assert await hs.rooms.state_store.get_state_ids_many(some) == {g: expected[g] for g in some}
    assert len(expected) > 100  # more than one query's worth
    assert await hs.rooms.state_store.get_state_ids_many([*expected, *some]) == expected
    assert await hs.rooms.state_store.get_state_ids_many([]) == {}


async def test_state_at_and_after_event(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat", name="one")
    before_rename = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.name", {"name": "two"}, "")
    )
    state_before = await hs.rooms.events.state_at_event(before_rename.event_id)
    state_after = await hs.rooms.events.state_after_event(before_rename.event_id)
    assert state_before is not None and state_after is not None
    assert state_after[("m.room.name", "")] == before_rename.event_id
    assert state_before[("m.room.name", "")] == before_rename.replaces_state
    assert await hs.rooms.events.state_at_event("$unknown") is None


async def test_memberships_and_their_history(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    start = await hs.rooms.events.current_position()
    await hs.rooms.join("@bob:localhost", room_id)
    assert await hs.rooms.get_membership(room_id, "@bob:localhost") == "join"
    assert await hs.rooms.joined_user_ids(room_id) == {"@alice:localhost", "@bob:localhost"}
    assert await hs.rooms.joined_room_ids("@bob:localhost") == [room_id]
    assert await hs.rooms.users_sharing_rooms_with("@bob:localhost") == {
        "@alice:localhost",
        "@bob:localhost",
    }
    await hs.rooms.update_membership("@bob:localhost", room_id, "@bob:localhost", "leave")
    end = await hs.rooms.events.current_position()
    changes = await hs.rooms.events.membership_changes_for_user("@bob:localhost", start, end)
    assert [c.membership for c in changes] == ["join", "leave"]
    assert await hs.rooms.events.membership_changes_for_user("@bob:localhost", end, end) == []
    assert await hs.rooms.joined_room_ids("@bob:localhost") == []
    assert await hs.rooms.users_sharing_rooms_with("@bob:localhost") == {"@bob:localhost"}
    assert await hs.rooms.users_sharing_rooms_with("@alice:localhost") == {"@alice:localhost"}
    assert await hs.rooms.get_membership(room_id, "@carol:localhost") is None


async def test_joined_servers_follow_each_membership_change(hs: Homeserver) -> None:
    """The servers of a room's members, counted once and then kept in step with
    the membership rows each commit applies (the federation sender asks for
    every event): always what counting the members afresh gives."""
    room_id = await _room(hs, preset="public_chat")
    await hs.rooms.join("@bob:localhost", room_id)
    store = hs.rooms.store
    assert await store.joined_servers(room_id) == Counter({"localhost": 2})

    async def recounted() -> Counter[str]:
        members = await store.joined_members(room_id)
        return Counter(server_name_of(user) for user in members)

    steps = [
        [(room_id, "@x:a.test", "join"), (room_id, "@y:a.test", "join")],
        [(room_id, "@z:b.test", "join"), (room_id, "@x:a.test", "leave")],
        [(room_id, "@z:b.test", "join")],  # already joined: counted once
        [(room_id, "@w:c.test", "leave")],  # never joined: nothing to take away
        [(room_id, "@y:a.test", "ban"), (room_id, "@z:b.test", "leave")],
    ]
    expected = [
        {"localhost": 2, "a.test": 2},
        {"localhost": 2, "a.test": 1, "b.test": 1},
        {"localhost": 2, "a.test": 1, "b.test": 1},
        {"localhost": 2, "a.test": 1, "b.test": 1},
        {"localhost": 2},
    ]
    for changes, servers in zip(steps, expected, strict=True):
        before = await store.joined_servers(room_id)
        store.apply_membership_changes(changes)
        after = await store.joined_servers(room_id)
        assert after == Counter(servers) == await recounted()
        assert after is not before  # a new count: the shared one is never changed
    # Without a kept count, the members are counted afresh.
    store._servers.clear()
    assert await store.joined_servers(room_id) == Counter({"localhost": 2})


async def test_events_read_from_the_database_share_their_repeated_strings(
    hs: Homeserver,
) -> None:
    """Parsed events share one copy of their room ID, sender, type and the IDs
    of the events they name (what the event cache holds thousands of), and are
    otherwise the events written."""
    room_id = await _room(hs, preset="public_chat")
    sent = [
        (
            await hs.rooms.send_event(
                "@alice:localhost",
                room_id,
                EventSpec("m.room.message", {"msgtype": "m.text", "body": f"m{n}"}),
            )
        ).event
        for n in range(3)
    ]
    hs.rooms.events._cache.clear()  # read them back from the database
    found = await hs.rooms.events.get_events([e.event_id for e in sent])
    read = [found[e.event_id].event for e in sent]
    assert [e.pdu for e in read] == [dict(e.pdu) for e in sent]
    first, second, third = read
    assert first.room_id is second.room_id is third.room_id
    assert first.sender is third.sender and first.type is third.type
    assert set(first.auth_event_ids) == set(second.auth_event_ids)
    for a, b in zip(sorted(first.auth_event_ids), sorted(second.auth_event_ids), strict=True):
        assert a is b
    # An event's prev_events names the one before it: one string for both.
    assert second.prev_event_ids == (first.event_id,)
    assert second.prev_event_ids[0] is first.event_id


async def test_users_sharing_rooms_alike_from_the_caches_and_one_query(
    hs: Homeserver, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _room(hs, preset="public_chat")
    second = await _room(hs, preset="public_chat")
    await hs.rooms.join("@bob:localhost", first)
    await hs.rooms.join("@carol:localhost", second)
    await hs.rooms.join("@dave:localhost", second)
    await hs.rooms.update_membership("@dave:localhost", second, "@dave:localhost", "leave")
    expected = {"@alice:localhost", "@bob:localhost", "@carol:localhost"}
    assert await hs.rooms.users_sharing_rooms_with("@alice:localhost") == expected
    # A user with more rooms than are cached gets one query instead.
    monkeypatch.setattr(rooms_store, "_SHARING_LOADS", -1)
    assert await hs.rooms.users_sharing_rooms_with("@alice:localhost") == expected
    assert await hs.rooms.users_sharing_rooms_with("@bob:localhost") == {
        "@alice:localhost",
        "@bob:localhost",
    }


async def test_recent_changes_answer_alike_from_memory_and_from_the_database(
    hs: Homeserver,
) -> None:
    """An incremental /sync asks which rooms had events and whose memberships
    changed since a token: from the in-memory logs for a recent token, from the
    tables otherwise (an old token, or after the logs were reset)."""
    events = hs.rooms.events
    first = await _room(hs, preset="public_chat")
    start = await events.current_position()
    second = await _room(hs, preset="public_chat")
    await hs.rooms.join("@bob:localhost", first)
    await hs.rooms.send_event(
        "@alice:localhost", first, EventSpec("m.room.message", {"body": "hi"}, None)
    )
    await hs.rooms.update_membership("@bob:localhost", first, "@bob:localhost", "leave")
    end = await events.current_position()

    async def recent(rooms: list[str], from_pos: int, limit: int) -> dict[str, list[str]]:
        found = await events.recent_events_for_rooms(rooms, from_pos, end, limit)
        return {room_id: [e.event_id for e in items] for room_id, items in found.items()}

    async def answers() -> tuple[object, ...]:
        return (
            await events.rooms_with_events_between(start, end, 100),
            await events.rooms_with_events_between(start, end, 2),  # over the cap
            await events.membership_changes_between(start, end, 100),
            await events.membership_changes_between(start, end, 1),
            await events.membership_changes_for_user("@bob:localhost", start, end),
            await events.rooms_with_events_between(end, end, 100),
            # A /sync's timelines since a token, and the event before a token.
            await recent([first, second], start, 3),
            await recent([first, second], start, 100),
            await recent([first, second], 0, 1),
            await recent([first, second], 0, 2),
            await recent([first], end, 5),
        )

    assert events._recent_events.between(start, end) is not None  # memory knows the range
    from_memory = await answers()
    assert from_memory[0] == {first, second}
    assert from_memory[1] is None
    changes = from_memory[2]
    assert isinstance(changes, list)
    assert [(c.room_id, c.user_id, c.membership) for c in changes] == [
        (second, "@alice:localhost", "join"),
        (first, "@bob:localhost", "join"),
        (first, "@bob:localhost", "leave"),
    ]
    assert from_memory[3] is None
    assert from_memory[4] == changes[1:]
    assert from_memory[5] == set()
    timelines = from_memory[6]
    assert isinstance(timelines, dict) and set(timelines) == {first, second}
    assert len(timelines[first]) == 3 and len(from_memory[7][first]) == 3  # type: ignore[index]
    assert from_memory[8] == {room: ids[:1] for room, ids in from_memory[7].items()}  # type: ignore[union-attr]
    assert from_memory[10] == {}
    events._recent_events.reset()
    events._recent_memberships.reset()
    assert await answers() == from_memory  # now read from the tables


async def test_recent_events_partly_in_memory_answer_as_the_database(hs: Homeserver) -> None:
    """After the log of recent events was reset, it knows only what came after:
    a room with enough events there is answered from memory, the others from
    the table, and together they answer as the table alone."""
    events = hs.rooms.events
    first = await _room(hs, preset="public_chat")
    second = await _room(hs, preset="public_chat")
    quiet = await _room(hs, preset="public_chat")

    async def say(room_id: str, body: str) -> str:
        spec = EventSpec("m.room.message", {"body": body}, None)
        return (await hs.rooms.send_event("@alice:localhost", room_id, spec)).event_id

    events._recent_events.reset()
    await say(first, "sets the floor")  # the first commit after a reset: not kept
    kept = [await say(first, "one"), await say(second, "two"), await say(first, "three")]
    end = await events.current_position()
    assert len(events._recent_events) == 3

    async def recent(from_pos: int, limit: int) -> dict[str, list[str]]:
        found = await events.recent_events_for_rooms([first, second, quiet], from_pos, end, limit)
        return {room_id: [e.event_id for e in items] for room_id, items in found.items()}

    cases = [(0, 1), (0, 2), (0, 3), (end - 2, 5), (end, 5)]
    mixed = [await recent(*case) for case in cases]
    assert mixed[0][first] == [kept[2]] and mixed[0][second] == [kept[1]]
    assert mixed[1][first] == [kept[2], kept[0]]
    assert len(mixed[2][first]) == 3 and len(mixed[2][quiet]) == 3  # partly from the table
    assert mixed[3] == {first: [kept[2]], second: [kept[1]]}
    assert mixed[4] == {}
    events._recent_events.reset()
    assert [await recent(*case) for case in cases] == mixed


async def test_room_events_in_stream_range_both_directions(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    start = await hs.rooms.events.current_position()
    ids = [
        (
            await hs.rooms.send_event(
                "@alice:localhost", room_id, EventSpec("m.room.message", {"body": str(n)})
            )
        ).event_id
        for n in range(5)
    ]
    end = await hs.rooms.events.current_position()
    forward = await hs.rooms.events.room_events_in_stream_range(room_id, start, end, 3, "f")
    assert [e.event_id for e in forward] == ids[:3]
    backward = await hs.rooms.events.room_events_in_stream_range(room_id, end, start, 2, "b")
    assert [e.event_id for e in backward] == ids[:2:-1][:2]
    assert await hs.rooms.events.rooms_with_events_in_range([room_id, "!x:y"], start, end) == {
        room_id
    }
    assert await hs.rooms.events.rooms_with_events_in_range([room_id], end, end) == set()


async def test_txn_ids_make_sends_idempotent(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    key = ("@alice:localhost", "DEV", "send/x", "t1")
    first = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.message", {"body": "a"}), txn=key
    )
    second = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.message", {"body": "b"}), txn=key
    )
    assert first.event_id == second.event_id
    assert await hs.rooms.events.get_txn_event_id(key) == first.event_id
    assert await hs.rooms.events.get_transaction_ids([first.event_id]) == {
        first.event_id: ("@alice:localhost", "DEV", "t1")
    }


async def test_transaction_ids_from_memory_and_from_the_database_agree(
    hs: Homeserver, database: Database
) -> None:
    """A sender's own recent events carry their transaction IDs in /sync: the
    persist remembers them, so the next /sync reads nothing; a store that
    starts cold reads the same answers, and remembers events without one."""
    room_id = await _room(hs, preset="public_chat")
    sent = await hs.rooms.send_event(
        "@alice:localhost",
        room_id,
        EventSpec("m.room.message", {"body": "a"}),
        txn=("@alice:localhost", "DEV", "send/x", "t9"),
    )
    plain = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.message", {"body": "b"})
    )
    ids = [sent.event_id, plain.event_id, "$unknown"]
    expected = {sent.event_id: ("@alice:localhost", "DEV", "t9")}
    reads: list[str] = []
    original = database.fetch_all

    async def counted(sql: str, *args: object) -> list[object]:
        if "event_txn_ids" in sql:  # not the push worker's reads meanwhile
            reads.append(sql)
        return await original(sql, *args)

    database.fetch_all = counted  # type: ignore[method-assign]
    try:
        store = hs.rooms.events
        assert await store.get_transaction_ids([sent.event_id]) == expected
        assert reads == []  # from the persist, no read
        cold = type(store)(database, store.state, store.rooms)
        assert await cold.get_transaction_ids(ids) == expected
        assert len(reads) == 1
        assert await cold.get_transaction_ids(ids) == expected  # all remembered, "none" too
        assert len(reads) == 1
    finally:
        database.fetch_all = original  # type: ignore[method-assign]


async def test_redaction_marks_the_target(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    target = await hs.rooms.send_event(
        "@alice:localhost", room_id, EventSpec("m.room.message", {"body": "secret"})
    )
    redaction_id = await hs.rooms.redact(
        "@alice:localhost", room_id, target.event_id, reason="oops", txn=None
    )
    loaded = await hs.rooms.events.get_event(target.event_id)
    assert loaded is not None and loaded.redacted_by == redaction_id
    hs.rooms.events._cache.clear()
    loaded = await hs.rooms.events.get_event(target.event_id)
    assert loaded is not None and loaded.redacted_by == redaction_id


async def test_a_failed_transaction_writes_nothing(hs: Homeserver, database: Database) -> None:
    room_id = await _room(hs, preset="public_chat", room_alias_name="taken")
    counts = [
        await _count(database, t) for t in ("rooms", "events", "state_groups", "room_memberships")
    ]
    room = await hs.rooms.require_room(room_id)
    head = await hs.rooms._load_head(room)
    head.room_id = "!other:localhost"
    head.extremities = []
    head.state = {}
    head.complete = True
    event = await hs.rooms._build_event(
        head,
        "@alice:localhost",
        EventSpec("m.room.create", {"room_version": "12", "other": True}, ""),
    )
    with pytest.raises(AliasTaken):
        await hs.rooms.events.persist_local_events(
            event.room_id,
            [EventToPersist(event)],
            new_room=NewRoom(
                event.room_id, "12", "@alice:localhost", False, NOW, "#taken:localhost"
            ),
        )
    assert [
        await _count(database, t) for t in ("rooms", "events", "state_groups", "room_memberships")
    ] == counts
    assert await hs.rooms.events.get_event(event.event_id) is None


async def test_aliases_and_profiles(hs: Homeserver) -> None:
    room_id = await _room(hs, visibility="public", room_alias_name="main")
    store = hs.rooms.store
    assert await store.get_alias("#main:localhost") == (room_id, "@alice:localhost")
    await store.create_alias("#second:localhost", room_id, "@bob:localhost")
    assert await store.aliases_for_room(room_id) == ["#main:localhost", "#second:localhost"]
    assert await store.delete_alias("#second:localhost")
    assert not await store.delete_alias("#second:localhost")
    await store.set_profile_field("@bob:localhost", "displayname", "Bob")
    await store.set_profile_field("@bob:localhost", "m.tz", "Europe/Paris")
    await store.set_profile_field("@bob:localhost", "displayname", None)
    assert await store.get_profile_fields("@bob:localhost") == {
        "displayname": None,
        "m.tz": "Europe/Paris",
    }
    room = await store.get_room(room_id)
    assert room is not None and room.room_version == "12" and room.is_public
