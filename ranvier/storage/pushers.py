"""Store of pushers (Client-Server API, "Push Notifications": POST /pushers/set).

A pusher is keyed by (user, app_id, pushkey). Reads are by user (indexed);
writes are small and take their own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ranvier.storage.engine import Database, Queryable, Row, placeholders, upsert_sql


@dataclass(frozen=True, slots=True)
class Pusher:
    user_id: str
    device_id: str | None
    kind: str
    app_id: str
    pushkey: str
    #: When the pushkey was last set, in ms.
    pushkey_ts: int
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    #: The client's ``data`` object, ``url`` included.
    data: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.user_id, self.app_id, self.pushkey)


_COLUMNS = (
    "user_id",
    "device_id",
    "kind",
    "app_id",
    "pushkey",
    "pushkey_ts",
    "app_display_name",
    "device_display_name",
    "profile_tag",
    "lang",
    "data",
)
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM pushers "
_UPSERT = upsert_sql(
    "pushers",
    ("user_id", "app_id", "pushkey"),
    _COLUMNS,
    tuple(c for c in _COLUMNS if c not in ("user_id", "app_id", "pushkey")),
)


def _pusher(row: Row) -> Pusher:
    return Pusher(
        user_id=row[0],
        device_id=row[1],
        kind=row[2],
        app_id=row[3],
        pushkey=row[4],
        pushkey_ts=int(row[5]),
        app_display_name=row[6],
        device_display_name=row[7],
        profile_tag=row[8],
        lang=row[9],
        data=orjson.loads(row[10]),
    )


class PushersStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def user_pushers(self, user_id: str, db: Queryable | None = None) -> list[Pusher]:
        rows = await (db or self.database).fetch_all(
            _SELECT + "WHERE user_id = ? ORDER BY id", user_id
        )
        return [_pusher(row) for row in rows]

    async def users_with_pushers(self) -> set[str]:
        rows = await self.database.fetch_all("SELECT DISTINCT user_id FROM pushers")
        return {row[0] for row in rows}

    async def set_pusher(self, pusher: Pusher, *, remove_others: bool) -> list[str]:
        """Create or update ``pusher``; with ``remove_others``, delete the pushers
        of other users with the same app_id and pushkey. The users whose pushers
        were deleted that way."""
        async with self.database.transaction() as txn:
            others: list[str] = []
            if remove_others:
                rows = await txn.fetch_all(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ? "
                    "RETURNING user_id",
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.user_id,
                )
                others = [row[0] for row in rows]
            await txn.execute(
                _UPSERT,
                pusher.user_id,
                pusher.device_id,
                pusher.kind,
                pusher.app_id,
                pusher.pushkey,
                pusher.pushkey_ts,
                pusher.app_display_name,
                pusher.device_display_name,
                pusher.profile_tag,
                pusher.lang,
                orjson.dumps(pusher.data).decode(),
            )
        return others

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        deleted = await self.database.execute(
            "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
            user_id,
            app_id,
            pushkey,
        )
        return deleted > 0

    async def delete_device_pushers(self, user_id: str, device_ids: Sequence[str] | None) -> int:
        """Delete the pushers set through these devices (None: all of the user's)."""
        if device_ids is None:
            return await self.database.execute("DELETE FROM pushers WHERE user_id = ?", user_id)
        if not device_ids:
            return 0
        return await self.database.execute(
            f"DELETE FROM pushers WHERE user_id = ? AND device_id IN ({placeholders(len(device_ids))})",
            user_id,
            *device_ids,
        )
