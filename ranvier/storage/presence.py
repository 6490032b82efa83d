"""Store of presence (Client-Server API, "Presence"): the current state per user.

Each change takes the next position of the ``presence`` stream. Every /sync
reads the syncing user's own row (is the user already online?), so rows read
or written are kept in memory, a bounded LRU updated by :meth:`PresenceStore.put`
once committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.cache import ReadCache
from ranvier.storage.engine import (
    Database,
    Row,
    next_stream_position,
    placeholders,
    upsert_sql,
)

STREAM = "presence"

_UPSERT = upsert_sql(
    "presence",
    ("user_id",),
    ("user_id", "state", "status_msg", "last_active_ts", "stream_id"),
)


@dataclass(frozen=True, slots=True)
class PresenceRow:
    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    stream_id: int


_COLUMNS = "user_id, state, status_msg, last_active_ts, stream_id"


# User IDs per IN (...) list: well under SQLite's limit of bound parameters.
IN_CHUNK = 500


def _row(values: Row) -> PresenceRow:
    return PresenceRow(values[0], values[1], values[2], int(values[3]), int(values[4]))


class PresenceStore:
    def __init__(self, database: Database, cache_size: int = 10_000) -> None:
        self.database = database
        #: ``user_id -> row`` (None: the user has no presence row).
        self._rows: ReadCache[str, PresenceRow | None] = ReadCache(cache_size)
        database.on_positions_reset(self._rows.clear)

    async def put(
        self, user_id: str, state: str, status_msg: str | None, last_active_ts: int
    ) -> int:
        """Record a user's presence; the new stream position."""
        async with self.database.transaction() as txn:
            position = await next_stream_position(txn, STREAM)
            await txn.execute(_UPSERT, user_id, state, status_msg, last_active_ts, position)
            row = PresenceRow(user_id, state, status_msg, last_active_ts, position)
            txn.call_after_commit(lambda: self._rows.set(user_id, row))
        return position

    async def get(self, user_id: str) -> PresenceRow | None:
        async def load() -> PresenceRow | None:
            values = await self.database.fetch_one(
                f"SELECT {_COLUMNS} FROM presence WHERE user_id = ?", user_id
            )
            return None if values is None else _row(values)

        return await self._rows.get(user_id, load)

    async def get_many(self, user_ids: list[str]) -> list[PresenceRow]:
        rows: list[PresenceRow] = []
        for start in range(0, len(user_ids), IN_CHUNK):
            chunk = user_ids[start : start + IN_CHUNK]
            rows += map(
                _row,
                await self.database.fetch_all(
                    f"SELECT {_COLUMNS} FROM presence"
                    f" WHERE user_id IN ({placeholders(len(chunk))})",
                    *chunk,
                ),
            )
        return sorted(rows, key=lambda row: row.stream_id)

    async def changed_between(
        self, user_ids: list[str], from_pos: int, to_pos: int
    ) -> list[PresenceRow]:
        """Presence of ``user_ids`` last changed in (from_pos, to_pos], oldest first."""
        rows: list[PresenceRow] = []
        for start in range(0, len(user_ids), IN_CHUNK):
            chunk = user_ids[start : start + IN_CHUNK]
            rows += map(
                _row,
                await self.database.fetch_all(
                    f"SELECT {_COLUMNS} FROM presence"
                    f" WHERE user_id IN ({placeholders(len(chunk))})"
                    " AND stream_id > ? AND stream_id <= ?",
                    *chunk,
                    from_pos,
                    to_pos,
                ),
            )
        return sorted(rows, key=lambda row: row.stream_id)

    async def changed_in(self, from_pos: int, to_pos: int, limit: int) -> list[PresenceRow]:
        """Everyone's presence last changed in (from_pos, to_pos], oldest first,
        at most ``limit`` rows (the ``presence_stream`` index)."""
        rows = await self.database.fetch_all(
            f"SELECT {_COLUMNS} FROM presence WHERE stream_id > ? AND stream_id <= ?"
            " ORDER BY stream_id LIMIT ?",
            from_pos,
            to_pos,
            limit,
        )
        return [_row(row) for row in rows]
