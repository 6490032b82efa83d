"""Accounts storage: users, devices, access/refresh tokens, registration tokens,
User-Interactive Authentication sessions. SQL only; no policy.

Methods that must be atomic with other writes take a ``txn``; the rest open
their own transaction. Deleting tokens returns the deleted access tokens'
strings so the service can drop them from its cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from ranvier.storage.engine import Database, Queryable, Row, Transaction, placeholders, upsert_sql


@dataclass(frozen=True, slots=True)
class UserRow:
    user_id: str
    password_hash: str | None
    created_ts: int
    is_admin: bool
    is_guest: bool
    deactivated: bool


@dataclass(frozen=True, slots=True)
class DeviceRow:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


@dataclass(frozen=True, slots=True)
class AccessTokenRow:
    id: int
    token: str
    user_id: str
    device_id: str | None
    valid_until_ms: int | None
    refresh_token_id: int | None
    used: bool
    is_guest: bool
    deactivated: bool


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    id: int
    token: str
    user_id: str
    device_id: str
    next_token_id: int | None


@dataclass(frozen=True, slots=True)
class RegistrationTokenRow:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None


@dataclass(frozen=True, slots=True)
class UiAuthSessionRow:
    session_id: str
    created_ts: int
    uri: str
    method: str
    clientdict: str
    user_id: str | None


_USER_COLUMNS = "user_id, password_hash, created_ts, is_admin, is_guest, deactivated"


def _user(row: Row) -> UserRow:
    return UserRow(
        row[0], row[1], int(row[2]), bool(row[3]), bool(row[4]), bool(row[5])
    )


def _device(row: Row) -> DeviceRow:
    return DeviceRow(row[0], row[1], row[2], row[3], row[4])


def _refresh(row: Row) -> RefreshTokenRow:
    return RefreshTokenRow(int(row[0]), row[1], row[2], row[3], row[4])


class AccountsStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    # --- users -----------------------------------------------------------------------

    async def create_user(
        self,
        txn: Transaction,
        user_id: str,
        password_hash: str | None,
        created_ts: int,
        *,
        is_admin: bool = False,
        is_guest: bool = False,
    ) -> bool:
        """Insert a user; False (and nothing written) if the ID is taken."""
        inserted = await txn.execute(
            "INSERT INTO users (user_id, password_hash, created_ts, is_admin, is_guest) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO NOTHING",
            user_id,
            password_hash,
            created_ts,
            is_admin,
            is_guest,
        )
        return inserted == 1

    async def get_user(self, user_id: str, db: Queryable | None = None) -> UserRow | None:
        row = await (db or self.db).fetch_one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", user_id
        )
        return None if row is None else _user(row)

    async def find_users_case_insensitive(
        self, user_id: str, db: Queryable | None = None
    ) -> list[UserRow]:
        rows = await (db or self.db).fetch_all(
            f"SELECT {_USER_COLUMNS} FROM users WHERE lower(user_id) = lower(?) ORDER BY user_id",
            user_id,
        )
        return [_user(row) for row in rows]

    async def set_password_hash(self, txn: Transaction, user_id: str, password_hash: str) -> None:
        await txn.execute(
            "UPDATE users SET password_hash = ? WHERE user_id = ?", password_hash, user_id
        )

    async def set_admin(self, user_id: str, is_admin: bool) -> bool:
        return (
            await self.db.execute("UPDATE users SET is_admin = ? WHERE user_id = ?", is_admin, user_id)
            == 1
        )

    async def set_deactivated(self, txn: Transaction, user_id: str) -> None:
        await txn.execute("UPDATE users SET deactivated = ? WHERE user_id = ?", True, user_id)

    # --- devices ---------------------------------------------------------------------

    async def get_device(
        self, user_id: str, device_id: str, db: Queryable | None = None
    ) -> DeviceRow | None:
        row = await (db or self.db).fetch_one(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices "
            "WHERE user_id = ? AND device_id = ?",
            user_id,
            device_id,
        )
        return None if row is None else _device(row)

    async def get_devices(self, user_id: str, db: Queryable | None = None) -> list[DeviceRow]:
        rows = await (db or self.db).fetch_all(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices "
            "WHERE user_id = ? ORDER BY device_id",
            user_id,
        )
        return [_device(row) for row in rows]

    async def upsert_device(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str,
        initial_display_name: str | None,
        last_seen_ts: int,
        last_seen_ip: str | None,
    ) -> bool:
        """Create the device, or record that it was seen; True if it was created.

        An existing device keeps its display name (``initial_device_display_name``
        is "ignored if device_id corresponds to a known device").
        """
        existed = await self.get_device(user_id, device_id, txn) is not None
        await txn.execute(
            upsert_sql(
                "devices",
                ("user_id", "device_id"),
                ("user_id", "device_id", "display_name", "last_seen_ts", "last_seen_ip"),
                ("last_seen_ts", "last_seen_ip"),
            ),
            user_id,
            device_id,
            initial_display_name,
            last_seen_ts,
            last_seen_ip,
        )
        return not existed

    async def delete_devices(
        self, txn: Transaction, user_id: str, device_ids: list[str] | None = None
    ) -> list[str]:
        """Delete devices (all of the user's when ``device_ids`` is None) with their
        access and refresh tokens; the deleted access tokens."""
        tokens = await self.delete_tokens(txn, user_id, device_ids)
        if device_ids is None:
            await txn.execute("DELETE FROM devices WHERE user_id = ?", user_id)
        elif device_ids:
            await txn.execute(
                f"DELETE FROM devices WHERE user_id = ? AND device_id IN ({placeholders(len(device_ids))})",
                user_id,
                *device_ids,
            )
        return tokens

    # --- access and refresh tokens ---------------------------------------------------

    async def add_refresh_token(
        self, txn: Transaction, user_id: str, device_id: str, token: str
    ) -> int:
        token_id = await txn.fetch_val(
            "INSERT INTO refresh_tokens (token, user_id, device_id) VALUES (?, ?, ?) RETURNING id",
            token,
            user_id,
            device_id,
        )
        return int(token_id)

    async def add_access_token(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str | None,
        token: str,
        valid_until_ms: int | None,
        refresh_token_id: int | None,
    ) -> int:
        token_id = await txn.fetch_val(
            "INSERT INTO access_tokens (token, user_id, device_id, valid_until_ms, refresh_token_id) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            token,
            user_id,
            device_id,
            valid_until_ms,
            refresh_token_id,
        )
        return int(token_id)

    async def get_access_token(self, token: str) -> AccessTokenRow | None:
        row = await self.db.fetch_one(
            "SELECT t.id, t.token, t.user_id, t.device_id, t.valid_until_ms, t.refresh_token_id, "
            "t.used, u.is_guest, u.deactivated "
            "FROM access_tokens AS t JOIN users AS u ON u.user_id = t.user_id WHERE t.token = ?",
            token,
        )
        if row is None:
            return None
        return AccessTokenRow(
            int(row[0]),
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            bool(row[6]),
            bool(row[7]),
            bool(row[8]),
        )

    async def get_refresh_token(
        self, token: str, db: Queryable | None = None
    ) -> RefreshTokenRow | None:
        row = await (db or self.db).fetch_one(
            "SELECT id, token, user_id, device_id, next_token_id FROM refresh_tokens WHERE token = ?",
            token,
        )
        return None if row is None else _refresh(row)

    async def mark_access_token_used(
        self, access_token_id: int, refresh_token_id: int | None
    ) -> list[str]:
        """Record the first use of an access token. If it came from a refresh, the
        refresh token that was spent for it is now revoked, with its access
        tokens; returns those access tokens."""
        async with self.db.transaction() as txn:
            await txn.execute("UPDATE access_tokens SET used = ? WHERE id = ?", True, access_token_id)
            if refresh_token_id is None:
                return []
            return await self.revoke_replaced_refresh_tokens(txn, refresh_token_id)

    async def revoke_replaced_refresh_tokens(
        self, txn: Transaction, refresh_token_id: int
    ) -> list[str]:
        """Delete the refresh tokens that ``refresh_token_id`` replaced, and their
        access tokens; returns those access tokens."""
        old_ids = [
            int(row[0])
            for row in await txn.fetch_all(
                "SELECT id FROM refresh_tokens WHERE next_token_id = ?", refresh_token_id
            )
        ]
        return await self._delete_refresh_tokens(txn, old_ids)

    async def _delete_refresh_tokens(self, txn: Transaction, ids: list[int]) -> list[str]:
        if not ids:
            return []
        marks = placeholders(len(ids))
        tokens = [
            row[0]
            for row in await txn.fetch_all(
                f"SELECT token FROM access_tokens WHERE refresh_token_id IN ({marks})", *ids
            )
        ]
        await txn.execute(f"DELETE FROM access_tokens WHERE refresh_token_id IN ({marks})", *ids)
        await txn.execute(f"DELETE FROM refresh_tokens WHERE id IN ({marks})", *ids)
        return tokens

    async def replace_refresh_token(
        self, txn: Transaction, old_id: int, new_id: int
    ) -> list[str]:
        """Point the spent refresh token ``old_id`` at its replacement ``new_id``.

        A replacement issued earlier that was never used (the client lost the
        answer and refreshes again) is deleted with its access tokens; those
        are returned.
        """
        previous = await txn.fetch_val(
            "SELECT next_token_id FROM refresh_tokens WHERE id = ?", old_id
        )
        revoked = await self._delete_refresh_tokens(txn, [int(previous)] if previous else [])
        await txn.execute(
            "UPDATE refresh_tokens SET next_token_id = ? WHERE id = ?", new_id, old_id
        )
        return revoked

    async def delete_access_token(self, txn: Transaction, access_token_id: int) -> None:
        await txn.execute("DELETE FROM access_tokens WHERE id = ?", access_token_id)

    async def delete_tokens(
        self,
        txn: Transaction,
        user_id: str,
        device_ids: list[str] | None = None,
        *,
        except_access_token_id: int | None = None,
    ) -> list[str]:
        """Delete the access and refresh tokens of the user's devices (all devices
        when ``device_ids`` is None), keeping ``except_access_token_id`` and its
        refresh token; the deleted access tokens."""
        if device_ids is not None and not device_ids:
            return []
        where = "user_id = ?"
        args: list[object] = [user_id]
        if device_ids is not None:
            where += f" AND device_id IN ({placeholders(len(device_ids))})"
            args.extend(device_ids)
        keep_refresh_id = None
        if except_access_token_id is not None:
            keep_refresh_id = await txn.fetch_val(
                "SELECT refresh_token_id FROM access_tokens WHERE id = ?", except_access_token_id
            )
        access_where, refresh_where = where, where
        access_args, refresh_args = list(args), list(args)
        if except_access_token_id is not None:
            access_where += " AND id <> ?"
            access_args.append(except_access_token_id)
        if keep_refresh_id is not None:
            refresh_where += " AND id <> ?"
            refresh_args.append(int(keep_refresh_id))
        tokens = [
            row[0]
            for row in await txn.fetch_all(
                f"SELECT token FROM access_tokens WHERE {access_where}", *access_args
            )
        ]
        await txn.execute(f"DELETE FROM access_tokens WHERE {access_where}", *access_args)
        await txn.execute(f"DELETE FROM refresh_tokens WHERE {refresh_where}", *refresh_args)
        return tokens

    # --- registration tokens ---------------------------------------------------------

    async def create_registration_token(
        self, token: str, uses_allowed: int | None, expiry_time: int | None
    ) -> bool:
        """False if the token exists already."""
        return (
            await self.db.execute(
                "INSERT INTO registration_tokens (token, uses_allowed, expiry_time) "
                "VALUES (?, ?, ?) ON CONFLICT (token) DO NOTHING",
                token,
                uses_allowed,
                expiry_time,
            )
            == 1
        )

    async def get_registration_token(
        self, token: str, db: Queryable | None = None
    ) -> RegistrationTokenRow | None:
        row = await (db or self.db).fetch_one(
            "SELECT token, uses_allowed, pending, completed, expiry_time "
            "FROM registration_tokens WHERE token = ?",
            token,
        )
        if row is None:
            return None
        return RegistrationTokenRow(row[0], row[1], int(row[2]), int(row[3]), row[4])

    async def reserve_registration_token(self, txn: Transaction, token: str, now_ms: int) -> bool:
        """Count one more registration in progress with ``token`` if it is still
        valid at ``now_ms`` (one statement, so concurrent uses cannot overshoot)."""
        return (
            await txn.execute(
                "UPDATE registration_tokens SET pending = pending + 1 WHERE token = ? "
                "AND (uses_allowed IS NULL OR pending + completed < uses_allowed) "
                "AND (expiry_time IS NULL OR expiry_time > ?)",
                token,
                now_ms,
            )
            == 1
        )

    async def complete_registration_token(self, txn: Transaction, token: str) -> None:
        await txn.execute(
            "UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1 "
            "WHERE token = ? AND pending > 0",
            token,
        )

    # --- user-interactive authentication sessions ------------------------------------

    async def create_ui_auth_session(
        self,
        session_id: str,
        created_ts: int,
        uri: str,
        method: str,
        clientdict: str,
        user_id: str | None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO ui_auth_sessions (session_id, created_ts, uri, method, clientdict, user_id) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            session_id,
            created_ts,
            uri,
            method,
            clientdict,
            user_id,
        )

    async def get_ui_auth_session(self, session_id: str) -> UiAuthSessionRow | None:
        row = await self.db.fetch_one(
            "SELECT session_id, created_ts, uri, method, clientdict, user_id "
            "FROM ui_auth_sessions WHERE session_id = ?",
            session_id,
        )
        if row is None:
            return None
        return UiAuthSessionRow(row[0], int(row[1]), row[2], row[3], row[4], row[5])

    async def set_ui_auth_clientdict(self, session_id: str, clientdict: str) -> None:
        await self.db.execute(
            "UPDATE ui_auth_sessions SET clientdict = ? WHERE session_id = ?", clientdict, session_id
        )

    async def get_ui_auth_stages(
        self, session_id: str, db: Queryable | None = None
    ) -> dict[str, str]:
        """Completed stage type → its result (JSON text)."""
        rows = await (db or self.db).fetch_all(
            "SELECT stage_type, result FROM ui_auth_session_stages WHERE session_id = ?",
            session_id,
        )
        return {row[0]: row[1] for row in rows}

    async def add_ui_auth_stage(
        self, txn: Transaction, session_id: str, stage_type: str, result: str
    ) -> None:
        await txn.execute(
            upsert_sql(
                "ui_auth_session_stages",
                ("session_id", "stage_type"),
                ("session_id", "stage_type", "result"),
            ),
            session_id,
            stage_type,
            result,
        )

    async def delete_ui_auth_session(self, txn: Transaction, session_id: str) -> None:
        await txn.execute("DELETE FROM ui_auth_session_stages WHERE session_id = ?", session_id)
        await txn.execute("DELETE FROM ui_auth_sessions WHERE session_id = ?", session_id)

    async def expired_ui_auth_sessions(self, created_before_ts: int) -> list[str]:
        rows = await self.db.fetch_all(
            "SELECT session_id FROM ui_auth_sessions WHERE created_ts < ?", created_before_ts
        )
        return [row[0] for row in rows]

    async def release_registration_token(self, txn: Transaction, token: str) -> None:
        """A registration in progress with ``token`` was abandoned."""
        await txn.execute(
            "UPDATE registration_tokens SET pending = pending - 1 WHERE token = ? AND pending > 0",
            token,
        )
