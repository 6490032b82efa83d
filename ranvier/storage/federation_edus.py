"""Storage for EDUs over federation: remote users' cached device lists and
cross-signing keys, what we announced of our own users' devices, and the
to-device message IDs received per origin. SQL only; the policy is in
ranvier/services/federation/edus.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ranvier.storage.e2e import DeviceKeysRow
from ranvier.storage.engine import Database, Queryable, Transaction, placeholders, upsert_sql

#: The stream the stream_ids of our outbound m.device_list_update EDUs come from.
OUTBOUND_DEVICE_LIST_STREAM = "device_list_outbound"
DEVICE = "device"
CROSS_SIGNING = "cross_signing"


@dataclass(frozen=True, slots=True)
class RemoteDeviceList:
    user_id: str
    stream_id: int
    stale: bool


@dataclass(frozen=True, slots=True)
class Announced:
    stream_id: int
    content_hash: str


class FederationEduStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    # --- remote device lists ----------------------------------------------------------

    async def get_device_list(
        self, user_id: str, db: Queryable | None = None
    ) -> RemoteDeviceList | None:
        row = await (db or self.db).fetch_one(
            "SELECT stream_id, stale FROM remote_device_lists WHERE user_id = ?", user_id
        )
        return None if row is None else RemoteDeviceList(user_id, int(row[0]), bool(row[1]))

    async def mark_stale(self, user_id: str) -> None:
        """Keep the last stream_id, but the list needs a resync."""
        await self.db.execute(
            "INSERT INTO remote_device_lists (user_id, stream_id, stale) VALUES (?, 0, TRUE) "
            "ON CONFLICT (user_id) DO UPDATE SET stale = TRUE",
            user_id,
        )

    async def stale_user_ids(self) -> list[str]:
        rows = await self.db.fetch_all(
            "SELECT user_id FROM remote_device_lists WHERE stale ORDER BY user_id"
        )
        return [row[0] for row in rows]

    async def _set_list(self, txn: Transaction, user_id: str, stream_id: int) -> None:
        await txn.execute(
            upsert_sql("remote_device_lists", ("user_id",), ("user_id", "stream_id", "stale")),
            user_id,
            stream_id,
            False,
        )

    async def apply_device_update(
        self,
        txn: Transaction,
        user_id: str,
        stream_id: int,
        device_id: str,
        *,
        deleted: bool,
        display_name: str | None,
        key_json: str | None,
    ) -> None:
        """One m.device_list_update applied on top of the cached list."""
        if deleted:
            await txn.execute(
                "DELETE FROM remote_devices WHERE user_id = ? AND device_id = ?",
                user_id,
                device_id,
            )
        else:
            await txn.execute(
                upsert_sql(
                    "remote_devices",
                    ("user_id", "device_id"),
                    ("user_id", "device_id", "display_name", "key_json"),
                ),
                user_id,
                device_id,
                display_name,
                key_json,
            )
        await self._set_list(txn, user_id, stream_id)

    async def replace_device_list(
        self,
        txn: Transaction,
        user_id: str,
        stream_id: int,
        devices: Iterable[tuple[str, str | None, str | None]],
        cross_signing: Mapping[str, str],
    ) -> None:
        """A resync: ``(device_id, display_name, key_json)`` rows and the
        cross-signing keys replace everything cached of the user."""
        await txn.execute("DELETE FROM remote_devices WHERE user_id = ?", user_id)
        await txn.execute_many(
            "INSERT INTO remote_devices (user_id, device_id, display_name, key_json)"
            " VALUES (?, ?, ?, ?)",
            [(user_id, *device) for device in devices],
        )
        await txn.execute("DELETE FROM remote_cross_signing_keys WHERE user_id = ?", user_id)
        for key_type, key_json in cross_signing.items():
            await self.set_cross_signing_key(txn, user_id, key_type, key_json)
        await self._set_list(txn, user_id, stream_id)

    async def devices(
        self, user_id: str, device_ids: Sequence[str] | None = None
    ) -> list[DeviceKeysRow]:
        sql = (
            "SELECT user_id, device_id, key_json, display_name FROM remote_devices"
            " WHERE user_id = ?"
        )
        args: list[str] = [user_id]
        if device_ids is not None:
            if not device_ids:
                return []
            sql += f" AND device_id IN ({placeholders(len(device_ids))})"
            args += device_ids
        rows = await self.db.fetch_all(sql + " ORDER BY device_id", *args)
        return [DeviceKeysRow(r[0], r[1], r[2], r[3]) for r in rows]

    async def cross_signing_keys(self, user_id: str) -> dict[str, str]:
        rows = await self.db.fetch_all(
            "SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = ?", user_id
        )
        return {row[0]: row[1] for row in rows}

    async def set_cross_signing_key(
        self, txn: Transaction, user_id: str, key_type: str, key_json: str
    ) -> None:
        await txn.execute(
            upsert_sql(
                "remote_cross_signing_keys",
                ("user_id", "key_type"),
                ("user_id", "key_type", "key_json"),
            ),
            user_id,
            key_type,
            key_json,
        )

    # --- what we announced of our users' devices ----------------------------------------

    async def announced(self, user_id: str) -> dict[tuple[str, str], Announced]:
        rows = await self.db.fetch_all(
            "SELECT kind, item, stream_id, content_hash FROM device_list_announced"
            " WHERE user_id = ?",
            user_id,
        )
        return {(r[0], r[1]): Announced(int(r[2]), r[3]) for r in rows}

    async def set_announced(
        self,
        txn: Transaction,
        user_id: str,
        kind: str,
        item: str,
        stream_id: int,
        content_hash: str | None,
    ) -> None:
        """``content_hash`` None: the item is gone (a deleted device); its stream_id
        is kept in a row with an empty hash, so the user's latest stays known."""
        await txn.execute(
            upsert_sql(
                "device_list_announced",
                ("user_id", "kind", "item"),
                ("user_id", "kind", "item", "stream_id", "content_hash"),
            ),
            user_id,
            kind,
            item,
            stream_id,
            content_hash or "",
        )

    async def latest_announced(self, user_id: str) -> int:
        value = await self.db.fetch_val(
            "SELECT MAX(stream_id) FROM device_list_announced WHERE user_id = ? AND kind = ?",
            user_id,
            DEVICE,
        )
        return int(value or 0)

    # --- inbound to-device de-duplication ----------------------------------------------

    async def claim_inbound_to_device(
        self,
        txn: Transaction,
        origin: str,
        message_id: str,
        now_ms: int,
        keep_ms: int = 7 * 24 * 3600 * 1000,
    ) -> bool:
        """False when ``origin`` already sent ``message_id``. The origin's IDs
        older than ``keep_ms`` are forgotten on the way (a sender retries a
        transaction for hours or days, not weeks)."""
        await txn.execute(
            "DELETE FROM federation_inbound_to_device WHERE origin = ? AND received_ts < ?",
            origin,
            now_ms - keep_ms,
        )
        inserted = await txn.execute(
            upsert_sql(
                "federation_inbound_to_device",
                ("origin", "message_id"),
                ("origin", "message_id", "received_ts"),
                (),
            ),
            origin,
            message_id,
            now_ms,
        )
        return inserted > 0
