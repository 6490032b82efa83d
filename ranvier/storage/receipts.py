"""Store of receipts (Client-Server API, "Receipts").

One row per (room, receipt type, user, thread): receipts are "up to" markers,
so a new one replaces the old. ``thread_id`` is '' for an unthreaded receipt.
Each write takes the next position of the ``receipts`` stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ranvier.storage.engine import (
    Database,
    Row,
    Transaction,
    next_stream_position,
    placeholders,
    upsert_sql,
)

STREAM = "receipts"
UNTHREADED = ""

_UPSERT = upsert_sql(
    "receipts",
    ("room_id", "receipt_type", "user_id", "thread_id"),
    ("room_id", "receipt_type", "user_id", "thread_id", "event_id", "data", "stream_id"),
)


@dataclass(frozen=True, slots=True)
class ReceiptRow:
    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None  # None: unthreaded
    event_id: str
    data: str  # JSON text
    stream_id: int


class ReceiptStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        #: Called with the user's ID once a receipt of theirs is committed (the
        #: push store's cache of read positions).
        self.on_receipt: list[Callable[[str], None]] = []

    async def put(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str | None,
        event_id: str,
        data: str,
    ) -> int:
        async with self.database.transaction() as txn:
            return await self.put_in_transaction(
                txn, room_id, receipt_type, user_id, thread_id, event_id, data
            )

    async def put_in_transaction(
        self,
        txn: Transaction,
        room_id: str,
        receipt_type: str,
        user_id: str,
        thread_id: str | None,
        event_id: str,
        data: str,
    ) -> int:
        """Set a receipt; its new stream position."""
        txn.call_after_commit(lambda: self._committed(user_id))
        position = await next_stream_position(txn, STREAM)
        await txn.execute(
            _UPSERT,
            room_id,
            receipt_type,
            user_id,
            thread_id or UNTHREADED,
            event_id,
            data,
            position,
        )
        return position

    def _committed(self, user_id: str) -> None:
        for listener in self.on_receipt:
            listener(user_id)

    async def get(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None
    ) -> ReceiptRow | None:
        row = await self.database.fetch_one(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, data, stream_id "
            "FROM receipts WHERE room_id = ? AND receipt_type = ? AND user_id = ? "
            "AND thread_id = ?",
            room_id,
            receipt_type,
            user_id,
            thread_id or UNTHREADED,
        )
        return None if row is None else _row(row)

    async def changed_between(
        self, room_ids: list[str], from_pos: int, to_pos: int
    ) -> list[ReceiptRow]:
        """Receipts in ``room_ids`` last written in (from_pos, to_pos], oldest first."""
        if not room_ids:
            return []
        rows = await self.database.fetch_all(
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, data, stream_id "
            f"FROM receipts WHERE room_id IN ({placeholders(len(room_ids))}) "
            "AND stream_id > ? AND stream_id <= ? ORDER BY stream_id",
            *room_ids,
            from_pos,
            to_pos,
        )
        return [_row(row) for row in rows]


def _row(values: Row) -> ReceiptRow:
    return ReceiptRow(
        room_id=values[0],
        receipt_type=values[1],
        user_id=values[2],
        thread_id=values[3] or None,
        event_id=values[4],
        data=values[5],
        stream_id=int(values[6]),
    )
