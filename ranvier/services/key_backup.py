"""Server-side key backups (Client-Server API, "Server-side key backups";
OpenAPI key_backup.yaml).

The server stores encrypted megolm session keys it cannot read. Per session
it keeps the better of two uploads (modules/end_to_end_encryption.md): the
verified one; with equal ``is_verified``, the lower ``first_message_index``;
then the lower ``forwarded_count``. Keys are only written to the current
(latest) version: another gives 403 ``M_WRONG_ROOM_KEYS_VERSION``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ranvier.errors import MatrixError
from ranvier.storage.engine import Transaction
from ranvier.storage.key_backup import BackupKeyRow, BackupVersionRow, KeyBackupStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

MAX_AUTH_DATA_BYTES = 64 * 1024
MAX_ID_LENGTH = 255
#: The one backup algorithm the spec defines (modules/end_to_end_encryption.md,
#: "Backup algorithm: m.megolm_backup.v1.curve25519-aes-sha2").
CURVE25519_BACKUP = "m.megolm_backup.v1.curve25519-aes-sha2"


def check_auth_data(algorithm: str, auth_data: dict[str, Any]) -> None:
    """definitions/key_backup_auth_data.yaml for the curve25519 algorithm:
    ``public_key`` (required, string) and ``signatures`` (Signed JSON). Other
    algorithms' auth_data is opaque (as Synapse, which checks none)."""
    if algorithm != CURVE25519_BACKUP:
        return
    public_key = auth_data.get("public_key")
    if public_key is None:
        raise MatrixError(400, "M_MISSING_PARAM", "'auth_data.public_key' is required.")
    if not isinstance(public_key, str) or not public_key:
        raise MatrixError(400, "M_BAD_JSON", "'auth_data.public_key' must be a non-empty string.")
    signatures = auth_data.get("signatures")
    if signatures is not None and not (
        isinstance(signatures, dict)
        and all(
            isinstance(sigs, dict) and all(isinstance(sig, str) for sig in sigs.values())
            for sigs in signatures.values()
        )
    ):
        raise MatrixError(
            400, "M_BAD_JSON", "'auth_data.signatures' must map user IDs to key IDs to strings."
        )


def should_replace(current: BackupKeyRow | None, new: BackupKeyRow) -> bool:
    """Whether ``new`` is a better backup of the session than ``current``."""
    if current is None:
        return True
    if current.is_verified != new.is_verified:
        return new.is_verified
    if current.first_message_index != new.first_message_index:
        return new.first_message_index < current.first_message_index
    return new.forwarded_count < current.forwarded_count


def _int_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be a non-negative integer.")
    return value


def parse_key_backup_data(room_id: str, session_id: str, data: object) -> BackupKeyRow:
    """definitions/key_backup_data.yaml."""
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "Key backup data must be an object.")
    if not room_id or len(room_id) > MAX_ID_LENGTH or not session_id or len(session_id) > MAX_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid room or session ID.")
    is_verified = data.get("is_verified")
    if not isinstance(is_verified, bool):
        raise MatrixError(400, "M_BAD_JSON", "'is_verified' must be a boolean.")
    session_data = data.get("session_data")
    if not isinstance(session_data, dict):
        raise MatrixError(400, "M_BAD_JSON", "'session_data' must be an object.")
    return BackupKeyRow(
        room_id,
        session_id,
        _int_field(data, "first_message_index"),
        _int_field(data, "forwarded_count"),
        is_verified,
        orjson.dumps(session_data).decode(),
    )


def parse_room_key_backup(room_id: str, value: object) -> list[BackupKeyRow]:
    """A RoomKeyBackup object (``{"sessions": {sessionId: KeyBackupData}}``)."""
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), dict):
        raise MatrixError(400, "M_BAD_JSON", "A room's keys must be {'sessions': {...}}.")
    return [
        parse_key_backup_data(room_id, session_id, data)
        for session_id, data in value["sessions"].items()
    ]


def parse_key_backup(body: dict[str, Any]) -> list[BackupKeyRow]:
    """The body of ``PUT /room_keys/keys``: ``{"rooms": {roomId: RoomKeyBackup}}``."""
    rooms = body.get("rooms")
    if not isinstance(rooms, dict):
        raise MatrixError(400, "M_BAD_JSON", "'rooms' must be an object.")
    keys: list[BackupKeyRow] = []
    for room_id, value in rooms.items():
        keys += parse_room_key_backup(room_id, value)
    return keys


def _key_body(key: BackupKeyRow) -> dict[str, Any]:
    return {
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": orjson.loads(key.session_data),
    }


def parse_version(version: str | None) -> int | None:
    """A version string → its number; None for anything that names no version."""
    if version is None or not version.isdigit() or len(version) > 18:
        return None
    return int(version)


class KeyBackupService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = KeyBackupStore(hs.database)

    @staticmethod
    def _check_version_body(body: dict[str, Any]) -> tuple[str, str]:
        algorithm = body.get("algorithm")
        if not isinstance(algorithm, str) or not algorithm:
            raise MatrixError(400, "M_BAD_JSON", "'algorithm' must be a string.")
        auth_data = body.get("auth_data")
        if not isinstance(auth_data, dict):
            raise MatrixError(400, "M_BAD_JSON", "'auth_data' must be an object.")
        check_auth_data(algorithm, auth_data)
        encoded = orjson.dumps(auth_data).decode()
        if len(encoded) > MAX_AUTH_DATA_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "'auth_data' is too large.")
        return algorithm, encoded

    async def create_version(self, user_id: str, body: dict[str, Any]) -> str:
        algorithm, auth_data = self._check_version_body(body)
        async with self.hs.database.transaction() as txn:
            version = await self.store.create_version(txn, user_id, algorithm, auth_data)
        return str(version)

    async def _version(self, user_id: str, version: str | None) -> BackupVersionRow:
        """The named live version (the current one for None); 404 M_NOT_FOUND otherwise."""
        number = parse_version(version)
        if version is not None and number is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown backup version.")
        row = await self.store.get_version(user_id, number)
        if row is None:
            if version is None:
                raise MatrixError(404, "M_NOT_FOUND", "No current backup version.")
            raise MatrixError(404, "M_NOT_FOUND", "Unknown backup version.")
        return row

    async def _required_version(self, user_id: str, version: str | None) -> BackupVersionRow:
        """The key endpoints' ``version`` query parameter (required): 400
        M_MISSING_PARAM without it, else as :meth:`_version`."""
        if version is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'version' query parameter.")
        return await self._version(user_id, version)

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        row = await self._version(user_id, version)
        return {
            "algorithm": row.algorithm,
            "auth_data": orjson.loads(row.auth_data),
            "count": await self.store.count_keys(user_id, row.version),
            "etag": str(row.etag),
            "version": str(row.version),
        }

    async def update_version(self, user_id: str, version: str, body: dict[str, Any]) -> None:
        algorithm, auth_data = self._check_version_body(body)
        body_version = body.get("version")
        if body_version is not None and body_version != version:
            raise MatrixError(400, "M_INVALID_PARAM", "Version in body does not match the path.")
        row = await self._version(user_id, version)
        if algorithm != row.algorithm:
            raise MatrixError(400, "M_INVALID_PARAM", "Algorithm does not match.")
        async with self.hs.database.transaction() as txn:
            await self.store.update_version(txn, user_id, row.version, auth_data)

    async def delete_version(self, user_id: str, version: str) -> None:
        number = parse_version(version)
        if number is not None:
            async with self.hs.database.transaction() as txn:
                if await self.store.delete_version(txn, user_id, number):
                    return
        raise MatrixError(404, "M_NOT_FOUND", "Unknown backup version.")

    async def _writable_version(self, user_id: str, version: str | None) -> BackupVersionRow:
        row = await self._required_version(user_id, version)
        current = await self.store.get_version(user_id, None)
        if current is not None and current.version != row.version:
            raise MatrixError(
                403,
                "M_WRONG_ROOM_KEYS_VERSION",
                "Wrong backup version.",
                current_version=str(current.version),
            )
        return row

    async def put_keys(
        self, user_id: str, version: str | None, keys: list[BackupKeyRow]
    ) -> dict[str, Any]:
        """Store keys by the replacement rules; ``{"etag", "count"}``."""
        row = await self._writable_version(user_id, version)
        async with self.hs.database.transaction() as txn:
            current = await self.store.get_version(user_id, None, txn)
            if current is None or current.version != row.version:
                raise MatrixError(
                    403,
                    "M_WRONG_ROOM_KEYS_VERSION",
                    "Wrong backup version.",
                    current_version=str(current.version) if current else None,
                )
            changed = False
            for key in keys:
                existing = await self.store.get_keys(
                    user_id, row.version, key.room_id, key.session_id, txn
                )
                if should_replace(existing[0] if existing else None, key):
                    await self.store.put_key(txn, user_id, row.version, key)
                    changed = True
            if changed:
                await self.store.bump_etag(txn, user_id, row.version)
            count = await self.store.count_keys(user_id, row.version, txn)
            etag = await self._etag(txn, user_id, row.version)
        return {"etag": str(etag), "count": count}

    async def _etag(self, txn: Transaction, user_id: str, version: int) -> int:
        """The version's etag as this transaction leaves it (a concurrent writer's
        bump included, so two writers never answer the same new etag)."""
        row = await self.store.get_version(user_id, version, txn)
        return row.etag if row is not None else 0

    async def get_keys(
        self,
        user_id: str,
        version: str | None,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        row = await self._required_version(user_id, version)
        keys = await self.store.get_keys(user_id, row.version, room_id, session_id)
        if session_id is not None:
            if not keys:
                raise MatrixError(404, "M_NOT_FOUND", "Key not found.")
            return _key_body(keys[0])
        rooms: dict[str, Any] = {}
        for key in keys:
            rooms.setdefault(key.room_id, {"sessions": {}})["sessions"][key.session_id] = _key_body(key)
        if room_id is not None:
            room: dict[str, Any] = rooms.get(room_id, {"sessions": {}})
            return room
        return {"rooms": rooms}

    async def delete_keys(
        self,
        user_id: str,
        version: str | None,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> dict[str, Any]:
        row = await self._required_version(user_id, version)
        async with self.hs.database.transaction() as txn:
            deleted = await self.store.delete_keys(txn, user_id, row.version, room_id, session_id)
            if deleted:
                await self.store.bump_etag(txn, user_id, row.version)
            count = await self.store.count_keys(user_id, row.version, txn)
            etag = await self._etag(txn, user_id, row.version)
        return {"etag": str(etag), "count": count}
