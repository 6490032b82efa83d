"""Other servers' signing keys (Server-Server API, "Retrieving server keys").

SQL only: which keys are trusted, and for what, is decided by
ranvier/services/federation/keyring.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ranvier.storage.engine import Database, Row

_COLUMNS = (
    "server_name",
    "key_id",
    "verify_key",
    "valid_until_ts",
    "expired_ts",
    "fetched_ts",
    "key_json",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM server_keys"

# A row is replaced only by a document published to stay valid at least as
# long: a stale copy (a notary's cache, say) never overwrites a fresher one.
# A newer document is the one that moves a key to old_verify_keys, so that
# still wins.
_UPSERT = (
    f"INSERT INTO server_keys ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
    "ON CONFLICT (server_name, key_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[2:])
    + " WHERE excluded.valid_until_ts >= server_keys.valid_until_ts"
)


@dataclass(frozen=True, slots=True)
class ServerKeyRow:
    server_name: str
    #: ``ed25519:<version>``.
    key_id: str
    #: The raw 32-byte ed25519 public key.
    verify_key: bytes
    #: The key document's ``valid_until_ts`` as published.
    valid_until_ts: int
    #: Set for a key listed in ``old_verify_keys``: when it stopped being used.
    expired_ts: int | None
    #: When this server received the document (its clock, ms).
    fetched_ts: int
    #: The key document as published, with the server's own signatures.
    key_json: str


def _row(row: Row) -> ServerKeyRow:
    return ServerKeyRow(
        server_name=row[0],
        key_id=row[1],
        verify_key=bytes(row[2]),
        valid_until_ts=int(row[3]),
        expired_ts=None if row[4] is None else int(row[4]),
        fetched_ts=int(row[5]),
        key_json=row[6],
    )


class ServerKeyStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def store_keys(self, keys: Sequence[ServerKeyRow]) -> None:
        """Insert or refresh ``keys`` (from one or more documents) in one transaction."""
        if not keys:
            return
        await self.database.execute_many(
            _UPSERT,
            [
                (
                    key.server_name,
                    key.key_id,
                    key.verify_key,
                    key.valid_until_ts,
                    key.expired_ts,
                    key.fetched_ts,
                    key.key_json,
                )
                for key in keys
            ],
        )

    async def get_keys(self, server_name: str) -> list[ServerKeyRow]:
        """Every stored key of ``server_name``, ordered by key ID."""
        rows = await self.database.fetch_all(
            _SELECT + " WHERE server_name = ? ORDER BY key_id", server_name
        )
        return [_row(row) for row in rows]
