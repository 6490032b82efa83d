"""The join path's caches (issue 14, joins): the room record, the joined
members of a room and a user's memberships are served from memory, follow
every committed change, and a join asks the database a bounded number of
times whatever the room's size. Both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from ranvier.errors import MatrixError
from ranvier.homeserver import Homeserver
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.storage import Database

NOW = 1_700_000_000_000
ALICE = "@alice:localhost"
BOB = "@bob:localhost"


@pytest.fixture
async def hs(database: Database, tmp_path: Path) -> AsyncIterator[Homeserver]:
    config = parse_config({}, tmp_path, env={})
    homeserver = Homeserver(config, database, SigningKey.generate("t"), lambda: NOW)
    for name in ("alice", "bob", "carol"):
        await homeserver.accounts.register(name, None, login=False)
    yield homeserver


async def _room(hs: Homeserver, **body: object) -> str:
    return await create_room(hs.rooms, Requester(ALICE, "DEV"), dict(body))


class _Counter:
    """Counts the statements a database object runs (reads and writes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, database: Database) -> None:
        self.sql: list[str] = []
        for name in ("fetch_one", "fetch_all", "fetch_val", "execute", "execute_many"):
            original = getattr(database, name)

            async def counted(sql: str, *args: Any, _original: Any = original) -> Any:
                self.sql.append(sql)
                return await _original(sql, *args)

            monkeypatch.setattr(database, name, counted)

    def matching(self, fragment: str) -> int:
        return sum(1 for sql in self.sql if fragment in sql)


async def test_joined_members_follow_joins_and_leaves(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    assert await hs.rooms.joined_user_ids(room_id) == {ALICE}  # now cached
    await hs.rooms.join(BOB, room_id)
    assert await hs.rooms.joined_user_ids(room_id) == {ALICE, BOB}
    await hs.rooms.update_membership(BOB, room_id, BOB, "leave")
    assert await hs.rooms.joined_user_ids(room_id) == {ALICE}
    await hs.rooms.update_membership(ALICE, room_id, BOB, "ban")
    assert await hs.rooms.joined_user_ids(room_id) == {ALICE}
    # Callers may add to the answer (the federation sender does): the cache is not touched.
    answer = await hs.rooms.joined_user_ids(room_id)
    answer.add("@mallory:localhost")
    assert await hs.rooms.joined_user_ids(room_id) == {ALICE}


async def test_joined_members_match_the_database_after_many_joins(
    hs: Homeserver, database: Database
) -> None:
    room_id = await _room(hs, preset="public_chat")
    await hs.rooms.joined_user_ids(room_id)
    users = [f"@user{n}:localhost" for n in range(5)]
    for user in users:
        await hs.accounts.register(user[1:].split(":")[0], None, login=False)
        await hs.rooms.join(user, room_id)
    await hs.rooms.update_membership(users[2], room_id, users[2], "leave")
    rows = await database.fetch_all(
        "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = ?",
        room_id,
        "join",
    )
    expected = {row[0] for row in rows}
    assert expected == {ALICE, *users} - {users[2]}
    assert await hs.rooms.joined_user_ids(room_id) == expected


async def test_room_record_follows_the_directory_flag(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="private_chat")
    record = await hs.rooms.store.get_room(room_id)
    assert record is not None and not record.is_public
    await hs.rooms.store.set_room_is_public(room_id, True)
    record = await hs.rooms.store.get_room(room_id)
    assert record is not None and record.is_public
    await hs.rooms.store.set_room_is_public(room_id, False)
    record = await hs.rooms.store.get_room(room_id)
    assert record is not None and not record.is_public


async def test_unknown_room_is_not_remembered(hs: Homeserver) -> None:
    assert await hs.rooms.store.get_room("!nope:localhost") is None
    room_id = await _room(hs)
    assert await hs.rooms.store.get_room(room_id) is not None


async def test_membership_of_a_user_follows_their_changes(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    assert await hs.rooms.get_membership(room_id, BOB) is None  # caches Bob's (no) rooms
    await hs.rooms.join(BOB, room_id)
    assert await hs.rooms.get_membership(room_id, BOB) == "join"
    await hs.rooms.update_membership(BOB, room_id, BOB, "leave")
    assert await hs.rooms.get_membership(room_id, BOB) == "leave"


async def test_a_users_cached_memberships_are_split_by_kind_and_follow_changes(
    hs: Homeserver,
) -> None:
    """What every /sync starts from: every membership oldest first, the joined
    ones and the others in that order, and each room's, after each change."""
    store = hs.rooms.store
    rooms = [await _room(hs, preset="public_chat") for _ in range(3)]
    for room_id in rooms:
        await hs.rooms.join(BOB, room_id)
    await hs.rooms.update_membership(BOB, rooms[1], BOB, "leave")
    cached = await store.user_memberships(BOB)
    assert [m.room_id for m in cached.all] == [rooms[0], rooms[2], rooms[1]]
    assert [m.room_id for m in cached.joined] == [rooms[0], rooms[2]]
    assert [(m.room_id, m.membership) for m in cached.others] == [(rooms[1], "leave")]
    assert {r: m.membership for r, m in cached.by_room.items()} == {
        rooms[0]: "join", rooms[1]: "leave", rooms[2]: "join"
    }
    assert await store.joined_room_ids(BOB) == [rooms[0], rooms[2]]
    assert [m.room_id for m in await store.rooms_for_user(BOB)] == [rooms[0], rooms[2]]
    await hs.rooms.join(BOB, rooms[1])
    again = await store.user_memberships(BOB)
    assert [m.room_id for m in again.joined] == [rooms[0], rooms[2], rooms[1]]
    assert again.others == () and again.by_room[rooms[1]].membership == "join"


async def test_a_join_into_a_larger_room_runs_no_more_statements(
    hs: Homeserver, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statements of one join do not grow with the room, none reads the
    member list, the room row is not read again, and of the current state
    only the joiner's (absent) member event is looked up: the room's auth
    events are in memory, and building and checking the join share the answer."""
    room_id = await _room(hs, preset="public_chat")
    await hs.rooms.join(BOB, room_id)  # warms the room's caches
    for n in range(20):
        await hs.accounts.register(f"member{n}", None, login=False)
        await hs.rooms.join(f"@member{n}:localhost", room_id)
    # Push rule evaluation reads the members, after the join and off its path
    # (services/push.py): settled first and left out, it is not the join's cost.
    await hs.push.wait_idle()
    monkeypatch.setattr(hs.push, "on_event", lambda *args: False)
    counter = _Counter(monkeypatch, database)
    await hs.rooms.join("@carol:localhost", room_id)
    assert await hs.rooms.get_membership(room_id, "@carol:localhost") == "join"
    assert counter.matching("FROM room_memberships WHERE room_id = ? AND membership") == 0
    assert counter.matching("FROM rooms WHERE room_id") == 0
    assert counter.matching("FROM current_state WHERE") == 1


async def test_current_state_lookups_follow_state_changes(hs: Homeserver) -> None:
    room_id = await _room(hs, preset="public_chat")
    events = hs.rooms.events
    rules_key = ("m.room.join_rules", "")
    topic_key = ("m.room.topic", "")
    before = await events.current_state_ids(room_id, [rules_key, topic_key])
    assert topic_key not in before  # absent, and remembered as such
    topic_id = await hs.rooms.send_state_event(ALICE, room_id, "m.room.topic", "", {"topic": "t"})
    await hs.rooms.send_state_event(
        ALICE, room_id, "m.room.join_rules", "", {"join_rule": "invite"}
    )
    after = await events.current_state_ids(room_id, [rules_key, topic_key])
    assert after[topic_key] == topic_id
    assert after[rules_key] != before[rules_key]
    assert after == {
        key: event_id
        for key, event_id in (await events.current_state_ids(room_id)).items()
        if key in (rules_key, topic_key)
    }
    # The cached join rules are the ones the auth rules use: Bob may not join now.
    with pytest.raises(MatrixError) as raised:
        await hs.rooms.join(BOB, room_id)
    assert raised.value.errcode == "M_FORBIDDEN"
