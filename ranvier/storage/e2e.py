"""End-to-end encryption storage: device keys, one-time and fallback keys,
cross-signing keys and signatures, the ``device_lists`` stream and the
``to_device`` inbox. SQL only; no policy (see ranvier/services/e2e_keys.py).

Key objects are kept as the JSON text the client uploaded; the service
parses and validates them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ranvier.storage.cache import ReadCache
from ranvier.storage.engine import (
    Database,
    Queryable,
    Transaction,
    next_stream_position,
    next_stream_positions,
    placeholders,
    upsert_sql,
)

DEVICE_LISTS_STREAM = "device_lists"
TO_DEVICE_STREAM = "to_device"
# Per-device rows forgotten with the device.
_DEVICE_TABLES = (
    "e2e_device_keys",
    "e2e_one_time_keys",
    "e2e_fallback_keys",
    "device_inbox",
    "to_device_txns",
)
# Bound for IN (...) lists.
_CHUNK = 500


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


@dataclass(frozen=True, slots=True)
class DeviceKeysRow:
    user_id: str
    device_id: str
    #: The uploaded device_keys JSON, or None for a device that has uploaded none.
    key_json: str | None
    display_name: str | None


@dataclass(frozen=True, slots=True)
class SignatureRow:
    signer_user_id: str
    signer_key_id: str
    target_user_id: str
    target_key_id: str
    signature: str


class E2eStore:
    """One per homeserver (``hs.e2e_keys.store``): it holds the caches below."""

    def __init__(self, database: Database, cache_size: int = 10_000) -> None:
        self.db = database
        # Every /sync of a device reports these two (sync.yaml); kept in memory
        # per (user_id, device_id), forgotten by the writers below once committed.
        self._one_time_key_counts: ReadCache[tuple[str, str], dict[str, int]] = ReadCache(
            cache_size
        )
        self._unused_fallback_types: ReadCache[tuple[str, str], list[str]] = ReadCache(cache_size)
        database.on_positions_reset(self._one_time_key_counts.clear)
        database.on_positions_reset(self._unused_fallback_types.clear)

    def _forget_keys_after_commit(
        self, txn: Transaction, user_id: str, device_ids: Sequence[str] | None
    ) -> None:
        """The devices' one-time or fallback keys change in ``txn`` (None: all
        the user's devices)."""

        def forget() -> None:
            for cache in (self._one_time_key_counts, self._unused_fallback_types):
                if device_ids is None:
                    cache.invalidate_where(lambda key: key[0] == user_id)
                else:
                    cache.invalidate((user_id, device_id) for device_id in device_ids)

        txn.call_after_commit(forget)

    # --- devices (the accounts area's table; display name and last seen) ---------------

    async def set_device_display_name(
        self, txn: Transaction, user_id: str, device_id: str, display_name: str | None
    ) -> bool:
        return (
            await txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                display_name,
                user_id,
                device_id,
            )
            == 1
        )

    async def set_device_last_seen(
        self, user_id: str, device_id: str, ts: int, ip: str | None
    ) -> None:
        await self.db.execute(
            "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND device_id = ?",
            ts,
            ip,
            user_id,
            device_id,
        )

    async def existing_device_ids(
        self, user_id: str, device_ids: Sequence[str], db: Queryable | None = None
    ) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(device_ids)):
            rows = await (db or self.db).fetch_all(
                f"SELECT device_id FROM devices WHERE user_id = ? AND device_id IN ({placeholders(len(chunk))})",
                user_id,
                *chunk,
            )
            found.update(row[0] for row in rows)
        return found

    async def delete_device_data(
        self, txn: Transaction, user_id: str, device_ids: Sequence[str] | None
    ) -> None:
        """Forget everything end-to-end of these devices (None: all the user's
        devices): keys, signatures of them and by them, inbox."""
        self._forget_keys_after_commit(txn, user_id, device_ids)
        if device_ids is None:
            for table in _DEVICE_TABLES:
                await txn.execute(f"DELETE FROM {table} WHERE user_id = ?", user_id)
            # Signatures of the devices and by the devices (of the master key);
            # those of and by the cross-signing keys stay.
            await txn.execute(
                "DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key_id NOT IN "
                "(SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ?)",
                user_id,
                user_id,
            )
            await txn.execute(
                "DELETE FROM e2e_signatures WHERE signer_user_id = ? AND signer_key_id NOT IN "
                "(SELECT 'ed25519:' || public_key FROM e2e_cross_signing_keys WHERE user_id = ?)",
                user_id,
                user_id,
            )
            return
        for chunk in _chunks(list(device_ids)):
            marks = placeholders(len(chunk))
            for table in _DEVICE_TABLES:
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = ? AND device_id IN ({marks})",
                    user_id,
                    *chunk,
                )
            await txn.execute(
                f"DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key_id IN ({marks})",
                user_id,
                *chunk,
            )
            # A device's signature of its user's master key goes with the device.
            await txn.execute(
                f"DELETE FROM e2e_signatures WHERE signer_user_id = ? AND signer_key_id IN ({marks})",
                user_id,
                *[f"ed25519:{device_id}" for device_id in chunk],
            )

    # --- device keys -------------------------------------------------------------------

    async def get_device_keys(
        self, user_id: str, device_id: str, db: Queryable | None = None
    ) -> str | None:
        value = await (db or self.db).fetch_val(
            "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
            user_id,
            device_id,
        )
        return None if value is None else str(value)

    async def set_device_keys(
        self, txn: Transaction, user_id: str, device_id: str, key_json: str
    ) -> None:
        await txn.execute(
            upsert_sql("e2e_device_keys", ("user_id", "device_id"), ("user_id", "device_id", "key_json")),
            user_id,
            device_id,
            key_json,
        )

    async def devices_with_keys(
        self, user_id: str, device_ids: Sequence[str] | None = None
    ) -> list[DeviceKeysRow]:
        """The user's existing devices (all, or those named) with their uploaded keys."""
        sql = (
            "SELECT d.user_id, d.device_id, k.key_json, d.display_name FROM devices AS d "
            "LEFT JOIN e2e_device_keys AS k ON k.user_id = d.user_id AND k.device_id = d.device_id "
            "WHERE d.user_id = ?"
        )
        if device_ids is None:
            rows = await self.db.fetch_all(sql + " ORDER BY d.device_id", user_id)
        else:
            if not device_ids:
                return []
            rows = []
            for chunk in _chunks(list(device_ids)):
                rows += await self.db.fetch_all(
                    sql + f" AND d.device_id IN ({placeholders(len(chunk))}) ORDER BY d.device_id",
                    user_id,
                    *chunk,
                )
        return [DeviceKeysRow(r[0], r[1], r[2], r[3]) for r in rows]

    # --- one-time keys ------------------------------------------------------------------

    async def get_one_time_keys(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str,
        algorithm: str,
        key_ids: Sequence[str],
    ) -> dict[str, str]:
        """key_id → JSON of the device's unclaimed keys among ``key_ids``."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(key_ids)):
            rows = await txn.fetch_all(
                "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? "
                f"AND algorithm = ? AND key_id IN ({placeholders(len(chunk))})",
                user_id,
                device_id,
                algorithm,
                *chunk,
            )
            found.update((row[0], row[1]) for row in rows)
        return found

    async def add_one_time_keys(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str,
        keys: Sequence[tuple[str, str, str]],
    ) -> None:
        """Add ``(algorithm, key_id, key_json)``; an existing key ID is left as it is."""
        if keys:
            self._forget_keys_after_commit(txn, user_id, (device_id,))
            await txn.execute_many(
                "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING",
                [(user_id, device_id, alg, key_id, key_json) for alg, key_id, key_json in keys],
            )

    async def one_time_key_counts(
        self, user_id: str, device_id: str, txn: Transaction | None = None
    ) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm (inside ``txn``: as it sees them)."""

        async def load(db: Queryable = txn or self.db) -> dict[str, int]:
            rows = await db.fetch_all(
                "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys"
                " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
                user_id,
                device_id,
            )
            return {row[0]: int(row[1]) for row in rows}

        if txn is not None:
            return await load()
        return dict(await self._one_time_key_counts.get((user_id, device_id), load))

    async def claim_one_time_key(
        self, txn: Transaction, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, str] | None:
        """Remove and return the oldest unclaimed key ``(key_id, key_json)``, or None.

        One statement deletes the row it returns, so a key is handed out once.
        SQLite has a single writer; on PostgreSQL, FOR UPDATE SKIP LOCKED makes a
        concurrent claim take the next key rather than wait for (and then miss)
        the row this transaction holds.
        """
        lock = " FOR UPDATE SKIP LOCKED" if txn.engine == "postgresql" else ""
        self._forget_keys_after_commit(txn, user_id, (device_id,))
        row = await txn.fetch_one(
            "DELETE FROM e2e_one_time_keys WHERE id = ("
            "SELECT id FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ? "
            f"ORDER BY id LIMIT 1{lock}) RETURNING key_id, key_json",
            user_id,
            device_id,
            algorithm,
        )
        return None if row is None else (row[0], row[1])

    # --- fallback keys ------------------------------------------------------------------

    async def set_fallback_key(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str,
        algorithm: str,
        key_id: str,
        key_json: str,
    ) -> None:
        """Store the device's fallback key for ``algorithm``, unused. Re-uploading the
        very same key keeps its used flag (as Synapse does)."""
        current = await txn.fetch_one(
            "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? "
            "AND algorithm = ?",
            user_id,
            device_id,
            algorithm,
        )
        if current is not None and current[0] == key_id and current[1] == key_json:
            return
        self._forget_keys_after_commit(txn, user_id, (device_id,))
        await txn.execute(
            upsert_sql(
                "e2e_fallback_keys",
                ("user_id", "device_id", "algorithm"),
                ("user_id", "device_id", "algorithm", "key_id", "key_json", "used"),
            ),
            user_id,
            device_id,
            algorithm,
            key_id,
            key_json,
            False,
        )

    async def claim_fallback_key(
        self, txn: Transaction, user_id: str, device_id: str, algorithm: str
    ) -> tuple[str, str] | None:
        """The fallback key ``(key_id, key_json)`` for ``algorithm``, now marked used."""
        self._forget_keys_after_commit(txn, user_id, (device_id,))
        row = await txn.fetch_one(
            "UPDATE e2e_fallback_keys SET used = ? WHERE user_id = ? AND device_id = ? "
            "AND algorithm = ? RETURNING key_id, key_json",
            True,
            user_id,
            device_id,
            algorithm,
        )
        return None if row is None else (row[0], row[1])

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        async def load() -> list[str]:
            rows = await self.db.fetch_all(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ? "
                "AND used = ? ORDER BY algorithm",
                user_id,
                device_id,
                False,
            )
            return [row[0] for row in rows]

        return list(await self._unused_fallback_types.get((user_id, device_id), load))

    # --- cross-signing ------------------------------------------------------------------

    async def get_cross_signing_keys(
        self, user_id: str, db: Queryable | None = None
    ) -> dict[str, tuple[str, str]]:
        """key_type → (public_key, key_json)."""
        rows = await (db or self.db).fetch_all(
            "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys WHERE user_id = ?",
            user_id,
        )
        return {row[0]: (row[1], row[2]) for row in rows}

    async def set_cross_signing_key(
        self, txn: Transaction, user_id: str, key_type: str, public_key: str, key_json: str
    ) -> None:
        await txn.execute(
            upsert_sql(
                "e2e_cross_signing_keys",
                ("user_id", "key_type"),
                ("user_id", "key_type", "public_key", "key_json"),
            ),
            user_id,
            key_type,
            public_key,
            key_json,
        )

    async def add_signatures(self, txn: Transaction, rows: Sequence[SignatureRow]) -> None:
        if rows:
            await txn.execute_many(
                upsert_sql(
                    "e2e_signatures",
                    ("target_user_id", "target_key_id", "signer_user_id", "signer_key_id"),
                    ("signer_user_id", "signer_key_id", "target_user_id", "target_key_id", "signature"),
                ),
                [
                    (r.signer_user_id, r.signer_key_id, r.target_user_id, r.target_key_id, r.signature)
                    for r in rows
                ],
            )

    async def signatures_of(self, target_user_id: str) -> list[SignatureRow]:
        """Every stored signature over the user's devices and cross-signing keys."""
        rows = await self.db.fetch_all(
            "SELECT signer_user_id, signer_key_id, target_user_id, target_key_id, signature "
            "FROM e2e_signatures WHERE target_user_id = ?",
            target_user_id,
        )
        return [SignatureRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def delete_signatures_by_signer(
        self, txn: Transaction, signer_user_id: str, signer_key_ids: Sequence[str]
    ) -> None:
        """Signatures made with replaced cross-signing keys are void."""
        for chunk in _chunks(list(signer_key_ids)):
            await txn.execute(
                "DELETE FROM e2e_signatures WHERE signer_user_id = ? "
                f"AND signer_key_id IN ({placeholders(len(chunk))})",
                signer_user_id,
                *chunk,
            )

    # --- the device_lists stream -------------------------------------------------------

    async def add_device_list_change(self, txn: Transaction, user_id: str) -> int:
        """Record that ``user_id``'s devices or keys changed; the stream position."""
        position = await next_stream_position(txn, DEVICE_LISTS_STREAM)
        await txn.execute(
            "INSERT INTO device_list_changes (stream_id, user_id) VALUES (?, ?)", position, user_id
        )
        return position

    async def users_with_device_changes(
        self, user_ids: Sequence[str], from_pos: int, to_pos: int
    ) -> set[str]:
        """Those of ``user_ids`` with a change in ``from_pos < position <= to_pos``."""
        changed: set[str] = set()
        if from_pos >= to_pos:
            return changed
        for chunk in _chunks(list(user_ids)):
            rows = await self.db.fetch_all(
                "SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > ? "
                f"AND stream_id <= ? AND user_id IN ({placeholders(len(chunk))})",
                from_pos,
                to_pos,
                *chunk,
            )
            changed.update(row[0] for row in rows)
        return changed

    # --- the to_device stream ------------------------------------------------------------

    async def claim_to_device_txn(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str,
        txn_id: str,
        now_ms: int,
        keep_ms: int = 24 * 60 * 60 * 1000,
    ) -> bool:
        """Record a sendToDevice transaction ID; False if it was seen before.
        The device's IDs older than ``keep_ms`` are forgotten on the way (a
        client retries within minutes, not days)."""
        await txn.execute(
            "DELETE FROM to_device_txns WHERE user_id = ? AND device_id = ? AND created_ts < ?",
            user_id,
            device_id,
            now_ms - keep_ms,
        )
        return (
            await txn.execute(
                "INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (user_id, device_id, txn_id) DO NOTHING",
                user_id,
                device_id,
                txn_id,
                now_ms,
            )
            == 1
        )

    async def add_to_device_messages(
        self, txn: Transaction, messages: Sequence[tuple[str, str, str]]
    ) -> int | None:
        """Queue ``(user_id, device_id, message_json)``, each at its own position, in
        order; the last position (None when there was nothing to queue)."""
        if not messages:
            return None
        positions = await next_stream_positions(txn, TO_DEVICE_STREAM, len(messages))
        await txn.execute_many(
            "INSERT INTO device_inbox (stream_id, user_id, device_id, message_json) VALUES (?, ?, ?, ?)",
            [
                (position, user_id, device_id, message_json)
                for position, (user_id, device_id, message_json) in zip(positions, messages, strict=True)
            ],
        )
        return positions[-1]

    async def delete_to_device_messages(
        self, txn: Transaction, user_id: str, device_id: str, up_to_pos: int
    ) -> int:
        return await txn.execute(
            "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
            user_id,
            device_id,
            up_to_pos,
        )

    async def to_device_messages(
        self, user_id: str, device_id: str, after_pos: int, up_to_pos: int, limit: int
    ) -> list[tuple[int, str]]:
        rows = await self.db.fetch_all(
            "SELECT stream_id, message_json FROM device_inbox WHERE user_id = ? AND device_id = ? "
            "AND stream_id > ? AND stream_id <= ? ORDER BY stream_id LIMIT ?",
            user_id,
            device_id,
            after_pos,
            up_to_pos,
            limit,
        )
        return [(int(r[0]), r[1]) for r in rows]
