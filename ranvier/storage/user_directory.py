"""The user directory (Client-Server API, "User directory"; users.yaml).

Rows are kept up to date incrementally, never rebuilt per search:

* a user's row comes from their ``join`` member events (display name and
  avatar as the room shows them), written in the transaction that persists
  the events (:func:`update_directory_from_events`); a local user's row comes
  from their global profile instead (:meth:`UserDirectoryStore.set_local_profile`,
  called at registration and on every profile change), and member events do
  not override it (as Synapse: room-specific names of local users are not
  what the directory shows);
* ``user_directory_rooms`` follows each room's join rule and history
  visibility from their state events, so "is this user in a public room" is an
  indexed join.

Who may be found by whom is decided at search time from ``room_memberships``
(both indexed): users who share a joined room with the searcher, users
joined to a room with join rule ``public`` or history visibility
``world_readable``, and, with ``user_directory.search_all_users``, every
local user. Deactivated users are never found.

Matching: ``words`` holds the lowercase words of the display name and of the
user ID (``@alice.smith:example.org`` → ``alice smith example org``), each
after a space; a term word ``w`` matches with ``words LIKE '% w%'``: a prefix
on a word boundary, case-insensitive. Words are letters and digits only
(ranvier/storage/search.py ``words_of``), so they hold no LIKE wildcards.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ranvier.storage.engine import Database, Queryable, Transaction

if TYPE_CHECKING:
    from ranvier.storage.events import StoredEvent

_WORD = re.compile(r"[^\W_]+")
#: Public: anyone may find the room's members.
_PUBLIC_ROOM = "(r.join_rule = 'public' OR r.history_visibility = 'world_readable')"


def directory_words(user_id: str, display_name: str | None) -> str:
    """The ``words`` column: ' word word ...' of the display name and user ID."""
    words = _WORD.findall(f"{display_name or ''} {user_id}".lower())
    return "".join(f" {word}" for word in dict.fromkeys(words))


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    user_id: str
    display_name: str | None
    avatar_url: str | None


def _string_or_none(value: object) -> str | None:
    """A string field for the directory's text columns; NUL, which event
    content may hold but PostgreSQL text may not (core/input_limits.py), is
    left out: the directory is for finding people, not for the exact text."""
    return value.replace("\x00", "") if isinstance(value, str) else None


async def update_directory_from_events(txn: Transaction, stored: Sequence[StoredEvent]) -> None:
    """Directory rows from the accepted state events among ``stored``: join
    member events (users), join rules and history visibility (rooms)."""
    users: dict[str, tuple[Any, ...]] = {}
    for item in stored:
        # Backfilled history (negative orderings) is older than what the rows hold.
        if item.rejected or item.outlier or item.soft_failed or item.stream_ordering < 0:
            continue
        event = item.event
        if event.type == "m.room.member" and event.state_key and event.membership == "join":
            name = _string_or_none(event.content.get("displayname"))
            avatar = _string_or_none(event.content.get("avatar_url"))
            users[event.state_key] = (
                event.state_key,
                name,
                avatar,
                directory_words(event.state_key, name),
            )
        elif event.state_key == "" and event.type == "m.room.join_rules":
            await _set_room_field(txn, event.room_id, "join_rule", event.content.get("join_rule"))
        elif event.state_key == "" and event.type == "m.room.history_visibility":
            await _set_room_field(
                txn, event.room_id, "history_visibility", event.content.get("history_visibility")
            )
    if users:
        await txn.execute_many(
            "INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)"
            " VALUES (?, ?, ?, FALSE, ?) ON CONFLICT (user_id) DO UPDATE SET"
            " display_name = excluded.display_name, avatar_url = excluded.avatar_url,"
            " words = excluded.words WHERE user_directory.is_local = FALSE",
            list(users.values()),
        )


async def _set_room_field(txn: Transaction, room_id: str, column: str, value: object) -> None:
    await txn.execute(
        f"INSERT INTO user_directory_rooms (room_id, {column}) VALUES (?, ?)"
        f" ON CONFLICT (room_id) DO UPDATE SET {column} = excluded.{column}",
        room_id,
        _string_or_none(value),
    )


async def set_local_profile(
    db: Queryable, user_id: str, display_name: str | None, avatar_url: str | None
) -> None:
    """A local user's row from their global profile."""
    await db.execute(
        "INSERT INTO user_directory (user_id, display_name, avatar_url, is_local, words)"
        " VALUES (?, ?, ?, TRUE, ?) ON CONFLICT (user_id) DO UPDATE SET"
        " display_name = excluded.display_name, avatar_url = excluded.avatar_url,"
        " is_local = TRUE, words = excluded.words",
        user_id,
        _string_or_none(display_name),
        _string_or_none(avatar_url),
        directory_words(user_id, display_name),
    )


class UserDirectoryStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def set_local_profile(
        self, user_id: str, display_name: str | None, avatar_url: str | None
    ) -> None:
        await set_local_profile(self.database, user_id, display_name, avatar_url)

    async def search(
        self, searcher: str, terms: Sequence[str], limit: int, *, all_local: bool
    ) -> list[DirectoryEntry]:
        """Up to ``limit`` users matching every word of ``terms`` (non-empty)
        whom ``searcher`` may find: those whose first word (of the display
        name, else of the user ID) starts with the first term first, then users with a display name, then by user ID."""
        conditions = " AND ".join("d.words LIKE ?" for _ in terms)
        args: list[Any] = [f"% {term}%" for term in terms]
        local = "d.is_local = TRUE OR " if all_local else ""
        sql = (
            "SELECT d.user_id, d.display_name, d.avatar_url FROM user_directory d"
            f" WHERE {conditions}"
            " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = d.user_id AND u.deactivated)"
            f" AND ({local}EXISTS (SELECT 1 FROM room_memberships m"
            " JOIN room_memberships me ON me.room_id = m.room_id"
            " WHERE m.user_id = d.user_id AND m.membership = 'join'"
            " AND me.user_id = ? AND me.membership = 'join')"
            " OR EXISTS (SELECT 1 FROM room_memberships m"
            " JOIN user_directory_rooms r ON r.room_id = m.room_id"
            f" WHERE m.user_id = d.user_id AND m.membership = 'join' AND {_PUBLIC_ROOM}))"
            " ORDER BY CASE WHEN d.words LIKE ? THEN 0 ELSE 1 END,"
            " CASE WHEN d.display_name IS NULL THEN 1 ELSE 0 END, d.user_id LIMIT ?"
        )
        args.extend((searcher, f" {terms[0]}%", limit))
        rows = await self.database.fetch_all(sql, *args)
        return [DirectoryEntry(row[0], row[1], row[2]) for row in rows]
