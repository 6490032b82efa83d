"""Accounts: users, devices, access and refresh tokens, User-Interactive Authentication.

Client-Server API, "Client Authentication" (legacy API): registration, login,
refresh, logout, password change and deactivation. The API layer
(ranvier/api/client/account.py, login.py) only translates HTTP; every rule
lives here.

Access tokens are random opaque strings prefixed ``rvt_`` (refresh tokens
``rvr_``), looked up through a unique index. Resolving a token to its
:class:`Requester` happens on every authenticated request, so resolved tokens
are kept in a bounded in-memory cache, dropped by the code that revokes them
(logout, device deletion, password change, deactivation, refresh rotation).
The cache is per process: with several processes, a revoked token may live on
in another process until its entry is evicted or expires from the cache
(:data:`TOKEN_CACHE_TTL_MS`).
"""

from __future__ import annotations

import secrets
import string
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ranvier.config import Config
from ranvier.core.ids import (
    MAX_IDENTIFIER_BYTES,
    UserID,
    is_mine,
    is_valid_opaque_id,
)
from ranvier.errors import MatrixError
from ranvier.services.passwords import PasswordHasher
from ranvier.services.requester import Requester
from ranvier.storage import Database, Queryable, Transaction, next_stream_position
from ranvier.storage.accounts import AccountsStore, DeviceRow, UserRow
from ranvier.storage.user_directory import set_local_profile

ACCESS_TOKEN_PREFIX = "rvt_"
REFRESH_TOKEN_PREFIX = "rvr_"
TOKEN_CACHE_SIZE = 10_000
TOKEN_CACHE_TTL_MS = 10 * 60 * 1000
# Synapse: a password longer than this is refused before it is hashed.
MAX_PASSWORD_LENGTH = 512
# Synapse's MAX_DEVICE_DISPLAY_NAME_LEN.
MAX_DEVICE_DISPLAY_NAME_LENGTH = 100
MAX_DEVICE_ID_LENGTH = 255
# User-interactive auth sessions are forgotten after this long (Synapse: 48 hours).
UI_AUTH_SESSION_LIFETIME_MS = 48 * 60 * 60 * 1000
# "Opaque Identifier Grammar, with maximum length of 64 characters".
MAX_REGISTRATION_TOKEN_LENGTH = 64

LOGIN_TYPE_PASSWORD = "m.login.password"
LOGIN_TYPE_DUMMY = "m.login.dummy"
LOGIN_TYPE_REGISTRATION_TOKEN = "m.login.registration_token"

_DEVICE_ID_ALPHABET = string.ascii_uppercase
_REGISTRATION_TOKEN_ALPHABET = string.ascii_letters + string.digits + "-._~"


class AccountsHost(Protocol):
    """What the service needs of the Homeserver (the CLI passes a smaller object)."""

    @property
    def config(self) -> Config: ...

    @property
    def server_name(self) -> str: ...

    @property
    def database(self) -> Database: ...

    @property
    def clock_ms(self) -> Callable[[], int]: ...


@dataclass(frozen=True, slots=True)
class Session:
    """What login, registration and refresh hand back to the client."""

    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None


@dataclass(slots=True)
class _CachedToken:
    requester: Requester
    valid_until_ms: int | None
    cached_at_ms: int


@dataclass(frozen=True, slots=True)
class UiAuthResult:
    """A completed user-interactive authentication."""

    session_id: str
    #: The request body (without ``auth``), of this request or kept from an earlier one.
    clientdict: dict[str, Any]
    #: Completed stage type → what it proved (user ID, registration token, ...).
    stages: dict[str, Any] = field(default_factory=dict)


class UiAuthRequired(MatrixError):
    """The 401 of "User-interactive API in the REST API": flows, params, session,
    completed, plus ``errcode``/``error`` only when a stage attempt failed."""

    def __init__(self, body: dict[str, Any], errcode: str | None = None, error: str = "") -> None:
        super().__init__(401, errcode or "M_UNAUTHORIZED", error or "Authentication required")
        self.body = dict(body)
        if errcode is not None:
            self.body["errcode"] = errcode
            self.body["error"] = error

    def json_body(self) -> dict[str, Any]:
        return self.body


class _StageFailed(Exception):
    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(error)
        self.errcode = errcode
        self.error = error


def generate_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ID_ALPHABET) for _ in range(10))


def generate_registration_token() -> str:
    return "".join(secrets.choice(_REGISTRATION_TOKEN_ALPHABET) for _ in range(16))


def _unknown_token(soft_logout: bool = False) -> MatrixError:
    if soft_logout:
        return MatrixError(
            401, "M_UNKNOWN_TOKEN", "Access token has expired.", soft_logout=True
        )
    return MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token.")


class AccountsService:
    def __init__(self, hs: AccountsHost) -> None:
        self.hs = hs
        self.config = hs.config
        self.server_name = hs.server_name
        self.store = AccountsStore(hs.database)
        self.passwords = PasswordHasher(hs.config.password_hashing)
        self._clock_ms = hs.clock_ms
        self._token_cache: OrderedDict[str, _CachedToken] = OrderedDict()
        # Bumped by every revocation; a lookup that raced with one is not cached.
        self._revocations = 0

    # --- the interface other areas use -----------------------------------------------

    async def requester_for_access_token(
        self, token: str, *, allow_expired: bool = False
    ) -> Requester:
        """Who is behind ``token``; 401 ``M_UNKNOWN_TOKEN`` (``soft_logout`` when
        expired, Client-Server API "Soft logout") otherwise.

        ``allow_expired`` is for logout, which works with an expired token.
        """
        now = self._clock_ms()
        cached = self._token_cache.get(token)
        if cached is not None and now - cached.cached_at_ms > TOKEN_CACHE_TTL_MS:
            del self._token_cache[token]
            cached = None
        if cached is None:
            cached = await self._load_token(token, now)
        else:
            self._token_cache.move_to_end(token)
        if (
            cached.valid_until_ms is not None
            and now >= cached.valid_until_ms
            and not allow_expired
        ):
            raise _unknown_token(soft_logout=True)
        return cached.requester

    async def _load_token(self, token: str, now: int) -> _CachedToken:
        if not token.startswith(ACCESS_TOKEN_PREFIX):
            raise _unknown_token()
        revocations = self._revocations
        row = await self.store.get_access_token(token)
        if row is None or row.deactivated:
            raise _unknown_token()
        if not row.used and row.refresh_token_id is not None:
            # "The old refresh token remains valid until the new access token or
            # refresh token is used, at which point the old refresh token is revoked."
            self._forget_tokens(
                await self.store.mark_access_token_used(row.id, row.refresh_token_id)
            )
        entry = _CachedToken(
            Requester(
                user_id=row.user_id,
                device_id=row.device_id,
                is_guest=row.is_guest,
                access_token_id=row.id,
            ),
            row.valid_until_ms,
            now,
        )
        if revocations == self._revocations:
            self._token_cache[token] = entry
            if len(self._token_cache) > TOKEN_CACHE_SIZE:
                self._token_cache.popitem(last=False)
        return entry

    async def user_exists(self, user_id: str) -> bool:
        return await self.store.get_user(user_id) is not None

    async def get_user(self, user_id: str) -> UserRow | None:
        return await self.store.get_user(user_id)

    async def is_admin(self, user_id: str) -> bool:
        user = await self.store.get_user(user_id)
        return user is not None and user.is_admin

    async def is_deactivated(self, user_id: str) -> bool:
        user = await self.store.get_user(user_id)
        return user is not None and user.deactivated

    async def get_devices(self, user_id: str) -> list[DeviceRow]:
        return await self.store.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRow | None:
        return await self.store.get_device(user_id, device_id)

    async def delete_devices(self, user_id: str, device_ids: Sequence[str]) -> None:
        """Delete devices with their access and refresh tokens (for /logout and the
        device management endpoints)."""
        async with self.hs.database.transaction() as txn:
            revoked = await self.store.delete_devices(txn, user_id, list(device_ids))
        self._forget_tokens(revoked)

    # --- token cache -----------------------------------------------------------------

    def _forget_tokens(self, tokens: Iterable[str]) -> None:
        self._revocations += 1
        for token in tokens:
            self._token_cache.pop(token, None)

    def _forget_user(self, user_id: str) -> None:
        self._revocations += 1
        for token in [t for t, e in self._token_cache.items() if e.requester.user_id == user_id]:
            del self._token_cache[token]

    # --- identifiers -----------------------------------------------------------------

    def user_id_for_localpart(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def check_new_localpart(self, localpart: object) -> str:
        """The user ID a new account named ``localpart`` gets, or 400 M_INVALID_USERNAME.

        Appendices, "User Identifiers": new accounts follow the current grammar
        (``a-z 0-9 . _ = - / +``). As Synapse: all-digit localparts are kept for
        generated IDs (guests), and a leading ``_`` for application services.
        """
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "The username must be a non-empty string.")
        if not UserID.is_valid(self.user_id_for_localpart(localpart), historical=False):
            raise MatrixError(
                400,
                "M_INVALID_USERNAME",
                "User ID can only contain characters a-z, 0-9, or '=_-./+' "
                f"and be at most {MAX_IDENTIFIER_BYTES} bytes long.",
            )
        if localpart.isdigit():
            raise MatrixError(
                400, "M_INVALID_USERNAME", "Numeric user IDs are reserved for guest users."
            )
        if localpart.startswith("_"):
            raise MatrixError(400, "M_INVALID_USERNAME", "User ID may not begin with '_'.")
        return self.user_id_for_localpart(localpart)

    async def check_username_available(self, localpart: object) -> str:
        """The user ID for a new account named ``localpart``; 400 M_INVALID_USERNAME
        or M_USER_IN_USE when it cannot be had."""
        user_id = self.check_new_localpart(localpart)
        if await self._user_id_taken(user_id):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        return user_id

    async def _user_id_taken(self, user_id: str, db: Queryable | None = None) -> bool:
        # Case-insensitively, as Synapse: imported accounts may have upper case.
        return bool(await self.store.find_users_case_insensitive(user_id, db))

    def resolve_user_identifier(self, user: str) -> str | None:
        """``m.id.user``: a localpart or a full user ID → a user ID of this server, or None."""
        if user.startswith("@"):
            if not UserID.is_valid(user):
                return None
            return user if is_mine(user, self.server_name) else None
        return self.user_id_for_localpart(user)

    # --- passwords and login ---------------------------------------------------------

    @staticmethod
    def check_password_shape(password: object, name: str = "password") -> str:
        if not isinstance(password, str):
            raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be a string.")
        if len(password) > MAX_PASSWORD_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "Password too long.")
        return password

    async def check_password(self, user: str, password: str) -> UserRow | None:
        """The account ``user`` (localpart or user ID) names if ``password`` is its
        password, else None. Each attempt costs one hash verification, known
        user or not. An outdated hash is upgraded on success."""
        user_id = self.resolve_user_identifier(user)
        candidate = await self.store.get_user(user_id) if user_id is not None else None
        if candidate is None and user_id is not None:
            # Accounts imported from Synapse may differ in case; accept a unique match.
            matches = await self.store.find_users_case_insensitive(user_id)
            candidate = matches[0] if len(matches) == 1 else None
        password_hash = candidate.password_hash if candidate is not None else None
        if not await self.passwords.verify(password, password_hash):
            return None
        assert candidate is not None and password_hash is not None
        if self.passwords.needs_rehash(password_hash):
            new_hash = await self.passwords.hash(password)
            async with self.hs.database.transaction() as txn:
                await self.store.set_password_hash(txn, candidate.user_id, new_hash)
        return candidate

    async def login_with_password(self, user: str, password: str) -> str:
        """The user ID, or 403 M_FORBIDDEN (wrong user or password) /
        M_USER_DEACTIVATED (right password, deactivated account)."""
        account = await self.check_password(user, password)
        if account is None:
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password.")
        if account.deactivated:
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated.")
        return account.user_id

    @staticmethod
    def check_device_params(device_id: object, display_name: object) -> None:
        # NUL: checked here, before any write, so that registering cannot stop
        # half-way on the storage layer's refusal (ranvier/core/input_limits.py).
        if device_id is not None and (
            not isinstance(device_id, str)
            or not device_id
            or len(device_id) > MAX_DEVICE_ID_LENGTH
            or "\x00" in device_id
        ):
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                f"'device_id' must be a non-empty string of at most {MAX_DEVICE_ID_LENGTH} characters.",
            )
        if display_name is not None:
            if not isinstance(display_name, str):
                raise MatrixError(400, "M_BAD_JSON", "'initial_device_display_name' must be a string.")
            if len(display_name) > MAX_DEVICE_DISPLAY_NAME_LENGTH:
                raise MatrixError(
                    400,
                    "M_TOO_LARGE",
                    f"Device display name is too long (max {MAX_DEVICE_DISPLAY_NAME_LENGTH}).",
                )
            if "\x00" in display_name:
                raise MatrixError(400, "M_INVALID_PARAM", "Device display name contains NUL.")

    async def _issue_session(
        self,
        txn: Transaction,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        want_refresh: bool,
        ip: str | None,
    ) -> tuple[Session, list[str], bool]:
        """Create or reuse the device and give it fresh tokens; the session, the
        access tokens it replaced and whether the device is new.

        "If the client sets the device_id, the server will invalidate any access
        and refresh tokens previously assigned to that device" (Client-Server
        API, "Relationship between access tokens and devices").
        """
        now = self._clock_ms()
        device_id = device_id or generate_device_id()
        created = await self.store.upsert_device(txn, user_id, device_id, display_name, now, ip)
        devices = getattr(self.hs, "devices", None)
        if devices is not None:
            txn.call_after_commit(lambda: devices.written_at_login(user_id, device_id, now, ip))
        if created:
            await self._record_new_device(txn, user_id)
        revoked = [] if created else await self.store.delete_tokens(txn, user_id, [device_id])
        session, _ = await self._issue_tokens(txn, user_id, device_id, want_refresh)
        return session, revoked, created

    async def _record_new_device(self, txn: Transaction, user_id: str) -> None:
        """A new device changes the user's device list: the user and everyone
        sharing a room see it in ``device_lists.changed`` (Client-Server API,
        "Tracking the device list for a user"; Synapse records the update when
        the device is created, before it has keys). In the same transaction."""
        devices = getattr(self.hs, "devices", None)
        if devices is not None:
            await devices.record_device_list_change(txn, user_id)

    async def _announce_new_device(self, user_id: str) -> None:
        """After the commit: wake the /sync long-polls that must see it."""
        devices = getattr(self.hs, "devices", None)
        if devices is not None:
            await devices.announce_device_list_change(user_id)

    async def _issue_tokens(
        self, txn: Transaction, user_id: str, device_id: str, want_refresh: bool
    ) -> tuple[Session, int | None]:
        """New tokens for the device; the session and the refresh token's row ID."""
        access_token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
        refresh_token: str | None = None
        refresh_token_id: int | None = None
        expires_in_ms: int | None = None
        valid_until_ms: int | None = None
        if want_refresh:
            refresh_token = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)
            refresh_token_id = await self.store.add_refresh_token(
                txn, user_id, device_id, refresh_token
            )
            expires_in_ms = self.config.refreshable_access_token_lifetime
            valid_until_ms = self._clock_ms() + expires_in_ms
        await self.store.add_access_token(
            txn, user_id, device_id, access_token, valid_until_ms, refresh_token_id
        )
        session = Session(user_id, device_id, access_token, refresh_token, expires_in_ms)
        return session, refresh_token_id

    async def login(
        self,
        user_id: str,
        *,
        device_id: str | None,
        initial_display_name: str | None,
        want_refresh: bool,
        ip: str | None,
    ) -> Session:
        """A new session for an authenticated user."""
        async with self.hs.database.transaction() as txn:
            session, revoked, created = await self._issue_session(
                txn, user_id, device_id, initial_display_name, want_refresh, ip
            )
        self._forget_tokens(revoked)
        if created:
            await self._announce_new_device(user_id)
        return session

    async def refresh(self, refresh_token: str) -> Session:
        """Client-Server API, "Refreshing access tokens": a new access token and a
        new refresh token; the old refresh token stays usable until one of the
        new tokens is used. Unknown or spent → 401 M_UNKNOWN_TOKEN."""
        revoked: list[str] = []
        async with self.hs.database.transaction() as txn:
            row = await self.store.get_refresh_token(refresh_token, txn)
            if row is None:
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token.")
            # Using this token revokes the one it replaced, as using its access token would.
            revoked += await self.store.revoke_replaced_refresh_tokens(txn, row.id)
            session, new_id = await self._issue_tokens(txn, row.user_id, row.device_id, True)
            assert new_id is not None
            revoked += await self.store.replace_refresh_token(txn, row.id, new_id)
        self._forget_tokens(revoked)
        return session

    async def logout(self, requester: Requester) -> None:
        """Revoke the token and delete its device (POST /logout)."""
        async with self.hs.database.transaction() as txn:
            if requester.device_id is not None:
                revoked = await self.store.delete_devices(
                    txn, requester.user_id, [requester.device_id]
                )
            else:
                assert requester.access_token_id is not None
                await self.store.delete_access_token(txn, requester.access_token_id)
                revoked = []
        self._forget_tokens(revoked)
        self._forget_user_token_id(requester)
        if requester.device_id is not None:
            await self._devices_deleted(requester.user_id, [requester.device_id])

    async def _devices_deleted(self, user_id: str, device_ids: list[str] | None) -> None:
        """Let the devices area forget the deleted devices' end-to-end keys and
        inbox and announce the change (None: all the user's devices)."""
        devices = getattr(self.hs, "devices", None)
        if devices is not None:
            await devices.forget_devices(user_id, device_ids)

    def _forget_user_token_id(self, requester: Requester) -> None:
        self._revocations += 1
        for token in [
            t
            for t, e in self._token_cache.items()
            if e.requester.access_token_id == requester.access_token_id
        ]:
            del self._token_cache[token]

    async def logout_all(self, user_id: str) -> None:
        """Revoke every token and delete every device of the user (POST /logout/all)."""
        async with self.hs.database.transaction() as txn:
            await self.store.delete_devices(txn, user_id)
        self._forget_user(user_id)
        await self._devices_deleted(user_id, None)

    # --- registration ----------------------------------------------------------------

    async def _generate_localpart(self, txn: Transaction) -> str:
        # Numeric, like Synapse's guest and generated IDs; users cannot pick these.
        while True:
            localpart = str(await next_stream_position(txn, "generated_user_ids"))
            if await self.store.get_user(self.user_id_for_localpart(localpart), txn) is None:
                return localpart

    async def register(
        self,
        localpart: str | None,
        password: str | None,
        *,
        is_guest: bool = False,
        is_admin: bool = False,
        login: bool = True,
        device_id: str | None = None,
        initial_display_name: str | None = None,
        want_refresh: bool = False,
        ip: str | None = None,
        ui_auth: UiAuthResult | None = None,
    ) -> tuple[str, Session | None]:
        """Create an account (and, with ``login``, its first session) in one
        transaction: the user, the registration token's use, the device and
        tokens, and the end of the UIA session. 400 M_USER_IN_USE if taken."""
        password_hash = await self.passwords.hash(password) if password is not None else None
        session: Session | None = None
        device_created = False
        async with self.hs.database.transaction() as txn:
            if localpart is None:
                localpart = await self._generate_localpart(txn)
            user_id = self.user_id_for_localpart(localpart)
            if await self._user_id_taken(user_id, txn) or not await self.store.create_user(
                txn,
                user_id,
                password_hash,
                self._clock_ms(),
                is_admin=is_admin,
                is_guest=is_guest,
            ):
                raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
            if not is_guest:
                # "User directory": the new user, under the default display name (the localpart).
                await set_local_profile(txn, user_id, localpart, None)
            if ui_auth is not None:
                token = ui_auth.stages.get(LOGIN_TYPE_REGISTRATION_TOKEN)
                if isinstance(token, str):
                    await self.store.complete_registration_token(txn, token)
                await self.store.delete_ui_auth_session(txn, ui_auth.session_id)
            if login:
                session, _, device_created = await self._issue_session(
                    txn, user_id, device_id, initial_display_name, want_refresh, ip
                )
        if device_created:
            await self._announce_new_device(user_id)
        return user_id, session

    # --- password change and deactivation --------------------------------------------

    async def change_password(
        self,
        requester: Requester,
        new_password: str,
        *,
        logout_devices: bool,
        ui_auth: UiAuthResult | None = None,
    ) -> None:
        """Set a new password; with ``logout_devices``, revoke every other token
        and delete every other device. The requester's own token survives."""
        password_hash = await self.passwords.hash(new_password)
        async with self.hs.database.transaction() as txn:
            await self.store.set_password_hash(txn, requester.user_id, password_hash)
            if ui_auth is not None:
                await self.store.delete_ui_auth_session(txn, ui_auth.session_id)
            if logout_devices:
                others = [
                    device.device_id
                    for device in await self.store.get_devices(requester.user_id, txn)
                    if device.device_id != requester.device_id
                ]
                await self.store.delete_devices(txn, requester.user_id, others)
                await self.store.delete_tokens(
                    txn,
                    requester.user_id,
                    None if requester.device_id is None else [requester.device_id],
                    except_access_token_id=requester.access_token_id,
                )
        if logout_devices:
            self._forget_user(requester.user_id)
            await self._devices_deleted(requester.user_id, others)

    async def deactivate(self, user_id: str, *, ui_auth: UiAuthResult | None = None) -> None:
        """Mark the account deactivated and delete its devices and tokens; then
        tell the rooms area (which makes the user leave their rooms)."""
        async with self.hs.database.transaction() as txn:
            await self.store.set_deactivated(txn, user_id)
            await self.store.delete_devices(txn, user_id)
            if ui_auth is not None:
                await self.store.delete_ui_auth_session(txn, ui_auth.session_id)
        self._forget_user(user_id)
        await self._devices_deleted(user_id, None)
        rooms = getattr(self.hs, "rooms", None)
        on_user_deactivated = getattr(rooms, "on_user_deactivated", None)
        if on_user_deactivated is not None:
            await on_user_deactivated(user_id)

    async def set_admin(self, user_id: str, is_admin: bool) -> bool:
        return await self.store.set_admin(user_id, is_admin)

    # --- registration tokens ---------------------------------------------------------

    async def create_registration_token(
        self, token: str | None, uses_allowed: int | None, expiry_time: int | None
    ) -> str:
        """Create a registration token (random when ``token`` is None); ValueError
        if it is malformed or exists."""
        if token is None:
            token = generate_registration_token()
        if not is_valid_opaque_id(token, max_length=MAX_REGISTRATION_TOKEN_LENGTH):
            raise ValueError(
                "a registration token is 1-64 characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
            )
        if not await self.store.create_registration_token(token, uses_allowed, expiry_time):
            raise ValueError(f"registration token {token!r} exists already")
        return token

    async def registration_token_is_valid(self, token: str) -> bool:
        row = await self.store.get_registration_token(token)
        if row is None:
            return False
        if row.expiry_time is not None and row.expiry_time <= self._clock_ms():
            return False
        return row.uses_allowed is None or row.pending + row.completed < row.uses_allowed

    # --- user-interactive authentication ---------------------------------------------

    async def check_ui_auth(
        self,
        body: dict[str, Any],
        *,
        uri: str,
        method: str,
        flows: list[list[str]],
        requester: Requester | None = None,
        ip: str | None = None,
        ratelimit: Callable[[str], None] | None = None,
    ) -> UiAuthResult:
        """Client-Server API, "User-Interactive Authentication API".

        Returns when a flow is complete; raises :class:`UiAuthRequired` (401)
        otherwise. The body of the request that starts a session is kept, and
        used for later requests that send only ``auth`` (as Synapse does, a
        later request that sends parameters replaces them). A session is
        pinned to its operation (``uri``, ``method``) and, for an
        authenticated request, to the user. ``ratelimit`` is called before a
        password is checked.
        """
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, dict):
            raise MatrixError(400, "M_BAD_JSON", "'auth' must be an object.")
        clientdict = {key: value for key, value in body.items() if key != "auth"}
        session_id = auth.get("session") if auth is not None else None
        if session_id is not None and not isinstance(session_id, str):
            raise MatrixError(400, "M_BAD_JSON", "'auth.session' must be a string.")
        user_id = requester.user_id if requester is not None else None
        now = self._clock_ms()

        if session_id is None:
            await self._expire_ui_auth_sessions(now)
            session_id = secrets.token_urlsafe(24)
            await self.store.create_ui_auth_session(
                session_id, now, uri, method, orjson.dumps(clientdict).decode(), user_id
            )
            stages: dict[str, Any] = {}
        else:
            session = await self.store.get_ui_auth_session(session_id)
            if session is None or now - session.created_ts > UI_AUTH_SESSION_LIFETIME_MS:
                # Synapse: 400 M_UNKNOWN "Unknown session ID".
                raise MatrixError(400, "M_UNKNOWN", "Unknown session ID.")
            if session.uri != uri or session.method != method:
                raise MatrixError(
                    403,
                    "M_FORBIDDEN",
                    "Requested operation has changed during the UI authentication session.",
                )
            if session.user_id != user_id:
                raise MatrixError(403, "M_FORBIDDEN", "This session belongs to another user.")
            if clientdict:
                await self.store.set_ui_auth_clientdict(
                    session_id, orjson.dumps(clientdict).decode()
                )
            else:
                clientdict = orjson.loads(session.clientdict)
            stages = {
                stage: orjson.loads(result)
                for stage, result in (await self.store.get_ui_auth_stages(session_id)).items()
            }

        def required(errcode: str | None = None, error: str = "") -> UiAuthRequired:
            body = {"flows": [{"stages": flow} for flow in flows], "params": {}, "session": session_id}
            if stages:
                body["completed"] = sorted(stages)
            return UiAuthRequired(body, errcode, error)

        stage_type = auth.get("type") if auth is not None else None
        if auth is not None and stage_type is not None:
            if not isinstance(stage_type, str):
                raise MatrixError(400, "M_BAD_JSON", "'auth.type' must be a string.")
            if not any(stage_type in flow for flow in flows):
                raise MatrixError(400, "M_UNRECOGNIZED", f"Unrecognized auth type {stage_type!r}.")
            if stage_type not in stages:
                try:
                    result = await self._check_stage(stage_type, auth, user_id, ratelimit)
                except _StageFailed as failure:
                    raise required(failure.errcode, failure.error) from None
                await self._record_stage(session_id, stage_type, result)
                stages[stage_type] = result

        if any(all(stage in stages for stage in flow) for flow in flows):
            return UiAuthResult(session_id, clientdict, stages)
        raise required()

    async def _record_stage(self, session_id: str, stage_type: str, result: Any) -> None:
        async with self.hs.database.transaction() as txn:
            await self.store.add_ui_auth_stage(
                txn, session_id, stage_type, orjson.dumps(result).decode()
            )

    async def _check_stage(
        self,
        stage_type: str,
        auth: dict[str, Any],
        user_id: str | None,
        ratelimit: Callable[[str], None] | None,
    ) -> Any:
        if stage_type == LOGIN_TYPE_DUMMY:
            return True
        if stage_type == LOGIN_TYPE_REGISTRATION_TOKEN:
            token = auth.get("token")
            if not isinstance(token, str):
                raise MatrixError(400, "M_MISSING_PARAM", "Missing registration token.")
            async with self.hs.database.transaction() as txn:
                reserved = await self.store.reserve_registration_token(
                    txn, token, self._clock_ms()
                )
            if not reserved:
                raise _StageFailed("M_UNAUTHORIZED", "Invalid registration token.")
            return token
        if stage_type == LOGIN_TYPE_PASSWORD:
            if ratelimit is not None:
                ratelimit("login")
            user = password_login_user(auth)
            password = self.check_password_shape(auth.get("password"))
            account = await self.check_password(user, password)
            if account is None or account.user_id != user_id:
                raise _StageFailed("M_FORBIDDEN", "Invalid username or password.")
            return account.user_id
        raise MatrixError(400, "M_UNRECOGNIZED", f"Unrecognized auth type {stage_type!r}.")

    async def _expire_ui_auth_sessions(self, now: int) -> None:
        """Forget sessions older than the session lifetime; a registration token
        reserved by an abandoned registration becomes usable again."""
        expired = await self.store.expired_ui_auth_sessions(now - UI_AUTH_SESSION_LIFETIME_MS)
        for session_id in expired:
            async with self.hs.database.transaction() as txn:
                token = (await self.store.get_ui_auth_stages(session_id, txn)).get(
                    LOGIN_TYPE_REGISTRATION_TOKEN
                )
                if token is not None:
                    await self.store.release_registration_token(txn, orjson.loads(token))
                await self.store.delete_ui_auth_session(txn, session_id)


def password_login_user(submission: dict[str, Any]) -> str:
    """The user named by a password login or ``m.login.password`` stage:
    ``identifier`` of type ``m.id.user``, or the deprecated top-level ``user``.

    Third-party identifiers name no account here (no 3PIDs are stored), so
    they fail like a wrong password: "In the case that the homeserver does not
    know about the supplied 3PID, the homeserver must respond with 403 Forbidden."
    """
    identifier = submission.get("identifier")
    if identifier is not None:
        if not isinstance(identifier, dict):
            raise MatrixError(400, "M_BAD_JSON", "'identifier' must be an object.")
        id_type = identifier.get("type")
        if id_type == "m.id.user":
            user = identifier.get("user")
            if not isinstance(user, str):
                raise MatrixError(400, "M_BAD_JSON", "'identifier.user' must be a string.")
            return user
        if id_type in ("m.id.thirdparty", "m.id.phone"):
            raise MatrixError(403, "M_FORBIDDEN", "Unknown third-party identifier.")
        raise MatrixError(400, "M_UNKNOWN", "Unknown login identifier type.")
    user = submission.get("user")
    if isinstance(user, str):
        return user
    if user is not None:
        raise MatrixError(400, "M_BAD_JSON", "'user' must be a string.")
    if submission.get("medium") is not None or submission.get("address") is not None:
        raise MatrixError(403, "M_FORBIDDEN", "Unknown third-party identifier.")
    raise MatrixError(400, "M_MISSING_PARAM", "Missing 'identifier'.")
