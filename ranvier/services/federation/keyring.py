"""The keyring: other servers' signing keys, fetched, checked, stored and cached.

Server-Server API, "Retrieving server keys". A key is looked up in a bounded
in-memory cache of the store, then in the store, then fetched from the server
itself (``GET /_matrix/key/v2/server``), then from the configured notaries
(``POST /_matrix/key/v2/query``), stopping as soon as every key asked for is
known and valid long enough. Every document is checked before it is stored:
it names the server asked about and carries that server's signature by one
of the keys it lists (and, from a notary, the notary's signature by a key
configured for it).

Validity ("Publishing Keys", keys.yaml; room versions 5+, "Signing key
validity period"): a current key is valid until the lesser of the document's
``valid_until_ts`` and 7 days after we fetched it; an ``old_verify_keys``
entry until its ``expired_ts``, and for events only, never for requests.
Callers say how long they need a key to be valid: the event's
``origin_server_ts`` in room versions 5+, 0 in versions 1-4 (where
``valid_until_ts`` "MUST be ignored"), now for a request signature. Keys
that sign requests are fetched from the server itself, never through a
notary (MSC4029).

Fetches for one server run once at a time (concurrent lookups wait for the
same fetch) and at most once per ``refetch_interval_ms`` per source, so that
requests naming unknown key IDs cannot make us hammer a server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ranvier.config import TrustedKeyServer
from ranvier.core.signing import (
    ED25519,
    SignatureError,
    SigningKey,
    decode_base64,
    verify_signature,
)
from ranvier.storage.cache import ReadCache
from ranvier.storage.server_keys import ServerKeyRow, ServerKeyStore

logger = logging.getLogger(__name__)

#: ``fetch_json(destination, method, path, content)`` → the parsed JSON answer.
#: Raises on any failure; the federation client supplies it.
FetchJson = Callable[[str, str, str, Any], Awaitable[Any]]

SERVER_KEYS_PATH = "/_matrix/key/v2/server"
KEY_QUERY_PATH = "/_matrix/key/v2/query"

#: "Servers MUST use the lesser of valid_until_ts and 7 days into the future".
MAX_KEY_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000
#: Our own key never expires for us.
FOREVER_TS = 2**63 - 1
DEFAULT_CACHE_SIZE = 1024
DEFAULT_REFETCH_INTERVAL_MS = 30_000
#: The source name of fetches from the server itself (notaries go by their names).
_DIRECT = ""


class KeyDocumentError(ValueError):
    """A key document (or a notary's answer) that cannot be trusted."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    key_id: str
    #: The raw 32-byte ed25519 public key.
    key: bytes
    #: Signatures by this key are valid up to and including this time (ms).
    valid_until_ts: int
    #: From ``old_verify_keys``: valid for events signed before it expired, never
    #: for requests.
    expired: bool


def verify_key_from_row(row: ServerKeyRow) -> VerifyKey:
    """The stored key with its validity rules applied (see the module docstring)."""
    if row.expired_ts is not None:
        return VerifyKey(row.key_id, row.verify_key, row.expired_ts, expired=True)
    valid_until = min(row.valid_until_ts, row.fetched_ts + MAX_KEY_VALIDITY_MS)
    return VerifyKey(row.key_id, row.verify_key, valid_until, expired=False)


# --- checking key documents ----------------------------------------------------------


def _ed25519_key(key_id: str, entry: Any) -> bytes | None:
    """The key of one ``verify_keys``/``old_verify_keys`` entry; None for other algorithms."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise KeyDocumentError(f"key {key_id!r} has no 'key' string")
    if not key_id.startswith(f"{ED25519}:"):
        return None  # an algorithm we cannot use; ignored, as Synapse does
    try:
        key = decode_base64(entry["key"])
    except ValueError:
        raise KeyDocumentError(f"key {key_id!r} is not base64") from None
    if len(key) != 32:
        raise KeyDocumentError(f"key {key_id!r} is not a 32-byte ed25519 key")
    return key


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeyDocumentError(f"{name} must be a non-negative integer")
    return value


def _key_map(document: dict[str, Any], name: str) -> dict[str, Any]:
    keys = document.get(name, {})
    if not isinstance(keys, dict):
        raise KeyDocumentError(f"{name} must be an object")
    return keys


def _check_self_signed(
    document: dict[str, Any], server_name: str, verify_keys: dict[str, bytes]
) -> dict[str, Any]:
    """The server's own signatures on ``document``: at least one by a key the
    document lists in ``verify_keys``, and every such one valid. Signatures by
    other key IDs are ignored."""
    signatures = document.get("signatures")
    own = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(own, dict):
        raise KeyDocumentError(f"key document is not signed by {server_name}")
    checked = 0
    for key_id in own:
        if key_id in verify_keys:
            try:
                verify_signature(document, server_name, key_id, verify_keys[key_id])
            except SignatureError as exc:
                raise KeyDocumentError(str(exc)) from None
            checked += 1
    if not checked:
        raise KeyDocumentError(f"key document is not signed by any key of {server_name}")
    return own


def parse_key_document(document: Any, server_name: str, fetched_ts: int) -> list[ServerKeyRow]:
    """Check a ``/_matrix/key/v2/server`` document for ``server_name``; its keys as rows.

    Raises KeyDocumentError for a document about another server, without a
    valid self-signature, or malformed. The stored ``key_json`` keeps only the
    server's own signatures (a notary's are not ours to pass on).
    """
    if not isinstance(document, dict):
        raise KeyDocumentError("key document must be an object")
    if document.get("server_name") != server_name:
        raise KeyDocumentError(f"key document is not about {server_name}")
    valid_until_ts = _integer(document.get("valid_until_ts"), "valid_until_ts")
    if "verify_keys" not in document:
        raise KeyDocumentError("key document has no verify_keys")
    current: dict[str, bytes] = {}
    for key_id, entry in _key_map(document, "verify_keys").items():
        if (key := _ed25519_key(key_id, entry)) is not None:
            current[key_id] = key
    old: dict[str, tuple[bytes, int]] = {}
    for key_id, entry in _key_map(document, "old_verify_keys").items():
        key = _ed25519_key(key_id, entry)
        expired_ts = _integer(entry.get("expired_ts"), f"expired_ts of {key_id}")
        if key is not None and key_id not in current:
            old[key_id] = (key, expired_ts)
    own_signatures = _check_self_signed(document, server_name, current)
    key_json = orjson.dumps({**document, "signatures": {server_name: own_signatures}}).decode()
    rows = [
        ServerKeyRow(server_name, key_id, key, valid_until_ts, None, fetched_ts, key_json)
        for key_id, key in current.items()
    ]
    rows += [
        ServerKeyRow(server_name, key_id, key, valid_until_ts, expired_ts, fetched_ts, key_json)
        for key_id, (key, expired_ts) in old.items()
    ]
    return rows


def _check_notary_signature(document: dict[str, Any], notary: TrustedKeyServer) -> None:
    """At least one signature by a key configured for the notary, all such valid."""
    signatures = document.get("signatures")
    by_notary = signatures.get(notary.server_name) if isinstance(signatures, dict) else None
    checked = 0
    for key_id, key in notary.verify_keys.items():
        if isinstance(by_notary, dict) and key_id in by_notary:
            try:
                verify_signature(document, notary.server_name, key_id, key)
            except SignatureError as exc:
                raise KeyDocumentError(str(exc)) from None
            checked += 1
    if not checked:
        raise KeyDocumentError(f"not signed by the notary {notary.server_name}")


def parse_notary_response(
    response: Any, notary: TrustedKeyServer, server_name: str, fetched_ts: int
) -> list[ServerKeyRow]:
    """The keys of ``server_name`` in a notary's ``/_matrix/key/v2/query`` answer.

    Documents about other servers are ignored; a document without a valid
    notary signature or self-signature is skipped (logged), the others count.
    """
    if not isinstance(response, dict) or not isinstance(response.get("server_keys"), list):
        raise KeyDocumentError("notary answer has no server_keys list")
    rows: list[ServerKeyRow] = []
    for document in response["server_keys"]:
        if not isinstance(document, dict) or document.get("server_name") != server_name:
            continue
        try:
            _check_notary_signature(document, notary)
            rows += parse_key_document(document, server_name, fetched_ts)
        except KeyDocumentError as exc:
            logger.warning(
                "Ignoring keys of %s from notary %s: %s", server_name, notary.server_name, exc
            )
    return rows


# --- the keyring ----------------------------------------------------------------------


class Keyring:
    def __init__(
        self,
        *,
        server_name: str,
        signing_key: SigningKey,
        store: ServerKeyStore,
        clock_ms: Callable[[], int],
        fetch_json: FetchJson | None = None,
        trusted_key_servers: Sequence[TrustedKeyServer] = (),
        cache_size: int = DEFAULT_CACHE_SIZE,
        refetch_interval_ms: int = DEFAULT_REFETCH_INTERVAL_MS,
    ) -> None:
        self.server_name = server_name
        self.signing_key = signing_key
        self.store = store
        self.clock_ms = clock_ms
        #: None until a federation client is wired in: only stored keys are known.
        self.fetch_json = fetch_json
        self.trusted_key_servers = tuple(trusted_key_servers)
        self.refetch_interval_ms = refetch_interval_ms
        self._cache: ReadCache[str, tuple[ServerKeyRow, ...]] = ReadCache(cache_size)
        self._cache_size = cache_size
        # (source, server) → the fetch in flight, and → when it was last started.
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._last_fetch_ms: OrderedDict[tuple[str, str], int] = OrderedDict()

    # --- lookups ---

    async def get_verify_keys(
        self,
        server_name: str,
        key_ids: Collection[str],
        minimum_valid_until_ts: int,
        *,
        for_requests: bool = False,
    ) -> dict[str, VerifyKey]:
        """Those of ``key_ids`` that ``server_name`` holds valid until at least
        ``minimum_valid_until_ts``, fetching what is missing. Keys that cannot
        be found are absent from the answer; never raises for a remote's failure.

        ``for_requests``: only current keys (not ``old_verify_keys``), and
        fetched from the server itself only (MSC4029).
        """
        wanted = set(key_ids)
        if server_name == self.server_name:
            return self._own_keys(wanted)
        found = self._select(
            await self._stored(server_name), wanted, minimum_valid_until_ts, for_requests
        )
        if len(found) == len(wanted):
            return found
        sources = [_DIRECT]
        if not for_requests:
            sources += [notary.server_name for notary in self.trusted_key_servers]
        for source in sources:
            missing = wanted - set(found)
            await self._fetch(source, server_name, missing, minimum_valid_until_ts)
            rows = await self._stored(server_name)
            found = self._select(rows, wanted, minimum_valid_until_ts, for_requests)
            if len(found) == len(wanted):
                break
        return found

    async def get_request_key(self, server_name: str, key_id: str) -> VerifyKey | None:
        """The key that must have signed a request of ``server_name`` now, or None."""
        keys = await self.get_verify_keys(server_name, [key_id], self.clock_ms(), for_requests=True)
        return keys.get(key_id)

    async def key_documents(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> list[dict[str, Any]]:
        """What a notary answers about another server: its key documents as
        fetched, refetched from the server first when the stored ones do not
        cover ``key_ids`` (all keys if empty) until ``minimum_valid_until_ts``
        or are past half their lifetime ("Intermediate notary servers should
        cache a response for half of its lifetime"). When the server cannot be
        reached the last documents are served anyway, as the spec asks."""
        rows = await self._stored(server_name)
        if self._notary_needs_refresh(rows, set(key_ids), minimum_valid_until_ts):
            await self._fetch(_DIRECT, server_name, set(key_ids), minimum_valid_until_ts)
            rows = await self._stored(server_name)
        documents = dict.fromkeys(row.key_json for row in rows)
        return [orjson.loads(text) for text in documents]

    def _own_keys(self, wanted: set[str]) -> dict[str, VerifyKey]:
        key = self.signing_key
        if key.key_id not in wanted:
            return {}
        return {key.key_id: VerifyKey(key.key_id, key.verify_key, FOREVER_TS, expired=False)}

    @staticmethod
    def _select(
        rows: Sequence[ServerKeyRow],
        wanted: set[str],
        minimum_valid_until_ts: int,
        for_requests: bool,
    ) -> dict[str, VerifyKey]:
        found: dict[str, VerifyKey] = {}
        for row in rows:
            if row.key_id not in wanted:
                continue
            key = verify_key_from_row(row)
            if key.valid_until_ts >= minimum_valid_until_ts and not (for_requests and key.expired):
                found[key.key_id] = key
        return found

    def _notary_needs_refresh(
        self, rows: Sequence[ServerKeyRow], wanted: set[str], minimum_valid_until_ts: int
    ) -> bool:
        current = [row for row in rows if row.expired_ts is None]
        if not current:
            return True
        if wanted - {row.key_id for row in rows}:
            return True
        now = self.clock_ms()
        for row in current:
            valid_until = verify_key_from_row(row).valid_until_ts
            if valid_until < minimum_valid_until_ts:
                return True
            if now > row.fetched_ts + (valid_until - row.fetched_ts) // 2:
                return True
        return False

    async def _stored(self, server_name: str) -> tuple[ServerKeyRow, ...]:
        async def load() -> tuple[ServerKeyRow, ...]:
            return tuple(await self.store.get_keys(server_name))

        return await self._cache.get(server_name, load)

    async def store_keys(self, rows: Sequence[ServerKeyRow]) -> None:
        """Store checked keys (and forget the cached copies of their servers)."""
        await self.store.store_keys(rows)
        self._cache.invalidate({row.server_name for row in rows})

    # --- fetching ---

    async def _fetch(
        self, source: str, server_name: str, key_ids: set[str], minimum_valid_until_ts: int
    ) -> None:
        """Fetch ``server_name``'s keys from ``source`` unless that was tried
        within ``refetch_interval_ms``; a fetch already in flight is joined."""
        if self.fetch_json is None:
            return
        flight_key = (source, server_name)
        flight = self._in_flight.get(flight_key)
        if flight is None:
            now = self.clock_ms()
            last = self._last_fetch_ms.get(flight_key)
            if last is not None and now - last < self.refetch_interval_ms:
                return
            self._remember_attempt(flight_key, now)
            flight = asyncio.ensure_future(
                self._fetch_and_store(source, server_name, key_ids, minimum_valid_until_ts)
            )
            self._in_flight[flight_key] = flight
            flight.add_done_callback(lambda done: self._landed(flight_key, done))
        # Shielded: one caller giving up does not cancel the fetch the others wait for.
        await asyncio.shield(flight)

    def _landed(self, flight_key: tuple[str, str], flight: asyncio.Future[None]) -> None:
        if self._in_flight.get(flight_key) is flight:
            del self._in_flight[flight_key]

    def _remember_attempt(self, flight_key: tuple[str, str], now: int) -> None:
        attempts = self._last_fetch_ms
        attempts[flight_key] = now
        attempts.move_to_end(flight_key)
        while len(attempts) > self._cache_size:
            attempts.popitem(last=False)

    async def _fetch_and_store(
        self, source: str, server_name: str, key_ids: set[str], minimum_valid_until_ts: int
    ) -> None:
        """One fetch; failures are logged, never raised (the caller goes on to
        the next source)."""
        try:
            if source == _DIRECT:
                rows = await self._fetch_direct(server_name)
            else:
                notary = next(n for n in self.trusted_key_servers if n.server_name == source)
                rows = await self._fetch_from_notary(
                    notary, server_name, key_ids, minimum_valid_until_ts
                )
            await self.store_keys(rows)
        except Exception as exc:  # a remote's failure of any kind: try the next source
            logger.warning(
                "Could not fetch the keys of %s from %s: %s", server_name, source or "itself", exc
            )

    async def _fetch_direct(self, server_name: str) -> list[ServerKeyRow]:
        assert self.fetch_json is not None
        document = await self.fetch_json(server_name, "GET", SERVER_KEYS_PATH, None)
        return parse_key_document(document, server_name, self.clock_ms())

    async def _fetch_from_notary(
        self,
        notary: TrustedKeyServer,
        server_name: str,
        key_ids: set[str],
        minimum_valid_until_ts: int,
    ) -> list[ServerKeyRow]:
        assert self.fetch_json is not None
        # Room versions 5+: "servers MUST set the minimum_valid_until_ts property".
        criteria = {"minimum_valid_until_ts": minimum_valid_until_ts}
        query = {"server_keys": {server_name: {key_id: criteria for key_id in sorted(key_ids)}}}
        response = await self.fetch_json(notary.server_name, "POST", KEY_QUERY_PATH, query)
        return parse_notary_response(response, notary, server_name, self.clock_ms())
