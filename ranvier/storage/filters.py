"""Store of user filters (Client-Server API, "Filtering")."""

from __future__ import annotations

from ranvier.storage.engine import Database


class FilterStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def add_filter(self, user_id: str, filter_json: str) -> int:
        """Store a filter; its new ID (0, 1, 2... per user)."""
        async with self.database.transaction() as txn:
            highest = await txn.fetch_val(
                "SELECT MAX(filter_id) FROM user_filters WHERE user_id = ?", user_id
            )
            filter_id = 0 if highest is None else int(highest) + 1
            await txn.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                user_id,
                filter_id,
                filter_json,
            )
        return filter_id

    async def get_filter(self, user_id: str, filter_id: int) -> str | None:
        value = await self.database.fetch_val(
            "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
            user_id,
            filter_id,
        )
        return None if value is None else str(value)
