"""Checks performed on receipt of a PDU: the pure steps (no I/O, no clock).

Spec: Server-Server API "Checks performed on receipt of a PDU". A received
event must

1. be a valid event for its room version, "otherwise it is dropped";
2. pass signature checks, "otherwise it is dropped";
3. pass hash checks, "otherwise it is redacted before being processed further";
4. – 6. pass the authorisation rules against its auth events, the state before
   it and the current state (rejected / soft-failed): the receiver does those
   with ``ranvier.core.auth_rules`` once it has the events they need.

This module does steps 1–3, plus the server ACL that ``/send`` applies to each
PDU (Server-Server API "Server Access Control Lists (ACLs)"). The receiver
calls :func:`check_received_pdu` for every PDU whatever its source (``/send``,
joins, backfill, ``get_missing_events``, ``/event``): one check path for every
source is the lesson of CVE-2022-39200.

Keys: the receiver first asks :func:`required_signing_keys` which (server, key
ID) pairs an event needs, fetches them (the keyring does I/O, this module does
not), then passes a lookup function ``keys_for(server_name, key_id)``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ranvier.core.canonical_json import CanonicalJSONError
from ranvier.core.events import (
    MAX_PDU_FIELD_BYTES,
    Event,
    EventFormatError,
    PDUTooLargeError,
    check_pdu_size_limits,
    compute_content_hash,
    compute_event_id,
    identifier_server_name,
    required_signature_servers,
    verify_event_signature,
)
from ranvier.core.redaction import redact
from ranvier.core.room_versions import RoomVersion, UnknownRoomVersion, get_room_version
from ranvier.core.server_acl import ServerAcl
from ranvier.core.signing import ED25519, SignatureError, decode_base64

# --- limits -----------------------------------------------------------------------
# The size limits (65,536 bytes a PDU, 255 a field) are ``events.check_pdu_size_limits``'s.

#: PDU schemas: ``prev_events`` "Must contain less than or equal to 20 events",
#: ``auth_events`` "less than or equal to 10 events".
MAX_PREV_EVENTS: Final = 20
MAX_AUTH_EVENTS: Final = 10
#: ``depth`` "Must be less than the maximum value for an integer (2^63 - 1). If
#: the room's depth is already at the limit, the depth must be set to the
#: limit" (pdu_v1 … pdu_v4; from v6 canonical JSON caps it at 2^53 - 1 anyway).
#: Unbounded depths made rooms unusable (CVE-2018-10657); Synapse bounds it the
#: same way and also refuses negative depths.
MAX_DEPTH: Final = 2**63 - 1
#: How deeply a PDU may nest objects and arrays, the PDU itself being level 1.
#: The spec sets no limit; every encoder must still be able to write the event
#: back out inside the responses that wrap it (orjson stops at 254 levels;
#: /sync puts event content about 8 levels down). The receiver may pass the
#: server-wide JSON nesting limit instead.
MAX_PDU_NESTING: Final = 100

#: ``unsigned`` is not covered by hashes or signatures, so a remote server
#: could put anything there (``redacted_because``, ``m.relations``, ...). Keep
#: only what the origin server legitimately adds, as Synapse does
#: (``_strip_unsigned_values``): ``age`` always; the stripped room state of
#: invites and knocks on membership events.
_KEPT_UNSIGNED: Final = frozenset({"age"})
_KEPT_UNSIGNED_MEMBER: Final = frozenset({"age", "invite_room_state", "knock_room_state"})

#: Keys every PDU must have (components/pdu_base.yaml, auth_events_prev_events_v4.yaml,
#: pdu_v1.yaml, pdu_v3.yaml).
_REQUIRED_KEYS: Final = (
    "type",
    "sender",
    "content",
    "origin_server_ts",
    "depth",
    "hashes",
    "signatures",
    "prev_events",
    "auth_events",
)

# --- errors -------------------------------------------------------------------------


class PduCheckError(ValueError):
    """A received PDU failed a check. ``errcode`` is what a single-PDU endpoint answers."""

    errcode: ClassVar[str] = "M_BAD_JSON"


class InvalidPdu(PduCheckError):
    """Step 1: not a valid event for its room version; the PDU is dropped."""


class PduTooLarge(InvalidPdu):
    """Step 1: a size limit is exceeded (``events.PDUTooLargeError``, as a result)."""

    errcode: ClassVar[str] = "M_TOO_LARGE"


class UnsupportedRoomVersion(InvalidPdu):
    """Step 1: the room version is not one this server knows."""

    errcode: ClassVar[str] = "M_UNSUPPORTED_ROOM_VERSION"


class PduSignatureError(PduCheckError):
    """Step 2: a required signature is missing or does not verify; the PDU is dropped."""

    errcode: ClassVar[str] = "M_FORBIDDEN"


class DeniedByServerAcl(PduCheckError):
    """The server is denied by the room's ``m.room.server_acl``; the PDU is ignored."""

    errcode: ClassVar[str] = "M_FORBIDDEN"


# --- results ------------------------------------------------------------------------


class PduOutcome(enum.Enum):
    #: Passed steps 1–3: go on with the authorisation checks.
    ACCEPTED = "accepted"
    #: Passed steps 1–2, but the content hash does not match: go on with the
    #: redacted copy in ``event`` (step 3).
    REDACTED = "redacted"
    #: Keep the event, but as rejected, without authorisation checks: a field
    #: exceeds its byte limit in a room version where deployed servers keep
    #: such events (v1–v10; see ``events.check_pdu_size_limits``).
    REJECTED = "rejected"
    #: Failed step 1 or 2, or denied by the ACL: not stored at all.
    DROPPED = "dropped"


@dataclass(frozen=True)
class PduCheckResult:
    """What became of one PDU; ``error`` goes in ``/send``'s per-PDU result map."""

    outcome: PduOutcome
    #: The event to go on with (the redacted copy for REDACTED); None if dropped.
    event: Event | None
    #: None if the PDU was dropped before its ID could be worked out.
    event_id: str | None
    error: PduCheckError | None = None

    @property
    def reason(self) -> str | None:
        return None if self.error is None else str(self.error)


# --- keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyKey:
    """A remote server's public key as the keyring knows it.

    ``valid_until_ts``: for a current key, the ``valid_until_ts`` of the key
    response (which the keyring caps at 7 days into the future, room version 5
    "Signing key validity period"); for an ``old_verify_keys`` entry, its
    ``expired_ts``.
    """

    key: bytes
    valid_until_ts: int


#: ``keys_for(server_name, key_id)``: the key, or None if the keyring has none.
KeyLookup = Callable[[str, str], VerifyKey | None]


def minimum_valid_until_ts(event: Event) -> int:
    """How long a key must be valid to verify ``event``.

    Room version 5+: "servers MUST enforce the ``valid_until_ts`` property from
    a key request is at least as large as the ``origin_server_ts`` for the event
    being validated" (fragment v5-signing-requirements). Earlier versions do
    not enforce key validity; Synapse asks for keys valid at 0 there.
    """
    return event.origin_server_ts if event.room_version.enforce_key_validity else 0


def key_is_valid_for(key: VerifyKey, event: Event) -> bool:
    return key.valid_until_ts >= minimum_valid_until_ts(event)


# --- step 1: format ---------------------------------------------------------------------


def _room_version(room_version: RoomVersion | str) -> RoomVersion:
    if isinstance(room_version, RoomVersion):
        return room_version
    try:
        return get_room_version(room_version)
    except UnknownRoomVersion:
        raise UnsupportedRoomVersion(f"unsupported room version {room_version!r}") from None


# To become the shared JSON depth check of core/canonical_json.py (branch h9-json) once merged.
def exceeds_nesting(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels deep.

    Iterative, so a hostile document cannot exhaust the Python stack. (The
    server-wide JSON nesting check may live in ``canonical_json``; this one
    can then call it.)
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


def _strip_unsigned(body: dict[str, Any]) -> None:
    if "unsigned" not in body:
        return
    unsigned = body["unsigned"]
    if not isinstance(unsigned, dict):
        del body["unsigned"]
        return
    kept = _KEPT_UNSIGNED_MEMBER if body.get("type") == "m.room.member" else _KEPT_UNSIGNED
    body["unsigned"] = {key: value for key, value in unsigned.items() if key in kept}


def _check_required_keys(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    missing = [key for key in _REQUIRED_KEYS if key not in pdu]
    if room_version.event_ids_in_pdu and "event_id" not in pdu:
        missing.append("event_id")
    # v12: "room_id ... Omitted from m.room.create events" (room_id_v12.yaml);
    # a create event that has one is rejected by auth rule 1.2.
    create_without_room_id = room_version.room_id_from_create_event and (
        pdu.get("type") == "m.room.create"
    )
    if "room_id" not in pdu and not create_without_room_id:
        missing.append("room_id")
    if missing:
        raise InvalidPdu(f"PDU lacks {', '.join(missing)}")


def _check_hashes_and_signatures_shape(pdu: Mapping[str, Any]) -> None:
    hashes = pdu["hashes"]
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        raise InvalidPdu("hashes must be an object with a sha256 string")
    try:
        decode_base64(hashes["sha256"])
    except ValueError:
        # Synapse refuses the event (400) rather than redacting it.
        raise InvalidPdu("hashes.sha256 is not base64") from None
    signatures = pdu["signatures"]
    if not isinstance(signatures, dict) or not all(
        isinstance(by_key, dict) and all(isinstance(sig, str) for sig in by_key.values())
        for by_key in signatures.values()
    ):
        raise InvalidPdu("signatures must map server names to objects of strings")


def _check_counts_and_depth(event: Event) -> None:
    if len(event.prev_event_ids) > MAX_PREV_EVENTS:
        raise InvalidPdu(f"more than {MAX_PREV_EVENTS} prev_events")
    if len(event.auth_event_ids) > MAX_AUTH_EVENTS:
        raise InvalidPdu(f"more than {MAX_AUTH_EVENTS} auth_events")
    if not 0 <= event.depth <= MAX_DEPTH:
        raise InvalidPdu(f"depth {event.depth} is outside 0..2^63-1")


def _size_violation(event: Event) -> PduTooLarge | None:
    """The size limits: raise ``PduTooLarge`` for a limit that drops the PDU;
    return the one that keeps it as rejected (v1–v10 byte limits), if any.

    Measured with the room version's canonical JSON, as hashes and signatures
    are, so once this succeeds steps 2 and 3 cannot fail on encoding: the
    redacted copy and the content hash input are subsets of the PDU.
    """
    try:
        check_pdu_size_limits(event.room_version, event.pdu)
    except PDUTooLargeError as exc:
        if exc.keep_as_rejected:
            return PduTooLarge(str(exc))
        raise PduTooLarge(str(exc)) from None
    except EventFormatError as exc:  # not canonical JSON for its room version
        raise InvalidPdu(str(exc)) from None
    return None


def _check_server_names(event: Event) -> None:
    try:
        identifier_server_name(event.sender, "@", "sender")
        if event.room_version.event_ids_in_pdu:
            identifier_server_name(event.event_id, "$", "event_id")
    except EventFormatError as exc:
        raise InvalidPdu(str(exc)) from None


def _parse(pdu: Mapping[str, Any], room_version: RoomVersion) -> Event:
    body = dict(pdu)
    if not room_version.event_ids_in_pdu:
        # v3+: the ID is the reference hash. An ``event_id`` key is not part of
        # the PDU and must never be trusted (Event.from_pdu would take it).
        body.pop("event_id", None)
    _strip_unsigned(body)
    try:
        return Event.from_pdu(room_version, body)
    except EventFormatError as exc:  # includes "not canonical JSON" for v3+ IDs
        raise InvalidPdu(str(exc)) from None


def check_pdu_format(
    pdu: Any, room_version: RoomVersion | str, *, max_nesting: int = MAX_PDU_NESTING
) -> Event:
    """Step 1: the PDU as an ``Event`` of its room version, or raise ``InvalidPdu``.

    Checks the shape the room version's PDU schema requires, the size limits
    (``events.check_pdu_size_limits``), at most 20 ``prev_events`` and 10
    ``auth_events``, the ``depth`` bounds, the nesting depth and that
    ``sender`` (and a v1–v2 ``event_id``) names a valid server. A field over
    its 255-byte limit but within 255 code points is not an error here in room
    versions 1–10: :func:`check_received_pdu` keeps such an event as rejected
    after the signature checks. ``unsigned`` is cut down to what an origin
    server may add. For v3+ the event ID is always computed, never read.
    """
    return _check_format(pdu, room_version, max_nesting)[0]


def _check_format(
    pdu: Any, room_version: RoomVersion | str, max_nesting: int
) -> tuple[Event, PduTooLarge | None]:
    """``check_pdu_format``, and the size error that keeps the event as rejected."""
    version = _room_version(room_version)
    if not isinstance(pdu, dict):
        raise InvalidPdu("PDU must be a JSON object")
    if exceeds_nesting(pdu, max_nesting):
        raise InvalidPdu(f"PDU nests more than {max_nesting} levels deep")
    _check_required_keys(pdu, version)
    _check_hashes_and_signatures_shape(pdu)
    event = _parse(pdu, version)
    _check_counts_and_depth(event)
    too_large = _size_violation(event)
    _check_server_names(event)
    return event, too_large


# --- step 2: signatures -----------------------------------------------------------------


def _required_servers(event: Event, room_version: RoomVersion) -> frozenset[str]:
    """``events.required_signature_servers``; ``sender`` and a v1–v2 ``event_id``
    passed step 1, so a failure here is an authorising user that names no
    server: no signature can satisfy rule 4.2, so it fails this step."""
    try:
        return required_signature_servers(event, room_version)
    except EventFormatError as exc:
        raise PduSignatureError(str(exc)) from None


def _signature_key_ids(event: Event, server: str) -> list[str]:
    """The ed25519 key IDs ``server`` signed with ("Checking for a Signature" step 2:
    algorithms this server does not understand are removed)."""
    by_key = event.pdu["signatures"].get(server)
    if not isinstance(by_key, dict):
        return []
    return sorted(key_id for key_id in by_key if key_id.startswith(f"{ED25519}:"))


def required_signing_keys(event: Event) -> dict[str, tuple[str, ...]]:
    """For each required server, the key IDs to fetch before checking signatures."""
    return {
        server: tuple(_signature_key_ids(event, server))
        for server in sorted(_required_servers(event, event.room_version))
    }


def _verify_server(
    event: Event, room_version: RoomVersion, server: str, keys_for: KeyLookup
) -> None:
    """``server`` signed ``event`` with at least one known, unexpired key, and
    every such signature verifies (``events.verify_event_signature``).

    "If a signature is from an unknown or expired key, it is skipped"; "If all
    signatures from known unexpired keys from the originating server(s) are
    found to be valid", the check passes. With none left, "the check fails"
    (Appendices, "Checking for a Signature", step 3).
    """
    key_ids = _signature_key_ids(event, server)
    if not key_ids:
        raise PduSignatureError(f"not signed by {server}")
    verified = False
    for key_id in key_ids:
        key = keys_for(server, key_id)
        if key is None or not key_is_valid_for(key, event):
            continue
        try:
            verify_event_signature(room_version, event.pdu, server, key_id, key.key)
        except SignatureError as exc:
            raise PduSignatureError(str(exc)) from None
        verified = True
    if not verified:
        raise PduSignatureError(f"no known key of {server} valid for this event signed it")


def verify_pdu_signatures(event: Event, room_version: RoomVersion, keys_for: KeyLookup) -> None:
    """Step 2: raise ``PduSignatureError`` unless every required server signed ``event``.

    Signatures cover the redacted event, in the room version's canonical JSON,
    so this passes "whether we have been sent the full event or a redacted
    copy".
    """
    for server in sorted(_required_servers(event, room_version)):
        _verify_server(event, room_version, server, keys_for)


# --- step 3: content hash ---------------------------------------------------------------


def content_hash_matches(event: Event) -> bool:
    """Whether ``hashes.sha256`` is the content hash of the event.

    "The content hash in the ``hashes`` property of the received event is
    base64-decoded, and the two are compared for equality" (so any base64
    spelling of the right bytes matches).
    """
    received = decode_base64(event.pdu["hashes"]["sha256"])
    expected = compute_content_hash(event.pdu, event.room_version)
    return received == decode_base64(expected)


def redacted_copy(event: Event) -> Event:
    """The event as the redaction algorithm leaves it, with the same event ID."""
    return Event.from_pdu(
        event.room_version, redact(event.room_version, dict(event.pdu)), event.event_id
    )


def check_content_hash(event: Event) -> Event:
    """Step 3: ``event`` if its content hash matches, else its redacted copy.

    "If the hash check fails, then it is assumed that this is because we have
    only been given a redacted version of the event. To enforce this, the
    receiving server should use the redacted copy it calculated rather than
    the full copy it received."
    """
    return event if content_hash_matches(event) else redacted_copy(event)


# --- the server ACL on /send ----------------------------------------------------------


def check_pdu_acl(event: Event, origin: str | None, acl: ServerAcl | None) -> None:
    """Raise ``DeniedByServerAcl`` if the room's ACL denies the PDU.

    "ACLs MUST be applied to all PDUs on a per-PDU basis. If the sending server
    is denied access to the room identified by ``room_id``, the PDU MUST be
    ignored" (Server-Server API, "Server Access Control Lists (ACLs)"). The
    sender's server is checked as well: an allowed server relaying a denied
    server's events is the evasion conduwuit PR #406 fixed.
    """
    if acl is None:
        return
    if origin is not None and not acl.allows(origin):
        raise DeniedByServerAcl(f"{origin} is denied by the room's server ACL")
    sender_server = event.origin_domain()
    if not acl.allows(sender_server):
        raise DeniedByServerAcl(f"the sender's server {sender_server} is denied by the server ACL")


# --- all of it, in the spec's order -----------------------------------------------------


def _best_effort_event_id(
    pdu: Any, room_version: RoomVersion | str, max_nesting: int
) -> str | None:
    """The ID to report a dropped PDU under, when it can be worked out at all."""
    if not isinstance(pdu, dict) or exceeds_nesting(pdu, max_nesting):
        return None
    try:
        version = _room_version(room_version)
        body = {key: value for key, value in pdu.items() if key != "event_id"}
        event_id = (
            pdu.get("event_id") if version.event_ids_in_pdu else compute_event_id(version, body)
        )
    except (PduCheckError, EventFormatError, CanonicalJSONError):
        return None
    if (
        not isinstance(event_id, str)
        or len(event_id.encode("utf-8", "replace")) > MAX_PDU_FIELD_BYTES
    ):
        return None
    return event_id


def check_received_pdu(
    pdu: Any,
    room_version: RoomVersion | str,
    keys_for: KeyLookup,
    *,
    origin: str | None = None,
    acl: ServerAcl | None = None,
    max_nesting: int = MAX_PDU_NESTING,
) -> PduCheckResult:
    """Steps 1–3 for one received PDU, plus the room's ACL when ``acl`` is given.

    ``origin`` is the server that sent the request (``/send``'s transaction
    origin); pass ``acl`` (the room's current ACL, or None when it has none)
    for PDUs pushed with ``/send``. Never raises for bad input: every failure
    is a DROPPED result with its reason.
    """
    try:
        version = _room_version(room_version)
        if acl is not None and origin is not None and not acl.allows(origin):
            # Before anything else, as Synapse does: a denied server's PDUs
            # are not even parsed.
            raise DeniedByServerAcl(f"{origin} is denied by the room's server ACL")
        event, too_large = _check_format(pdu, version, max_nesting)
        check_pdu_acl(event, origin, acl)
        verify_pdu_signatures(event, version, keys_for)
    except PduCheckError as error:
        event_id = _best_effort_event_id(pdu, room_version, max_nesting)
        return PduCheckResult(PduOutcome.DROPPED, None, event_id, error)
    checked = check_content_hash(event)
    if too_large is not None:
        return PduCheckResult(PduOutcome.REJECTED, checked, event.event_id, too_large)
    outcome = PduOutcome.ACCEPTED if checked is event else PduOutcome.REDACTED
    return PduCheckResult(outcome, checked, event.event_id)
