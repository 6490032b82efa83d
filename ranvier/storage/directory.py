"""Reads for the room directory, space hierarchies and room summaries, and the
OpenID token table.

A directory chunk is built from a room's current state (the few state events
with an empty state key that describe it) and its joined-member count. Both
come from indexed lookups by room ID (``current_state`` primary key,
``room_memberships_room``), batched for many rooms at once: the cost of a
``/publicRooms`` page is two queries over the *published* rooms only (their
summary state rows and their joined-member index entries), never a scan of
every room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ranvier.storage.engine import Database, placeholders

#: The state a directory chunk or room summary is made of (all with state key "").
SUMMARY_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
)
#: Rooms per IN (...) list: well under both engines' bound parameter limits.
BATCH = 400


class DirectoryStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def published_room_ids(self) -> list[str]:
        """Rooms in this server's directory (through the ``rooms_public`` index)."""
        rows = await self.database.fetch_all(
            "SELECT room_id FROM rooms WHERE is_public = ? ORDER BY room_id", True
        )
        return [row[0] for row in rows]

    async def summary_state(
        self, room_ids: Sequence[str]
    ) -> dict[str, dict[str, Mapping[str, Any]]]:
        """``room_id -> event type -> content`` of each room's summary state."""
        result: dict[str, dict[str, Mapping[str, Any]]] = {room_id: {} for room_id in room_ids}
        wanted = list(dict.fromkeys(room_ids))
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start : start + BATCH]
            rows = await self.database.fetch_all(
                "SELECT cs.room_id, cs.type, e.json FROM current_state cs"
                " JOIN events e ON e.event_id = cs.event_id"
                f" WHERE cs.room_id IN ({placeholders(len(chunk))}) AND cs.state_key = ?"
                f" AND cs.type IN ({placeholders(len(SUMMARY_STATE_TYPES))})",
                *chunk,
                "",
                *SUMMARY_STATE_TYPES,
            )
            for room_id, event_type, json_text in rows:
                content = orjson.loads(json_text).get("content")
                result[room_id][event_type] = content if isinstance(content, dict) else {}
        return result

    async def joined_counts(self, room_ids: Sequence[str]) -> dict[str, int]:
        """``room_id -> joined members`` (rooms with none are absent)."""
        counts: dict[str, int] = {}
        wanted = list(dict.fromkeys(room_ids))
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start : start + BATCH]
            rows = await self.database.fetch_all(
                "SELECT room_id, COUNT(*) FROM room_memberships"
                f" WHERE room_id IN ({placeholders(len(chunk))}) AND membership = ?"
                " GROUP BY room_id",
                *chunk,
                "join",
            )
            counts.update({row[0]: int(row[1]) for row in rows})
        return counts

    async def room_versions(self, room_ids: Sequence[str]) -> dict[str, str]:
        versions: dict[str, str] = {}
        wanted = list(dict.fromkeys(room_ids))
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start : start + BATCH]
            rows = await self.database.fetch_all(
                "SELECT room_id, room_version FROM rooms"
                f" WHERE room_id IN ({placeholders(len(chunk))})",
                *chunk,
            )
            versions.update({row[0]: row[1] for row in rows})
        return versions

    async def has_joined_member_on(self, room_id: str, server_name: str) -> bool:
        """Some user of ``server_name`` is joined (we are in the room): the first
        match in the room's joined-member index, not the whole member list.
        Server names hold no LIKE wildcards (Appendices, "Server Name")."""
        found = await self.database.fetch_val(
            "SELECT 1 FROM room_memberships WHERE room_id = ? AND membership = ?"
            " AND user_id LIKE ? LIMIT 1",
            room_id,
            "join",
            "%:" + server_name,
        )
        return found is not None

    # --- OpenID ---------------------------------------------------------------------------

    async def add_openid_token(
        self, token: str, user_id: str, expires_ts: int, now_ms: int
    ) -> None:
        """Store a new token, dropping the expired ones (indexed by expiry)."""
        async with self.database.transaction() as txn:
            await txn.execute("DELETE FROM openid_tokens WHERE expires_ts <= ?", now_ms)
            await txn.execute(
                "INSERT INTO openid_tokens (token, user_id, expires_ts) VALUES (?, ?, ?)",
                token,
                user_id,
                expires_ts,
            )

    async def openid_token_user(self, token: str, now_ms: int) -> str | None:
        """The user of a token that has not expired yet."""
        user_id = await self.database.fetch_val(
            "SELECT user_id FROM openid_tokens WHERE token = ? AND expires_ts > ?", token, now_ms
        )
        return user_id if isinstance(user_id, str) else None
