"""End-to-end encryption keys: device keys, one-time and fallback keys,
cross-signing, signatures, and the ``device_lists`` stream /sync reads.

Client-Server API, "End-to-End Encryption" (modules/end_to_end_encryption.md;
OpenAPI keys.yaml, cross_signing.yaml). The server never sees a private key:
it stores what devices publish, checks the ed25519 signatures it can check,
hands out one-time keys exactly once, and tells users whose devices changed.

Users of other servers: ranvier/services/federation/queries.py (their keys,
from the cached device lists or asked over federation).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson

from ranvier.core.canonical_json import CanonicalJSONError
from ranvier.core.ids import InvalidIdentifier, UserID, is_my_user_id, server_name_of
from ranvier.core.signing import SignatureError, decode_base64, signable_bytes, verify_signature
from ranvier.errors import MatrixError
from ranvier.storage.e2e import DeviceKeysRow, E2eStore, SignatureRow

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.services.requester import Requester

logger = logging.getLogger(__name__)

#: Bounds on one upload (the body itself is capped at 1 MiB by the HTTP layer).
#: Clients upload a few dozen one-time keys at a time (vodozemac keeps at most
#: 50 unpublished), so 1000 is generous. Over it: 413 M_TOO_LARGE.
MAX_ONE_TIME_KEYS_PER_UPLOAD = 1000
#: Key IDs, algorithm names and device IDs are short identifiers.
MAX_KEY_ID_LENGTH = 255
MAX_KEY_LENGTH = 1024
#: Bounds on one /keys/query or /keys/claim.
MAX_QUERIED_DEVICES = 10_000

CROSS_SIGNING_TYPES = ("master", "self_signing", "user_signing")
_BODY_FIELD = {
    "master": "master_key",
    "self_signing": "self_signing_key",
    "user_signing": "user_signing_key",
}
_QUERY_FIELD = {
    "master": "master_keys",
    "self_signing": "self_signing_keys",
    "user_signing": "user_signing_keys",
}


def _canonical(value: Any) -> bytes:
    """Canonical JSON of a key object, for comparing uploads; 400 if impossible."""
    try:
        return signable_bytes(value) if isinstance(value, dict) else orjson.dumps(value)
    except CanonicalJSONError as exc:
        raise MatrixError(400, "M_BAD_JSON", f"Key is not valid canonical JSON: {exc}") from None


def _with_signatures(obj: dict[str, Any], rows: list[SignatureRow]) -> dict[str, Any]:
    """``obj`` with the stored signatures ``rows`` merged into its ``signatures``."""
    if not rows:
        return obj
    signatures: dict[str, Any] = {
        signer: dict(sigs) for signer, sigs in (obj.get("signatures") or {}).items()
        if isinstance(sigs, dict)
    }
    for row in rows:
        signatures.setdefault(row.signer_user_id, {})[row.signer_key_id] = row.signature
    return {**obj, "signatures": signatures}


def _ed25519_key(public_key: str) -> bytes | None:
    try:
        raw = decode_base64(public_key)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _verify(obj: dict[str, Any], signer: str, key_id: str, public_key: str) -> bool:
    raw = _ed25519_key(public_key)
    if raw is None:
        return False
    try:
        verify_signature(obj, signer, key_id, raw)
    except (SignatureError, CanonicalJSONError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class ParsedKey:
    algorithm: str
    key_id: str
    key_json: str
    canonical: bytes
    #: The key as uploaded: a string, or a signed key object.
    value: str | dict[str, Any]


#: Algorithms whose keys are signed key objects (Client-Server API, "Key
#: algorithms": a ``signed_curve25519`` key is a KeyObject, ``signatures`` required).
SIGNED_KEY_ALGORITHMS = frozenset({"signed_curve25519"})
# device_list_changes lists the membership changes of a /sync's range in one
# scan when there are at most this many (else it asks per joined room).
_MEMBERSHIP_SCAN_CAP = 1000


def _check_signatures_shape(signatures: object, what: str) -> None:
    """``signatures``: user ID → key ID → signature string (Signed JSON)."""
    if not (
        isinstance(signatures, dict)
        and all(
            isinstance(sigs, dict) and all(isinstance(sig, str) for sig in sigs.values())
            for sigs in signatures.values()
        )
    ):
        raise MatrixError(
            400, "M_BAD_JSON", f"'signatures' of {what} must map user IDs to key IDs to strings."
        )


def _parse_key_map(value: object, name: str) -> list[ParsedKey]:
    """``one_time_keys`` / ``fallback_keys``: ``<algorithm>:<key_id>`` → key (a string,
    or a signed key object with a string ``key``; Client-Server API, "Key algorithms")."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be an object.")
    if len(value) > MAX_ONE_TIME_KEYS_PER_UPLOAD:
        raise MatrixError(
            413, "M_TOO_LARGE", f"At most {MAX_ONE_TIME_KEYS_PER_UPLOAD} keys per upload."
        )
    parsed: list[ParsedKey] = []
    for full_id, key in value.items():
        algorithm, sep, key_id = full_id.partition(":")
        if not sep or not algorithm or not key_id or len(full_id) > MAX_KEY_ID_LENGTH:
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                f"Key ID {full_id[:300]!r} in '{name}' must be '<algorithm>:<key_id>'.",
            )
        if isinstance(key, str):
            if not key or len(key) > MAX_KEY_LENGTH:
                raise MatrixError(400, "M_INVALID_PARAM", f"Key {full_id!r} is empty or too long.")
            if algorithm in SIGNED_KEY_ALGORITHMS:
                raise MatrixError(
                    400, "M_BAD_JSON", f"Key {full_id!r} must be a signed key object ({algorithm})."
                )
        elif isinstance(key, dict):
            inner = key.get("key")
            if not isinstance(inner, str) or not inner or len(inner) > MAX_KEY_LENGTH:
                raise MatrixError(400, "M_BAD_JSON", f"Key {full_id!r} needs a string 'key'.")
            # KeyObject: "signatures: Required".
            if "signatures" not in key:
                raise MatrixError(400, "M_BAD_JSON", f"Key {full_id!r} has no 'signatures'.")
            _check_signatures_shape(key["signatures"], f"key {full_id!r}")
        else:
            raise MatrixError(
                400, "M_BAD_JSON", f"Key {full_id!r} must be a string or a key object."
            )
        parsed.append(
            ParsedKey(algorithm, key_id, orjson.dumps(key).decode(), _canonical(key), key)
        )
    return parsed


def _string_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise MatrixError(400, "M_BAD_JSON", f"'{what}' must be an object of strings.")
    return value


class E2eKeysService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.store = E2eStore(hs.database)

    def _is_local(self, user_id: str) -> bool:
        return is_my_user_id(user_id, self.server_name)

    @staticmethod
    def _server_of(user_id: str) -> str:
        return server_name_of(user_id) or user_id

    async def notify_device_change(self, user_id: str) -> None:
        """Wake /sync of every user sharing a room with ``user_id`` (and the user)."""
        users = {user_id}
        # getattr: the accounts CLI and some tests run with a smaller rooms object.
        sharing = getattr(self.hs.rooms, "users_sharing_rooms_with", None)
        if sharing is not None:
            users |= set(await sharing(user_id))
        self.hs.notifier.notify_users(users)
        # Other servers sharing a room hear of a local user's change (m.device_list_update).
        federation_edus = getattr(self.hs, "federation_edus", None)
        if federation_edus is not None and self._is_local(user_id):
            await federation_edus.on_local_device_change(user_id)

    # --- POST /keys/upload ---------------------------------------------------------------

    def _check_device_keys(self, device_keys: object, user_id: str, device_id: str) -> dict[str, Any]:
        """The ``device_keys`` object (definitions/device_keys.yaml), checked: it is for
        the requester's own device, and self-signed with its ed25519 key."""
        if not isinstance(device_keys, dict):
            raise MatrixError(400, "M_BAD_JSON", "'device_keys' must be an object.")
        if device_keys.get("user_id") != user_id or device_keys.get("device_id") != device_id:
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                "'device_keys.user_id' and 'device_keys.device_id' must be the requester's "
                f"({user_id}, {device_id}).",
            )
        algorithms = device_keys.get("algorithms")
        if not isinstance(algorithms, list) or not all(
            isinstance(a, str) and a for a in algorithms
        ):
            raise MatrixError(400, "M_BAD_JSON", "'device_keys.algorithms' must be a list of strings.")
        keys = _string_map(device_keys.get("keys"), "device_keys.keys")
        for key_id in keys:
            algorithm, sep, name = key_id.partition(":")
            if not sep or not algorithm or not name:
                raise MatrixError(
                    400, "M_INVALID_PARAM", f"Device key ID {key_id!r} must be '<algorithm>:<device_id>'."
                )
        unsigned = device_keys.get("unsigned")
        if unsigned is not None and not isinstance(unsigned, dict):
            # /keys/query adds device_display_name to it; it must be an object.
            raise MatrixError(400, "M_BAD_JSON", "'device_keys.unsigned' must be an object.")
        signing_key_id = f"ed25519:{device_id}"
        public_key = keys.get(signing_key_id)
        if public_key is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"'device_keys.keys' has no {signing_key_id!r}.")
        _canonical(device_keys)
        # Client-Server API, "Device keys": signed by the device's own ed25519 key.
        if not _verify(device_keys, user_id, signing_key_id, public_key):
            raise MatrixError(
                400, "M_INVALID_SIGNATURE", "'device_keys' are not signed by the device's ed25519 key."
            )
        return device_keys

    async def _check_key_signatures(
        self,
        user_id: str,
        device_id: str,
        device_keys: dict[str, Any] | None,
        keys: list[ParsedKey],
    ) -> None:
        """Signed one-time and fallback keys must be signed by the device's ed25519
        key ("For Olm version 1, devices use signed_curve25519 one-time keys,
        signed by the device's Ed25519 key"): 400 M_INVALID_SIGNATURE otherwise.

        The device's key comes from this upload or the stored device keys; a
        device that has published none yet cannot be checked (as Synapse, which
        checks none), and its keys are useless to others until it does.
        """
        signed = [key for key in keys if isinstance(key.value, dict)]
        if not signed:
            return
        signing_key_id = f"ed25519:{device_id}"
        if device_keys is None:
            stored = await self.store.get_device_keys(user_id, device_id)
            if stored is None:
                return
            device_keys = orjson.loads(stored)
        public_key = device_keys["keys"][signing_key_id]
        for key in signed:
            assert isinstance(key.value, dict)
            if not _verify(key.value, user_id, signing_key_id, public_key):
                raise MatrixError(
                    400,
                    "M_INVALID_SIGNATURE",
                    f"Key {key.algorithm}:{key.key_id} is not signed by the device's ed25519 key.",
                )

    async def upload_keys(self, requester: Requester, body: Mapping[str, Any]) -> dict[str, int]:
        """Store device, one-time and fallback keys; the one-time key counts.

        All or nothing: any bad key rejects the whole upload. Re-uploading a
        one-time key with the same ID and content is a no-op; with other content
        it is 400 M_INVALID_PARAM (as Synapse, which answers 400 "already exists").
        New device keys replace the old ones (as Synapse) and count as a device
        list change.
        """
        user_id, device_id = requester.user_id, requester.device_id
        if device_id is None:
            raise MatrixError(400, "M_INVALID_PARAM", "This access token has no device.")
        device_keys = body.get("device_keys")
        if device_keys is not None:
            device_keys = self._check_device_keys(device_keys, user_id, device_id)
        one_time_keys = _parse_key_map(body.get("one_time_keys"), "one_time_keys")
        fallback_keys = _parse_key_map(body.get("fallback_keys"), "fallback_keys")
        fallback_by_algorithm: dict[str, ParsedKey] = {}
        for key in fallback_keys:
            if key.algorithm in fallback_by_algorithm:
                raise MatrixError(
                    400, "M_INVALID_PARAM", f"At most one fallback key per algorithm ({key.algorithm})."
                )
            fallback_by_algorithm[key.algorithm] = key
        seen: set[tuple[str, str]] = set()
        by_algorithm: dict[str, list[ParsedKey]] = {}
        for key in one_time_keys:
            if (key.algorithm, key.key_id) in seen:
                raise MatrixError(400, "M_INVALID_PARAM", f"Duplicate key ID {key.key_id!r}.")
            seen.add((key.algorithm, key.key_id))
            by_algorithm.setdefault(key.algorithm, []).append(key)
        await self._check_key_signatures(user_id, device_id, device_keys, one_time_keys + fallback_keys)

        changed = False
        async with self.hs.database.transaction() as txn:
            if device_keys is not None:
                current = await self.store.get_device_keys(user_id, device_id, txn)
                if current is None or _canonical(orjson.loads(current)) != _canonical(device_keys):
                    await self.store.set_device_keys(
                        txn, user_id, device_id, orjson.dumps(device_keys).decode()
                    )
                    changed = True
            new_keys: list[tuple[str, str, str]] = []
            for algorithm, keys in by_algorithm.items():
                existing = await self.store.get_one_time_keys(
                    txn, user_id, device_id, algorithm, [k.key_id for k in keys]
                )
                for key in keys:
                    old = existing.get(key.key_id)
                    if old is None:
                        new_keys.append((algorithm, key.key_id, key.key_json))
                    elif _canonical(orjson.loads(old)) != key.canonical:
                        raise MatrixError(
                            400,
                            "M_INVALID_PARAM",
                            f"One time key {algorithm}:{key.key_id} already exists with other content.",
                        )
            await self.store.add_one_time_keys(txn, user_id, device_id, new_keys)
            for algorithm, key in fallback_by_algorithm.items():
                await self.store.set_fallback_key(
                    txn, user_id, device_id, algorithm, key.key_id, key.key_json
                )
            if changed:
                await self.store.add_device_list_change(txn, user_id)
            counts = await self.store.one_time_key_counts(user_id, device_id, txn)
        if changed:
            await self.notify_device_change(user_id)
        # Synapse always reports signed_curve25519, which clients expect.
        counts.setdefault("signed_curve25519", 0)
        return counts

    # --- POST /keys/query -----------------------------------------------------------------

    @staticmethod
    def _check_user_map(value: object, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be an object.")
        for user_id in value:
            if not UserID.is_valid(user_id):
                raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {user_id[:300]!r} in '{name}'.")
        return value

    async def query_keys(self, requester: Requester, device_keys: object) -> dict[str, Any]:
        """POST /keys/query: device keys and cross-signing keys of the named users."""
        query = self._check_user_map(device_keys, "device_keys")
        total = 0
        for user_id, devices in query.items():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise MatrixError(
                    400, "M_BAD_JSON", f"'device_keys.{user_id}' must be a list of device IDs."
                )
            total += len(devices) or 1
        if total > MAX_QUERIED_DEVICES:
            raise MatrixError(413, "M_TOO_LARGE", "Too many devices queried at once.")
        local = {u: d for u, d in query.items() if self._is_local(u)}
        result = await self.local_key_answers(requester.user_id, local)
        result["failures"] = {}
        remote = {u: d for u, d in query.items() if not self._is_local(u)}
        if remote:
            await self.hs.federation_queries.query_remote_keys(remote, result)
        return result

    async def local_key_answers(
        self, viewer: str | None, query: Mapping[str, list[str]], *, display_names: bool = True
    ) -> dict[str, Any]:
        """Device and cross-signing keys of local users (``query``: user ID → device
        IDs, empty for all), as ``viewer`` sees them (None: another server, which
        sees only the users' own signatures and no user-signing key; without
        ``display_names`` no device names either, as Synapse's default
        ``allow_device_name_lookup_over_federation: false``)."""
        result: dict[str, Any] = {
            "device_keys": {},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        for user_id, devices in query.items():
            if not await self.hs.accounts.user_exists(user_id):
                continue  # unknown users are left out
            rows = await self.store.devices_with_keys(user_id, devices or None)
            if not display_names:
                rows = [replace(row, display_name=None) for row in rows]
            signatures = await self.store.signatures_of(user_id)
            visible = [s for s in signatures if s.signer_user_id in (user_id, viewer)]
            result["device_keys"][user_id] = self._device_key_objects(rows, visible)
            cross_signing = await self.store.get_cross_signing_keys(user_id)
            for key_type, (public_key, key_json) in cross_signing.items():
                if key_type == "user_signing" and user_id != viewer:
                    continue  # "only visible to the user it belongs to"
                obj = orjson.loads(key_json)
                obj = _with_signatures(obj, [s for s in visible if s.target_key_id == public_key])
                result[_QUERY_FIELD[key_type]][user_id] = obj
        return result

    @staticmethod
    def _device_key_objects(
        rows: list[DeviceKeysRow], signatures: list[SignatureRow]
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for row in rows:
            if row.key_json is None:
                continue  # a device without keys is not listed
            obj = orjson.loads(row.key_json)
            obj = _with_signatures(obj, [s for s in signatures if s.target_key_id == row.device_id])
            unsigned = obj.get("unsigned")
            # Uploads check it is an object; rows stored before that check might not be.
            unsigned = dict(unsigned) if isinstance(unsigned, dict) else {}
            if row.display_name is not None:
                unsigned["device_display_name"] = row.display_name
            else:
                unsigned.pop("device_display_name", None)
            obj["unsigned"] = unsigned
            answer[row.device_id] = obj
        return answer

    # --- POST /keys/claim -----------------------------------------------------------------

    async def claim_keys(self, one_time_keys: object) -> dict[str, Any]:
        """POST /keys/claim: for each device a one-time key, else its fallback key.

        Each one-time key is deleted in the statement that returns it, so it is
        handed out once, concurrent claims included (see E2eStore.claim_one_time_key).
        """
        query = self._check_user_map(one_time_keys, "one_time_keys")
        total = 0
        for user_id, devices in query.items():
            if not isinstance(devices, dict) or not all(
                isinstance(alg, str) and alg for alg in devices.values()
            ):
                raise MatrixError(
                    400, "M_BAD_JSON", f"'one_time_keys.{user_id}' must map device IDs to algorithms."
                )
            total += len(devices)
        if total > MAX_QUERIED_DEVICES:
            raise MatrixError(413, "M_TOO_LARGE", "Too many keys claimed at once.")
        local = {u: d for u, d in query.items() if self._is_local(u)}
        claimed = await self.claim_local_keys(local)
        failures: dict[str, Any] = {}
        remote = {u: d for u, d in query.items() if not self._is_local(u)}
        if remote:
            await self.hs.federation_queries.claim_remote_keys(remote, claimed, failures)
        return {"one_time_keys": claimed, "failures": failures}

    async def claim_local_keys(self, local: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """One key per (local user, device, algorithm); user → device → key ID → key."""
        claimed: dict[str, Any] = {}
        fallback_used: set[str] = set()
        if local:
            async with self.hs.database.transaction() as txn:
                for user_id, devices in local.items():
                    for device_id, algorithm in devices.items():
                        found = await self.store.claim_one_time_key(txn, user_id, device_id, algorithm)
                        if found is None:
                            found = await self.store.claim_fallback_key(
                                txn, user_id, device_id, algorithm
                            )
                            if found is not None:
                                fallback_used.add(user_id)
                        if found is None:
                            continue
                        key_id, key_json = found
                        claimed.setdefault(user_id, {}).setdefault(device_id, {})[
                            f"{algorithm}:{key_id}"
                        ] = orjson.loads(key_json)
        if fallback_used:
            # device_unused_fallback_key_types changed for the owners' /sync.
            self.hs.notifier.notify_users(fallback_used)
        return claimed

    # --- cross-signing ---------------------------------------------------------------------

    def _parse_cross_signing_key(
        self, value: object, key_type: str, user_id: str
    ) -> tuple[str, dict[str, Any]]:
        """A cross-signing key object (definitions/cross_signing_key.yaml) of
        ``user_id`` with ``usage`` containing ``key_type``; its public key."""
        name = _BODY_FIELD[key_type]
        if not isinstance(value, dict):
            raise MatrixError(400, "M_BAD_JSON", f"'{name}' must be an object.")
        if value.get("user_id") != user_id:
            raise MatrixError(400, "M_INVALID_PARAM", f"'{name}.user_id' must be {user_id}.")
        usage = value.get("usage")
        if not isinstance(usage, list) or not all(isinstance(u, str) for u in usage):
            raise MatrixError(400, "M_BAD_JSON", f"'{name}.usage' must be a list of strings.")
        if key_type not in usage:
            raise MatrixError(400, "M_INVALID_PARAM", f"'{name}.usage' must contain {key_type!r}.")
        keys = _string_map(value.get("keys"), f"{name}.keys")
        # "keys: The public key. The object must have exactly one property".
        if len(keys) != 1:
            raise MatrixError(400, "M_INVALID_PARAM", f"'{name}.keys' must hold exactly one key.")
        ((key_id, public_key),) = keys.items()
        if key_id != f"ed25519:{public_key}" or _ed25519_key(public_key) is None:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"'{name}.keys' must be {{'ed25519:<key>': '<key>'}} with an ed25519 key."
            )
        signatures = value.get("signatures")
        if signatures is not None and not (
            isinstance(signatures, dict) and all(isinstance(s, dict) for s in signatures.values())
        ):
            raise MatrixError(400, "M_BAD_JSON", f"'{name}.signatures' must be an object of objects.")
        _canonical(value)
        return public_key, value

    async def parse_cross_signing_upload(
        self, user_id: str, body: Mapping[str, Any]
    ) -> tuple[dict[str, tuple[str, dict[str, Any]]], bool]:
        """Validate POST /keys/device_signing/upload; the keys by type and whether
        the upload needs user-interactive auth.

        cross_signing.yaml: no UIA "when there is no existing cross-signing
        master key uploaded to the homeserver, OR there is an existing
        cross-signing master key and it exactly matches the cross-signing master
        key provided in the request body" (and the other keys match too).
        """
        keys: dict[str, tuple[str, dict[str, Any]]] = {}
        for key_type in CROSS_SIGNING_TYPES:
            value = body.get(_BODY_FIELD[key_type])
            if value is not None:
                keys[key_type] = self._parse_cross_signing_key(value, key_type, user_id)
        # cross_signing.yaml, 403: "The public key of one of the keys is the same
        # as one of the user's device IDs" (a key ID must name one key).
        clashes = await self.store.existing_device_ids(user_id, [pub for pub, _ in keys.values()])
        if clashes:
            raise MatrixError(403, "M_FORBIDDEN", "Key ID in use.")
        existing = await self.store.get_cross_signing_keys(user_id)
        master = keys.get("master")
        if master is None and "master" not in existing and keys:
            raise MatrixError(400, "M_MISSING_PARAM", "Must provide a master cross-signing key.")
        master_public = master[0] if master is not None else existing.get("master", ("",))[0]
        for key_type in ("self_signing", "user_signing"):
            if key_type in keys:
                _, obj = keys[key_type]
                # "signed by the master key".
                if not _verify(obj, user_id, f"ed25519:{master_public}", master_public):
                    raise MatrixError(
                        400,
                        "M_INVALID_SIGNATURE",
                        f"'{_BODY_FIELD[key_type]}' is not signed by the master key.",
                    )
        if "master" not in existing:
            return keys, False
        unchanged = all(
            key_type in existing
            and _canonical(orjson.loads(existing[key_type][1])) == _canonical(obj)
            for key_type, (_, obj) in keys.items()
        )
        return keys, not unchanged

    async def store_cross_signing_keys(
        self, user_id: str, keys: dict[str, tuple[str, dict[str, Any]]]
    ) -> None:
        if not keys:
            return
        async with self.hs.database.transaction() as txn:
            existing = await self.store.get_cross_signing_keys(user_id, txn)
            changed = False
            for key_type, (public_key, obj) in keys.items():
                old = existing.get(key_type)
                if old is not None and _canonical(orjson.loads(old[1])) == _canonical(obj):
                    continue
                if old is not None:
                    # Signatures made with a replaced key no longer stand.
                    await self.store.delete_signatures_by_signer(txn, user_id, [f"ed25519:{old[0]}"])
                await self.store.set_cross_signing_key(
                    txn, user_id, key_type, public_key, orjson.dumps(obj).decode()
                )
                changed = True
            if changed:
                await self.store.add_device_list_change(txn, user_id)
        if changed:
            await self.notify_device_change(user_id)

    async def upload_signatures(self, requester: Requester, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST /keys/signatures/upload; ``failures`` per user and key ID.

        Client-Server API, "Cross-signing": the self-signing key signs the
        user's own devices, devices sign their user's master key, the
        user-signing key signs other users' master keys. Each signature is
        checked with ed25519 against the key it claims; bad ones are reported
        in ``failures`` (M_INVALID_SIGNATURE, M_NOT_FOUND for an unknown key,
        M_INVALID_PARAM for an object that is not the stored key), good ones
        stored.
        """
        signer = requester.user_id
        self._check_user_map(dict(body), "request body")
        failures: dict[str, dict[str, Any]] = {}
        accepted: list[SignatureRow] = []
        own_keys = await self.store.get_cross_signing_keys(signer)

        def fail(user_id: str, key_id: str, errcode: str, error: str) -> None:
            failures.setdefault(user_id, {})[key_id] = {"errcode": errcode, "error": error}

        for user_id, objects in body.items():
            if not isinstance(objects, dict) or not all(isinstance(o, dict) for o in objects.values()):
                raise MatrixError(400, "M_BAD_JSON", f"'{user_id}' must map key IDs to signed objects.")
            if not self._is_local(user_id):
                for key_id in objects:
                    fail(user_id, key_id, "M_UNRECOGNIZED", "Federation is not supported yet.")
                continue
            target_keys = own_keys if user_id == signer else await self.store.get_cross_signing_keys(user_id)
            for key_id, obj in objects.items():
                result = await self._check_signed_object(signer, own_keys, user_id, target_keys, key_id, obj)
                if isinstance(result, tuple):
                    fail(user_id, key_id, *result)
                else:
                    accepted += result
        # A signature on the signer's own device or master key changes what
        # everyone sees of the signer. A signature on another user's master key
        # is only shown to the signer, whose other devices must re-query that
        # user to see it: Synapse puts the target in the signer's own
        # device_lists.changed; here it is recorded as a change of the target
        # (the signer's devices then see the target in ``changed``; others
        # sharing a room with the target re-query and find nothing new).
        changed_users = sorted({row.target_user_id for row in accepted})
        if accepted:
            async with self.hs.database.transaction() as txn:
                await self.store.add_signatures(txn, accepted)
                for user_id in changed_users:
                    await self.store.add_device_list_change(txn, user_id)
            for user_id in changed_users:
                await self.notify_device_change(user_id)
        return {"failures": failures}

    async def _check_signed_object(
        self,
        signer: str,
        own_keys: dict[str, tuple[str, str]],
        target_user: str,
        target_keys: dict[str, tuple[str, str]],
        key_id: str,
        obj: dict[str, Any],
    ) -> list[SignatureRow] | tuple[str, str]:
        """The signatures of ``obj`` to store, or (errcode, error)."""
        try:
            signable = signable_bytes(obj)
        except CanonicalJSONError:
            return ("M_BAD_JSON", "Not canonical JSON.")
        sigs = obj.get("signatures")
        signer_sigs: dict[str, Any] = {}
        if isinstance(sigs, dict) and isinstance(sigs.get(signer), dict):
            signer_sigs = sigs[signer]

        def stored_matches(stored_json: str) -> bool:
            return signable_bytes(orjson.loads(stored_json)) == signable

        if target_user == signer:
            master = target_keys.get("master")
            if master is not None and key_id == master[0]:
                # Devices signing their own user's master key.
                if not stored_matches(master[1]):
                    return ("M_INVALID_PARAM", "The object is not the stored master key.")
                rows: list[SignatureRow] = []
                for sig_key_id, signature in signer_sigs.items():
                    if not isinstance(sig_key_id, str) or not sig_key_id.startswith("ed25519:"):
                        continue
                    device_id = sig_key_id.removeprefix("ed25519:")
                    if device_id == master[0]:
                        continue  # the master key's own self-signature is part of the key
                    device_json = await self.store.get_device_keys(signer, device_id)
                    if device_json is None:
                        return ("M_NOT_FOUND", f"Unknown signing device {device_id}.")
                    device_key = orjson.loads(device_json)["keys"].get(sig_key_id)
                    if not isinstance(device_key, str) or not _verify(obj, signer, sig_key_id, device_key):
                        return ("M_INVALID_SIGNATURE", f"Bad signature by {sig_key_id}.")
                    rows.append(SignatureRow(signer, sig_key_id, signer, key_id, signature))
                if not rows:
                    return ("M_INVALID_SIGNATURE", "No device signature on the master key.")
                return rows
            # One of the signer's devices, signed with the self-signing key.
            device_json = await self.store.get_device_keys(signer, key_id)
            if device_json is None:
                return ("M_NOT_FOUND", f"Unknown device {key_id}.")
            if not stored_matches(device_json):
                return ("M_INVALID_PARAM", "The object is not the stored device key.")
            self_signing = own_keys.get("self_signing")
            if self_signing is None:
                return ("M_MISSING_PARAM", "No self-signing key is uploaded.")
            ssk_id = f"ed25519:{self_signing[0]}"
            if ssk_id not in signer_sigs:
                return ("M_INVALID_SIGNATURE", "No signature by the self-signing key.")
            if not _verify(obj, signer, ssk_id, self_signing[0]):
                return ("M_INVALID_SIGNATURE", "Bad signature by the self-signing key.")
            return [SignatureRow(signer, ssk_id, signer, key_id, signer_sigs[ssk_id])]
        # Another user's master key, signed with the signer's user-signing key.
        master = target_keys.get("master")
        if master is None or key_id != master[0]:
            return ("M_NOT_FOUND", "Only another user's master key can be signed.")
        if not stored_matches(master[1]):
            return ("M_INVALID_PARAM", "The object is not the stored master key.")
        user_signing = own_keys.get("user_signing")
        if user_signing is None:
            return ("M_MISSING_PARAM", "No user-signing key is uploaded.")
        usk_id = f"ed25519:{user_signing[0]}"
        if usk_id not in signer_sigs:
            return ("M_INVALID_SIGNATURE", "No signature by the user-signing key.")
        if not _verify(obj, signer, usk_id, user_signing[0]):
            return ("M_INVALID_SIGNATURE", "Bad signature by the user-signing key.")
        return [SignatureRow(signer, usk_id, target_user, key_id, signer_sigs[usk_id])]

    # --- providers for /sync -------------------------------------------------------------

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """``device_one_time_keys_count``: unclaimed one-time keys per algorithm
        (signed_curve25519 always present, as Synapse)."""
        counts = await self.store.one_time_key_counts(user_id, device_id)
        counts.setdefault("signed_curve25519", 0)
        return counts

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """``device_unused_fallback_key_types``: algorithms with an unused fallback key."""
        return await self.store.unused_fallback_key_types(user_id, device_id)

    async def device_list_changes(
        self,
        user_id: str,
        from_pos: int,
        to_pos: int,
        *,
        events_from: int | None = None,
        events_to: int | None = None,
    ) -> tuple[set[str], set[str]]:
        """``device_lists`` for /sync and /keys/changes: (changed, left).

        changed: users sharing a room with ``user_id`` (the user included)
        whose devices or keys changed with ``from_pos < device_lists position <=
        to_pos``; with ``events_from``/``events_to`` (the "events" stream
        positions of the same two tokens) also everyone who newly shares a room
        with the user (the user joined a room, or someone joined one of the
        user's rooms). left: users who no longer share any room with the user
        after a membership change in that events range (modules/end_to_end_encryption.md,
        "Tracking the device list for a user").
        """
        memberships_moved = (
            events_from is not None and events_to is not None and events_from < events_to
        )
        if from_pos >= to_pos and not memberships_moved:
            return set(), set()  # nothing happened: most long-polling syncs
        sharing: set[str] | None = None
        changed: set[str] = set()
        if from_pos < to_pos:
            sharing = set(await self.hs.rooms.users_sharing_rooms_with(user_id))
            sharing.add(user_id)
            changed = await self.store.users_with_device_changes(sorted(sharing), from_pos, to_pos)
        left: set[str] = set()
        if events_from is not None and events_to is not None and memberships_moved:
            own = await self.hs.rooms.events.membership_changes_for_user(user_id, events_from, events_to)
            # Every membership change in the range, whatever the room (few, for
            # an incremental sync): without any, the user's rooms need no look.
            recent = await self.hs.rooms.events.membership_changes_between(
                events_from, events_to, _MEMBERSHIP_SCAN_CAP
            )
            if not own and recent == []:
                return await self._visible_device_changes(user_id, changed, left, sharing)
            joined_now = set(await self.hs.rooms.joined_room_ids(user_id))
            for change in own:
                if change.room_id in joined_now:
                    changed |= await self.hs.rooms.joined_user_ids(change.room_id)
                else:
                    left |= await self.hs.rooms.joined_user_ids(change.room_id)
            if joined_now:
                if recent is None:  # too many to list: ask per room
                    recent = await self.hs.rooms.events.membership_changes_in_rooms(
                        sorted(joined_now), events_from, events_to
                    )
                for change in recent:
                    if change.room_id not in joined_now or change.user_id == user_id:
                        continue
                    if change.membership == "join":
                        changed.add(change.user_id)
                    else:
                        left.add(change.user_id)
        return await self._visible_device_changes(user_id, changed, left, sharing)

    async def _visible_device_changes(
        self, user_id: str, changed: set[str], left: set[str], sharing: set[str] | None
    ) -> tuple[set[str], set[str]]:
        """(changed, left) limited to users who (no longer) share a room with ``user_id``."""
        if not changed and not left:
            return changed, left
        if sharing is None:
            # Only now, when there is something to check against it: every
            # /sync comes here, and this query grows with the user's rooms.
            sharing = set(await self.hs.rooms.users_sharing_rooms_with(user_id))
            sharing.add(user_id)
        return changed & sharing, left - sharing

    async def current_device_list_position(self) -> int:
        from ranvier.storage.engine import current_stream_position

        return await current_stream_position(self.hs.database, "device_lists")


def user_id_or_400(value: str) -> str:
    try:
        UserID.parse(value)
    except InvalidIdentifier:
        raise MatrixError(400, "M_INVALID_PARAM", f"Invalid user ID {value[:300]!r}.") from None
    return value
