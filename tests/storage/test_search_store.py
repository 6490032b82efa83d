"""The search migration indexes the history stored before it (both engines),
with the same word matching as events indexed when persisted."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import orjson

from ranvier.storage.engine import MIGRATIONS_DIR, Database, open_database
from ranvier.storage.search import Order, SearchQuery, SearchStore
from ranvier.storage.user_directory import DirectoryEntry, UserDirectoryStore

ROOM = "!room:example.org"
KEYS = ("content.body", "content.name", "content.topic")


def _search_migration_version() -> int:
    (name,) = [path.name for path in MIGRATIONS_DIR.glob("*_search.sqlite.sql")]
    match = re.match(r"(\d+)_", name)
    assert match is not None
    return int(match.group(1))


def _migrations_before_search(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    version = _search_migration_version()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        if int(path.name[:4]) < version:
            shutil.copy(path, directory / path.name)
    return directory


#: (event_id, type, state_key, content, rejected, redacted)
HISTORY = [
    ("$msg", "m.room.message", None, {"body": "Hello world-wide example.com"}, False, False),
    ("$name", "m.room.name", "", {"name": "Garden Club"}, False, False),
    ("$topic", "m.room.topic", "", {"topic": "roses_and tulips"}, False, False),
    ("$other_name", "m.room.name", "x", {"name": "garden"}, False, False),
    ("$number", "m.room.message", None, {"body": 12345}, False, False),
    ("$rejected", "m.room.message", None, {"body": "hello rejected"}, True, False),
    ("$redacted", "m.room.message", None, {"body": "hello redacted"}, False, True),
    (
        "$edit",
        "m.room.message",
        None,
        {
            "body": "* hello edit",
            "m.new_content": {"body": "hello edit"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$msg"},
        },
        False,
        False,
    ),
    ("$encrypted", "m.room.encrypted", None, {"ciphertext": "hello"}, False, False),
]


async def test_migration_indexes_existing_history(database_dsn: str, tmp_path: Path) -> None:
    db = await open_database(database_dsn, migrations_dir=_migrations_before_search(tmp_path))
    try:
        for position, (event_id, event_type, state_key, content, rejected, redacted) in enumerate(
            HISTORY, start=1
        ):
            pdu = {
                "type": event_type,
                "sender": "@a:example.org",
                "room_id": ROOM,
                "content": content,
            }
            if state_key is not None:
                pdu["state_key"] = state_key
            await db.execute(
                "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
                " origin_server_ts, depth, json, rejected, redacted_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                position,
                event_id,
                ROOM,
                event_type,
                state_key,
                "@a:example.org",
                position,
                position,
                orjson.dumps(pdu).decode(),
                rejected,
                "$redaction" if redacted else None,
            )
        await _user_directory_history(db)
    finally:
        await db.close()

    db = await open_database(database_dsn)
    try:
        store = SearchStore(db)
        assert await store.index_size() == 3

        async def found(term: str) -> list[str]:
            hits = await store.search(SearchQuery(term.split(), [ROOM], KEYS), "recent", None, 10)
            return [hit.event_id for hit in hits]

        assert await found("hello") == ["$msg"]
        assert await found("wide") == ["$msg"]
        assert await found("com exam") == ["$msg"]
        assert await found("garden") == ["$name"]
        assert await found("tulips") == ["$topic"]
        assert await found("roses") == ["$topic"]
        assert await found("edit") == []
        assert await found("12345") == []

        directory = UserDirectoryStore(db)
        by_bob = await directory.search("@bob:example.org", ["ali"], 10, all_local=False)
        assert by_bob == [DirectoryEntry("@alice:example.org", "Alice Liddell", "mxc://a/b")]
        # Remote users from their member events; the room is public.
        by_carol = await directory.search("@carol:example.org", ["remote"], 10, all_local=False)
        assert by_carol == [DirectoryEntry("@r:remote.example", "Remote Person", None)]
        everyone = await directory.search("@carol:example.org", ["example"], 10, all_local=True)
        assert [entry.user_id for entry in everyone] == [
            "@alice:example.org",
            "@bob:example.org",
            "@carol:example.org",
            "@r:remote.example",
        ]
        assert everyone[1].display_name == "bob"  # the localpart: no profile row
    finally:
        await db.close()


async def _user_directory_history(db: Database) -> None:
    """Users, a profile, a public room with members, as stored before the migration."""
    for user_id in ("@alice:example.org", "@bob:example.org", "@carol:example.org"):
        await db.execute("INSERT INTO users (user_id, created_ts) VALUES (?, ?)", user_id, 1)
    await db.execute(
        "INSERT INTO profiles (user_id, field, value) VALUES (?, ?, ?), (?, ?, ?)",
        "@alice:example.org",
        "displayname",
        '"Alice Liddell"',
        "@alice:example.org",
        "avatar_url",
        '"mxc://a/b"',
    )
    await db.execute(
        "INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts)"
        " VALUES (?, ?, ?, ?, ?)",
        ROOM,
        "10",
        "@alice:example.org",
        False,
        1,
    )
    members = [
        ("$m1", "@alice:example.org", {"membership": "join", "displayname": "Al in room"}),
        ("$m2", "@bob:example.org", {"membership": "join"}),
        ("$m3", "@r:remote.example", {"membership": "join", "displayname": "Remote Person"}),
    ]
    state = [
        ("$jr", "m.room.join_rules", "", {"join_rule": "public"}),
        *((eid, "m.room.member", user, content) for eid, user, content in members),
    ]
    for offset, (event_id, event_type, state_key, content) in enumerate(state, start=100):
        pdu = {"type": event_type, "state_key": state_key, "room_id": ROOM, "content": content}
        await db.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
            " origin_server_ts, depth, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            offset,
            event_id,
            ROOM,
            event_type,
            state_key,
            "@alice:example.org",
            1,
            1,
            orjson.dumps(pdu).decode(),
        )
        await db.execute(
            "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?, ?, ?, ?)",
            ROOM,
            event_type,
            state_key,
            event_id,
        )
        if event_type == "m.room.member":
            await db.execute(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id,"
                " stream_ordering) VALUES (?, ?, ?, ?, ?)",
                ROOM,
                state_key,
                "join",
                event_id,
                offset,
            )


#: (event_id, room, key, stream ordering, words), written in this order: the
#: backfilled "$old" (a negative ordering) after the newer ones.
ROWS = [
    ("$new", ROOM, "content.body", 10, "apple pie"),
    ("$mid", ROOM, "content.body", 3, "apple crumble with cream"),
    ("$old", ROOM, "content.body", -5, "apple"),
    ("$name", ROOM, "content.name", 7, "apple garden club"),
    ("$elsewhere", "!other:example.org", "content.body", 8, "apple"),
]


async def _index_rows(db: Database) -> None:
    vector = "to_tsvector('simple', ?)" if db.engine == "postgresql" else "?"
    column = "vector" if db.engine == "postgresql" else "words"
    for event_id, room_id, key, position, words in ROWS:
        pdu = {"type": "m.room.message", "sender": "@a:example.org", "room_id": room_id}
        await db.execute(
            "INSERT INTO events (stream_ordering, event_id, room_id, type, sender,"
            " origin_server_ts, depth, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            position,
            event_id,
            room_id,
            "m.room.message",
            "@a:example.org",
            1,
            1,
            orjson.dumps(pdu).decode(),
        )
        await db.execute(
            "INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering,"
            f" {column}, words_count) VALUES (?, ?, ?, ?, ?, {vector}, ?)",
            event_id,
            room_id,
            "@a:example.org",
            key,
            position,
            words,
            len(words.split()),
        )


async def test_orders_are_the_same_on_both_engines(database: Database) -> None:
    """``recent`` follows the stream ordering (not the order rows were
    written); ``rank`` puts texts of fewer words first, ties newest first."""
    await _index_rows(database)
    store = SearchStore(database)
    query = SearchQuery(["apple"], [ROOM], KEYS)

    async def found(order: Order, after: int | None, limit: int = 10) -> list[tuple[str, float]]:
        return [(hit.event_id, hit.rank) for hit in await store.search(query, order, after, limit)]

    recent = [event_id for event_id, _ in await found("recent", None)]
    assert recent == ["$new", "$name", "$mid", "$old"]
    assert [event_id for event_id, _ in await found("recent", 3)] == ["$old"]
    assert [event_id for event_id, _ in await found("recent", 10, limit=2)] == ["$name", "$mid"]
    assert await found("rank", None) == [
        ("$old", 1.0),
        ("$new", 0.5),
        ("$name", 1 / 3),
        ("$mid", 0.25),
    ]
    assert await found("rank", 2, limit=1) == [("$name", 1 / 3)]
    assert await store.count(query) == 4
    bodies = SearchQuery(["apple"], [ROOM], ["content.body"])
    assert await store.count(bodies) == 3
    both_rooms = SearchQuery(["apple"], [ROOM, "!other:example.org"], ["content.name"])
    assert [hit.event_id for hit in await store.search(both_rooms, "rank", None, 10)] == ["$name"]
    senders = SearchQuery(["apple"], [ROOM], KEYS, ["@b:example.org"])
    assert await store.count(senders) == 0

    # An edit rewrites a row's words (and its length); a redaction removes it.
    column = "vector" if database.engine == "postgresql" else "words"
    vector = "to_tsvector('simple', ?)" if database.engine == "postgresql" else "?"
    await database.execute(
        f"UPDATE event_search SET {column} = {vector}, words_count = ? WHERE event_id = ?",
        "pear",
        1,
        "$old",
    )
    await database.execute("DELETE FROM event_search WHERE event_id = ?", "$new")
    assert [event_id for event_id, _ in await found("rank", None)] == ["$name", "$mid"]
    assert await store.count(query) == 2
    pear = SearchQuery(["pe"], [ROOM], KEYS)
    assert [hit.event_id for hit in await store.search(pear, "recent", None, 10)] == ["$old"]
