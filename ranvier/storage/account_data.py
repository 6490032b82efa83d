"""Store of account data, global and per room (Client-Server API, "Client Config").

Global account data is stored with ``room_id = ''``. Each write takes the next
position of the ``account_data`` stream inside its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.engine import Database, Transaction, next_stream_position, upsert_sql

STREAM = "account_data"
GLOBAL = ""

_UPSERT = upsert_sql(
    "account_data",
    ("user_id", "room_id", "data_type"),
    ("user_id", "room_id", "data_type", "content", "stream_id"),
)


@dataclass(frozen=True, slots=True)
class AccountDataRow:
    room_id: str | None  # None for global account data
    data_type: str
    content: str  # JSON text
    stream_id: int


class AccountDataStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def put(self, user_id: str, room_id: str | None, data_type: str, content: str) -> int:
        """Set one account data entry; the new stream position."""
        async with self.database.transaction() as txn:
            return await self.put_in_transaction(txn, user_id, room_id, data_type, content)

    async def put_in_transaction(
        self, txn: Transaction, user_id: str, room_id: str | None, data_type: str, content: str
    ) -> int:
        position = await next_stream_position(txn, STREAM)
        await txn.execute(_UPSERT, user_id, room_id or GLOBAL, data_type, content, position)
        return position

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> str | None:
        value = await self.database.fetch_val(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND data_type = ?",
            user_id,
            room_id or GLOBAL,
            data_type,
        )
        return None if value is None else str(value)

    async def all_global(self, data_type: str) -> list[tuple[str, str]]:
        """``(user_id, content)`` of every user's global entry of ``data_type``."""
        rows = await self.database.fetch_all(
            "SELECT user_id, content FROM account_data WHERE room_id = ? AND data_type = ?",
            GLOBAL,
            data_type,
        )
        return [(row[0], str(row[1])) for row in rows]

    async def changed_between(
        self, user_id: str, from_pos: int, to_pos: int
    ) -> list[AccountDataRow]:
        """Entries of ``user_id`` last written in (from_pos, to_pos], oldest first."""
        rows = await self.database.fetch_all(
            "SELECT room_id, data_type, content, stream_id FROM account_data "
            "WHERE user_id = ? AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
            user_id,
            from_pos,
            to_pos,
        )
        return [AccountDataRow(row[0] or None, row[1], row[2], int(row[3])) for row in rows]
