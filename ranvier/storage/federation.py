"""Outbound federation's durable state: per-destination progress and backoff,
and the EDUs that must not be lost (see migration 0009)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ranvier.storage.engine import Database, Queryable


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    last_sent_position: int
    retry_last_ts: int
    retry_interval_ms: int


@dataclass(frozen=True, slots=True)
class OutboxEdu:
    id: int
    edu_type: str
    content: Mapping[str, Any]


class FederationStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # --- destinations -------------------------------------------------------------------

    async def get_destination(self, name: str) -> Destination | None:
        row = await self.database.fetch_one(
            "SELECT destination, last_sent_position, retry_last_ts, retry_interval_ms"
            " FROM federation_destinations WHERE destination = ?",
            name,
        )
        return None if row is None else Destination(row[0], int(row[1]), int(row[2]), int(row[3]))

    async def all_destinations(self) -> list[Destination]:
        rows = await self.database.fetch_all(
            "SELECT destination, last_sent_position, retry_last_ts, retry_interval_ms"
            " FROM federation_destinations ORDER BY destination"
        )
        return [Destination(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def add_destination(self, name: str, position: int) -> None:
        """Start tracking ``name``: it is owed our events after ``position``."""
        await self.database.execute(
            "INSERT INTO federation_destinations (destination, last_sent_position)"
            " VALUES (?, ?) ON CONFLICT (destination) DO NOTHING",
            name,
            position,
        )

    async def set_last_sent(self, name: str, position: int) -> None:
        """Record an acknowledgement; the position never goes back."""
        await self.database.execute(
            "INSERT INTO federation_destinations (destination, last_sent_position) VALUES (?, ?)"
            " ON CONFLICT (destination) DO UPDATE SET last_sent_position ="
            " excluded.last_sent_position"
            " WHERE federation_destinations.last_sent_position < excluded.last_sent_position",
            name,
            position,
        )

    async def set_backoff(self, name: str, retry_last_ts: int, retry_interval_ms: int) -> None:
        await self.database.execute(
            "UPDATE federation_destinations SET retry_last_ts = ?, retry_interval_ms = ?"
            " WHERE destination = ?",
            retry_last_ts,
            retry_interval_ms,
            name,
        )

    # --- the durable EDU outbox -----------------------------------------------------------

    async def add_edus(
        self, rows: Sequence[tuple[str, str, Mapping[str, Any]]], db: Queryable | None = None
    ) -> None:
        """``(destination, edu_type, content)`` rows, kept until acknowledged;
        written in ``db`` (the caller's transaction) when given."""
        await (db or self.database).execute_many(
            "INSERT INTO federation_outbox (destination, edu_type, content) VALUES (?, ?, ?)",
            [(dest, edu_type, orjson.dumps(content).decode()) for dest, edu_type, content in rows],
        )

    async def pending_edus(self, destination: str, limit: int) -> list[OutboxEdu]:
        rows = await self.database.fetch_all(
            "SELECT id, edu_type, content FROM federation_outbox WHERE destination = ?"
            " ORDER BY id LIMIT ?",
            destination,
            limit,
        )
        return [OutboxEdu(int(r[0]), r[1], orjson.loads(r[2])) for r in rows]

    async def delete_edus(self, destination: str, up_to_id: int) -> None:
        await self.database.execute(
            "DELETE FROM federation_outbox WHERE destination = ? AND id <= ?",
            destination,
            up_to_id,
        )

    async def destinations_with_edus(self) -> list[str]:
        rows = await self.database.fetch_all("SELECT DISTINCT destination FROM federation_outbox")
        return sorted(row[0] for row in rows)

    # --- rooms and servers ----------------------------------------------------------------

    async def joined_user_ids_in_rooms(self, room_ids: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {room_id: set() for room_id in room_ids}
        for start in range(0, len(room_ids), 500):
            chunk = list(room_ids[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = await self.database.fetch_all(
                "SELECT room_id, user_id FROM room_memberships"
                f" WHERE membership = 'join' AND room_id IN ({marks})",
                *chunk,
            )
            for row in rows:
                found[row[0]].add(row[1])
        return found

    async def rooms_with_members_on(self, server_name: str) -> list[str]:
        """Rooms where a user of ``server_name`` is joined. (A server name has
        no ``%`` or ``_``: Server-Server API, "Server names" grammar.)"""
        rows = await self.database.fetch_all(
            "SELECT DISTINCT room_id FROM room_memberships WHERE membership = 'join'"
            " AND user_id LIKE ?",
            "%:" + server_name,
        )
        return sorted(row[0] for row in rows)

    async def newest_events_from(
        self, server_name: str, room_ids: Sequence[str], after: int, up_to: int
    ) -> list[str]:
        """Per room, the newest event sent by a user of ``server_name`` with
        ``after < stream_ordering <= up_to`` (shown events only), oldest first."""
        found: list[tuple[int, str]] = []
        for room_id in room_ids:
            row = await self.database.fetch_one(
                "SELECT stream_ordering, event_id FROM events WHERE room_id = ?"
                " AND stream_ordering > ? AND stream_ordering <= ? AND sender LIKE ?"
                " AND outlier = FALSE AND rejected = FALSE AND soft_failed = FALSE"
                " ORDER BY stream_ordering DESC LIMIT 1",
                room_id,
                after,
                up_to,
                "%:" + server_name,
            )
            if row is not None:
                found.append((int(row[0]), row[1]))
        return [event_id for _, event_id in sorted(found)]
