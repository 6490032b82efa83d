"""Server-side key backup storage (Client-Server API, "Server-side key backups").
SQL only; the replacement rules live in ranvier/services/key_backup.py."""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.engine import Database, Queryable, Row, Transaction


@dataclass(frozen=True, slots=True)
class BackupVersionRow:
    version: int
    algorithm: str
    auth_data: str
    etag: int


@dataclass(frozen=True, slots=True)
class BackupKeyRow:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: str


def _key(row: Row) -> BackupKeyRow:
    return BackupKeyRow(row[0], row[1], int(row[2]), int(row[3]), bool(row[4]), row[5])


_KEY_COLUMNS = "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"


def _keys_where(
    user_id: str, version: int, room_id: str | None, session_id: str | None
) -> tuple[str, list[object]]:
    """The WHERE clause selecting a version's keys, a room's, or one session's."""
    where = "user_id = ? AND version = ?"
    args: list[object] = [user_id, version]
    if room_id is not None:
        where += " AND room_id = ?"
        args.append(room_id)
        if session_id is not None:
            where += " AND session_id = ?"
            args.append(session_id)
    return where, args


class KeyBackupStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def create_version(
        self, txn: Transaction, user_id: str, algorithm: str, auth_data: str
    ) -> int:
        """A new version, numbered after every earlier one (deleted ones included)."""
        last = await txn.fetch_val(
            "SELECT MAX(version) FROM room_key_backup_versions WHERE user_id = ?", user_id
        )
        version = int(last or 0) + 1
        await txn.execute(
            "INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data) "
            "VALUES (?, ?, ?, ?)",
            user_id,
            version,
            algorithm,
            auth_data,
        )
        return version

    async def get_version(
        self, user_id: str, version: int | None, db: Queryable | None = None
    ) -> BackupVersionRow | None:
        """A live version, or the current (latest live) one when ``version`` is None."""
        sql = (
            "SELECT version, algorithm, auth_data, etag FROM room_key_backup_versions "
            "WHERE user_id = ? AND deleted = ?"
        )
        if version is None:
            row = await (db or self.db).fetch_one(
                sql + " ORDER BY version DESC LIMIT 1", user_id, False
            )
        else:
            row = await (db or self.db).fetch_one(sql + " AND version = ?", user_id, False, version)
        return None if row is None else BackupVersionRow(int(row[0]), row[1], row[2], int(row[3]))

    async def update_version(
        self, txn: Transaction, user_id: str, version: int, auth_data: str
    ) -> None:
        await txn.execute(
            "UPDATE room_key_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
            auth_data,
            user_id,
            version,
        )

    async def delete_version(self, txn: Transaction, user_id: str, version: int) -> bool:
        await txn.execute(
            "DELETE FROM room_key_backup_keys WHERE user_id = ? AND version = ?", user_id, version
        )
        return (
            await txn.execute(
                "UPDATE room_key_backup_versions SET deleted = ? WHERE user_id = ? AND version = ? "
                "AND deleted = ?",
                True,
                user_id,
                version,
                False,
            )
            == 1
        )

    async def bump_etag(self, txn: Transaction, user_id: str, version: int) -> None:
        await txn.execute(
            "UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
            user_id,
            version,
        )

    async def count_keys(self, user_id: str, version: int, db: Queryable | None = None) -> int:
        return int(
            await (db or self.db).fetch_val(
                "SELECT COUNT(*) FROM room_key_backup_keys WHERE user_id = ? AND version = ?",
                user_id,
                version,
            )
        )

    async def get_keys(
        self,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
        db: Queryable | None = None,
    ) -> list[BackupKeyRow]:
        where, args = _keys_where(user_id, version, room_id, session_id)
        sql = f"SELECT {_KEY_COLUMNS} FROM room_key_backup_keys WHERE {where}"
        rows = await (db or self.db).fetch_all(sql + " ORDER BY room_id, session_id", *args)
        return [_key(row) for row in rows]

    async def put_key(self, txn: Transaction, user_id: str, version: int, key: BackupKeyRow) -> None:
        await txn.execute(
            "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id, "
            "first_message_index, forwarded_count, is_verified, session_data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, version, room_id, session_id) "
            "DO UPDATE SET first_message_index = excluded.first_message_index, "
            "forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, "
            "session_data = excluded.session_data",
            user_id,
            version,
            key.room_id,
            key.session_id,
            key.first_message_index,
            key.forwarded_count,
            key.is_verified,
            key.session_data,
        )

    async def delete_keys(
        self,
        txn: Transaction,
        user_id: str,
        version: int,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> int:
        where, args = _keys_where(user_id, version, room_id, session_id)
        sql = f"DELETE FROM room_key_backup_keys WHERE {where}"
        return await txn.execute(sql, *args)
