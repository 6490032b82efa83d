"""Store of content reports (Client-Server API, "Reporting Content"), kept
for the server's administrators."""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.engine import Database

_COLUMNS = "id, received_ts, reporter, kind, room_id, event_id, target_user_id, reason, score"


@dataclass(frozen=True, slots=True)
class ReportRow:
    id: int
    received_ts: int
    reporter: str
    kind: str  # "event", "room" or "user"
    room_id: str | None
    event_id: str | None
    target_user_id: str | None
    reason: str | None
    score: int | None


class ReportStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add(
        self,
        *,
        received_ts: int,
        reporter: str,
        kind: str,
        room_id: str | None = None,
        event_id: str | None = None,
        target_user_id: str | None = None,
        reason: str | None = None,
        score: int | None = None,
    ) -> int:
        """Store one report; its ID."""
        async with self.database.transaction() as txn:
            report_id = await txn.fetch_val(
                "INSERT INTO content_reports (received_ts, reporter, kind, room_id, event_id, "
                "target_user_id, reason, score) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                received_ts,
                reporter,
                kind,
                room_id,
                event_id,
                target_user_id,
                reason,
                score,
            )
        return int(report_id)

    async def newest(self, limit: int, before_id: int | None = None) -> list[ReportRow]:
        """Up to ``limit`` reports, newest first, older than ``before_id`` if given."""
        rows = await self.database.fetch_all(
            f"SELECT {_COLUMNS} FROM content_reports WHERE id < ? ORDER BY id DESC LIMIT ?",
            before_id if before_id is not None else 2**62,
            limit,
        )
        return [
            ReportRow(
                int(row[0]),
                int(row[1]),
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                row[7],
                None if row[8] is None else int(row[8]),
            )
            for row in rows
        ]
