"""Events: hashes, reference hashes, event IDs, signatures and the immutable ``Event``.

Spec: Server-Server API "Calculating the content hash for an event",
"Calculating the reference hash for an event", "Validating hashes and
signatures on received events"; Client-Server API "Size limits"; fragments
v1-event-ids, v4-event-ids, v1-canonical-json, v6-canonical-json; v12.md
"Room IDs" (MSC4291).

Hashes and signatures use the room version's canonical JSON: strict from
room version 6, relaxed (floats and large integers allowed) in versions 1–5,
where "Servers MUST NOT strictly enforce the JSON format" (see
``canonical_json``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ranvier.core.canonical_json import CanonicalJSONError, encode_canonical_json
from ranvier.core.ids import is_valid_server_name, server_name_of
from ranvier.core.redaction import redact
from ranvier.core.room_versions import EventIdFormat, RoomVersion
from ranvier.core.signing import SigningKey, encode_base64, sign_json, verify_signature

StateKey = tuple[str, str]


class EventFormatError(ValueError):
    """A PDU does not have the shape its room version requires."""


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def _is_strict(room_version: RoomVersion | None) -> bool:
    return room_version is None or room_version.strict_canonical_json


def compute_content_hash(event: Mapping[str, Any], room_version: RoomVersion | None = None) -> str:
    """``hashes.sha256``: sha256 over the event without unsigned, signatures, hashes.

    Pass the event's ``room_version``: without it the JSON is encoded strictly,
    which raises ``CanonicalJSONError`` for the floats and large integers that
    events of room versions 1–5 may hold.

    A top-level ``age_ts`` stays in: the spec removes only ``unsigned``,
    ``signatures`` and ``hashes`` ("Calculating the content hash for an
    event"). Synapse also drops ``age_ts`` (and its internal ``outlier`` and
    ``destinations``) before hashing; events that carry such a key at the top
    level are not sent by any current server, so we keep the spec's rule.
    """
    data = encode_canonical_json(
        _without(event, "unsigned", "signatures", "hashes"), strict=_is_strict(room_version)
    )
    return encode_base64(hashlib.sha256(data).digest())


def reference_hash_input(room_version: RoomVersion, event: Mapping[str, Any]) -> dict[str, Any]:
    """The object whose canonical JSON gives the reference hash.

    The redacted event without ``signatures``, ``unsigned`` and ``age_ts``; for
    v3+ also without the ``event_id`` that is not part of the PDU.
    """
    pdu = dict(event)
    if not room_version.event_ids_in_pdu:
        pdu.pop("event_id", None)
    return _without(redact(room_version, pdu), "signatures", "unsigned", "age_ts")


def compute_reference_hash(room_version: RoomVersion, event: Mapping[str, Any]) -> bytes:
    data = encode_canonical_json(
        reference_hash_input(room_version, event), strict=room_version.strict_canonical_json
    )
    return hashlib.sha256(data).digest()


def compute_event_id(room_version: RoomVersion, event: Mapping[str, Any]) -> str:
    """The event's ID. v1–v2: the ``event_id`` the origin chose; v3+: its reference hash."""
    fmt = room_version.event_id_format
    if fmt is EventIdFormat.V1_OPAQUE:
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            raise EventFormatError("v1/v2 events must carry an event_id")
        return event_id
    digest = compute_reference_hash(room_version, event)
    return "$" + encode_base64(digest, urlsafe=fmt is EventIdFormat.V4_URLSAFE)


def room_id_from_create_event_id(create_event_id: str) -> str:
    """v12 (MSC4291): the room ID is ``!`` + the create event ID's hash part."""
    return "!" + create_event_id[1:]


def hash_and_sign_event(
    room_version: RoomVersion, event: Mapping[str, Any], signer: str, key: SigningKey
) -> dict[str, Any]:
    """Add ``hashes`` and ``signatures`` to a built event, as the origin server does.

    The signature covers the redacted form of the event, so redacting an event
    later never invalidates it.
    """
    pdu = dict(event)
    pdu["hashes"] = {"sha256": compute_content_hash(pdu, room_version)}
    strict = room_version.strict_canonical_json
    signed = sign_json(_signed_form(room_version, pdu), signer, key, strict=strict)
    pdu["signatures"] = signed["signatures"]
    return pdu


def add_event_signature(
    room_version: RoomVersion, pdu: Mapping[str, Any], signer: str, key: SigningKey
) -> dict[str, Any]:
    """``pdu`` with ``signer``'s signature added to those it has, its hashes
    untouched: a counter-signature, as an invitee's server adds to an invite
    (Server-Server API, "Inviting to a room") or a resident server to a
    restricted join."""
    strict = room_version.strict_canonical_json
    ours = sign_json(_signed_form(room_version, pdu), signer, key, strict=strict)["signatures"]
    signatures = pdu.get("signatures")
    existing = dict(signatures) if isinstance(signatures, Mapping) else {}
    return {**pdu, "signatures": {**existing, **ours}}


def _signed_form(room_version: RoomVersion, pdu: Mapping[str, Any]) -> dict[str, Any]:
    """What an event's signatures cover: its redacted form without ``unsigned``
    (and, v3+, without the ``event_id`` that is not part of the PDU)."""
    signed_form = _without(redact(room_version, dict(pdu)), "unsigned", "age_ts")
    if not room_version.event_ids_in_pdu:
        signed_form.pop("event_id", None)
    return signed_form


def verify_event_signature(
    room_version: RoomVersion, pdu: Mapping[str, Any], signer: str, key_id: str, verify_key: bytes
) -> None:
    """Check ``signer``'s signature with ``key_id`` on a PDU; raise ``SignatureError``.

    Server-Server API "Validating hashes and signatures on received events":
    the event is redacted first, so the check succeeds whether the full event
    or a redacted copy was received; its JSON is encoded with the room
    version's canonical JSON rules.
    """
    verify_signature(
        _signed_form(room_version, pdu),
        signer,
        key_id,
        verify_key,
        strict=room_version.strict_canonical_json,
    )


def _reference_ids(room_version: RoomVersion, value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise EventFormatError(f"{name} must be a list")
    ids: list[str] = []
    for item in value:
        if room_version.event_ids_in_pdu:
            # v1–v2: [event_id, {"sha256": ...}] pairs.
            if not (isinstance(item, list) and item and isinstance(item[0], str)):
                raise EventFormatError(f"{name} entries must be [event_id, hashes] pairs")
            ids.append(item[0])
        else:
            if not isinstance(item, str):
                raise EventFormatError(f"{name} entries must be event ID strings")
            ids.append(item)
    return tuple(ids)


@dataclass(frozen=True, eq=False, slots=True)
class Event:
    """An immutable PDU with its ID and the fields the protocol reads (slots:
    thousands are held by the event cache, and a __dict__ each cost ~200 bytes)."""

    room_version: RoomVersion
    event_id: str
    pdu: Mapping[str, Any]
    type: str
    sender: str
    room_id: str
    content: Mapping[str, Any]
    state_key: str | None
    prev_event_ids: tuple[str, ...]
    auth_event_ids: tuple[str, ...]
    origin_server_ts: int
    depth: int
    _hash: int = field(default=0, repr=False)

    @classmethod
    def from_pdu(
        cls, room_version: RoomVersion, pdu: Mapping[str, Any], event_id: str | None = None
    ) -> Event:
        """Wrap a PDU. ``event_id`` is computed unless given (then it is trusted).

        For v3+ an ``event_id`` key in ``pdu`` is not part of the PDU and is dropped.
        """
        body = dict(pdu)
        if not room_version.event_ids_in_pdu:
            given = body.pop("event_id", None)
            if event_id is None and isinstance(given, str):
                event_id = given
        if event_id is None:
            try:
                event_id = compute_event_id(room_version, body)
            except CanonicalJSONError as exc:
                raise EventFormatError(f"event is not canonical JSON: {exc}") from exc
        event_type = body.get("type")
        sender = body.get("sender")
        content = body.get("content", {})
        if not isinstance(event_type, str):
            raise EventFormatError("type must be a string")
        if not isinstance(sender, str):
            raise EventFormatError("sender must be a string")
        if not isinstance(content, dict):
            raise EventFormatError("content must be an object")
        state_key = body.get("state_key")
        if state_key is not None and not isinstance(state_key, str):
            raise EventFormatError("state_key must be a string")
        room_id = body.get("room_id")
        if room_id is None and room_version.room_id_from_create_event and event_type == "m.room.create":
            room_id = room_id_from_create_event_id(event_id)
        if not isinstance(room_id, str):
            raise EventFormatError("room_id must be a string")
        ts = body.get("origin_server_ts", 0)
        depth = body.get("depth", 0)
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise EventFormatError("origin_server_ts must be an integer")
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise EventFormatError("depth must be an integer")
        return cls(
            room_version=room_version,
            event_id=event_id,
            pdu=body,
            type=event_type,
            sender=sender,
            room_id=room_id,
            content=content,
            state_key=state_key,
            prev_event_ids=_reference_ids(room_version, body.get("prev_events", []), "prev_events"),
            auth_event_ids=_reference_ids(room_version, body.get("auth_events", []), "auth_events"),
            origin_server_ts=ts,
            depth=depth,
            _hash=hash(event_id),
        )

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and other.event_id == self.event_id

    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def state_tuple(self) -> StateKey:
        """``(type, state_key)``; only meaningful for state events."""
        return (self.type, self.state_key if self.state_key is not None else "")

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    @property
    def redacts(self) -> str | None:
        """The event a redaction redacts: ``content.redacts`` from v11 (MSC2174)."""
        if self.room_version.redacts_in_content:
            value = self.content.get("redacts")
        else:
            value = self.pdu.get("redacts")
        return value if isinstance(value, str) else None

    def origin_domain(self) -> str:
        """The server part of the sender."""
        return server_name_of(self.sender) or ""


# --------------------------------------------------------------------------------------
# Checks on receipt of a PDU that only need the PDU itself (the federation
# receiver runs them through ``ranvier.core.federation_checks``)


#: Client-Server API "Size limits": "The complete event MUST NOT be larger than
#: 65536 bytes, when formatted with the federation event format, including any
#: signatures, and encoded as Canonical JSON."
MAX_PDU_BYTES: Final = 65_536
#: The same section: ``sender``, ``room_id`` and ``event_id`` may not exceed
#: the identifier limit (Appendices: 255 bytes), ``state_key`` and ``type``
#: 255 bytes.
MAX_PDU_FIELD_BYTES: Final = 255
_SIZE_LIMITED_FIELDS: Final = ("sender", "room_id", "type", "state_key", "event_id")
#: Room versions in which Synapse, which long measured the field limits in code
#: points, keeps an event over 255 bytes but within 255 code points as
#: *rejected* instead of dropping it (``LENIENT_EVENT_BYTE_LIMITS_ROOM_VERSIONS``
#: in synapse/event_auth.py: v1–v10). Dropping an event that every other
#: server stores would split the DAG; from v11 the byte limit drops it.
_LENIENT_BYTE_LIMIT_VERSIONS: Final = frozenset(str(number) for number in range(1, 11))


class PDUTooLargeError(EventFormatError):
    """A PDU, or one of its size-limited fields, is over the spec's limit.

    ``keep_as_rejected``: only a field's *byte* limit is exceeded, in a room
    version (v1–v10) where deployed servers store such an event as rejected;
    otherwise the PDU is dropped.
    """

    def __init__(
        self,
        field_name: str | None,
        size: int,
        limit: int,
        *,
        unit: str = "bytes",
        keep_as_rejected: bool = False,
    ) -> None:
        #: The oversized field, or None for the whole PDU.
        self.field_name = field_name
        self.size = size
        self.limit = limit
        self.keep_as_rejected = keep_as_rejected
        what = "PDU" if field_name is None else f"'{field_name}'"
        super().__init__(f"{what} is {size} {unit}, over the limit of {limit}")


def check_pdu_size_limits(room_version: RoomVersion, pdu: Mapping[str, Any]) -> None:
    """Apply the spec's size limits to a PDU received over federation.

    In Synapse's order (``_check_size_limits``), raises ``PDUTooLargeError``
    for the first limit exceeded:

    1. the PDU's canonical JSON, in the room version's encoding (relaxed for
       v1–5, as its hashes and signatures are), is over 65,536 bytes;
    2. one of ``sender``, ``room_id``, ``type``, ``state_key`` and (v1–v2)
       ``event_id`` is over 255 code points — the limit Synapse always
       enforced, so every server drops such a PDU;
    3. one of them is over 255 bytes of UTF-8, the spec's limit: dropped from
       room version 11, kept as rejected before (``keep_as_rejected``; see
       ``_LENIENT_BYTE_LIMIT_VERSIONS``).

    Raises ``EventFormatError`` when the PDU cannot be encoded as the room
    version's canonical JSON: from room version 6 that is the strict
    enforcement that makes servers discard such events over federation
    (fragment v6-canonical-json). Fields that are not strings are left to
    ``Event.from_pdu``.
    """
    body = dict(pdu)
    if not room_version.event_ids_in_pdu:
        body.pop("event_id", None)  # v3+: not part of the PDU
    try:
        size = len(encode_canonical_json(body, strict=room_version.strict_canonical_json))
    except CanonicalJSONError as exc:
        raise EventFormatError(f"event is not canonical JSON: {exc}") from exc
    if size > MAX_PDU_BYTES:
        raise PDUTooLargeError(None, size, MAX_PDU_BYTES)
    fields = [
        (name, body[name]) for name in _SIZE_LIMITED_FIELDS if isinstance(body.get(name), str)
    ]
    for name, value in fields:
        if len(value) > MAX_PDU_FIELD_BYTES:
            raise PDUTooLargeError(name, len(value), MAX_PDU_FIELD_BYTES, unit="code points")
    lenient = room_version.identifier in _LENIENT_BYTE_LIMIT_VERSIONS
    for name, value in fields:
        # Cannot raise: a lone surrogate already failed the encoding above.
        size = len(value.encode("utf-8"))
        if size > MAX_PDU_FIELD_BYTES:
            raise PDUTooLargeError(name, size, MAX_PDU_FIELD_BYTES, keep_as_rejected=lenient)


def identifier_server_name(identifier: object, sigil: str, what: str) -> str:
    """The server name of a user ID (``@``) or v1–v2 event ID (``$``).

    Everything after the first colon ("the localpart ... MUST NOT contain
    ``:``", Appendices "Identifier Grammar"), which must be a valid server
    name. Raises ``EventFormatError`` otherwise. The identifier's length is
    not checked here: see ``check_pdu_size_limits``.
    """
    if isinstance(identifier, str) and identifier.startswith(sigil):
        _, colon, server_name = identifier.partition(":")
        if colon and is_valid_server_name(server_name):
            return server_name
    raise EventFormatError(f"{what} {identifier!r} does not name a valid server")


#: v8+ restricted joins (MSC3083): the user whose server authorised the join.
AUTHORISING_USER: Final = "join_authorised_via_users_server"


def is_third_party_invite(event: Event) -> bool:
    """An invite made from a third-party invite (``content.third_party_invite``)."""
    return (
        event.type == "m.room.member"
        and event.membership == "invite"
        and "third_party_invite" in event.content
    )


def _authorising_server(event: Event, room_version: RoomVersion) -> str | None:
    """v8+ auth rule 4.2 (MSC3083): a join naming ``join_authorised_via_users_server``
    must be "validly signed by the homeserver of the user ID denoted by the key".

    As deployed (Synapse's ``_check_sigs_on_pdu``; ruma and conduwuit agree),
    this is checked with the other signatures and for ``join`` memberships
    only, in room versions with restricted join rules: a leave or invite that
    happens to carry the key needs no extra signature. Requiring more than the
    other servers do would make us drop events they accept and split the room.
    """
    if not (
        room_version.restricted_join_rule
        and event.type == "m.room.member"
        and event.membership == "join"
        and AUTHORISING_USER in event.content
    ):
        return None
    return identifier_server_name(event.content[AUTHORISING_USER], "@", AUTHORISING_USER)


def required_signature_servers(
    event: Event, room_version: RoomVersion | None = None
) -> frozenset[str]:
    """The servers whose valid signatures a received PDU must carry.

    Server-Server API "Validating hashes and signatures on received events":

    * the originating server, the server of ``sender`` — "unless the event is
      a 3rd party invite", which "the server which actually sends the event
      may be a different server" sent on another's behalf (the auth rules then
      check its ``signed`` block against the room's
      ``m.room.third_party_invite``);
    * room versions 1 and 2: also "the domain in the event_id, if it differs
      from the originating server";
    * v8+ restricted joins: the authorising user's server (see
      ``_authorising_server``).

    ``room_version`` defaults to the event's own. Raises ``EventFormatError``
    when one of those identifiers does not name a valid server (deployed
    servers refuse such events too).
    """
    version = room_version if room_version is not None else event.room_version
    sender_server = identifier_server_name(event.sender, "@", "sender")
    servers: set[str] = set()
    if not is_third_party_invite(event):
        servers.add(sender_server)
    if version.event_ids_in_pdu:
        event_id_server = identifier_server_name(event.event_id, "$", "event_id")
        if event_id_server != sender_server:
            servers.add(event_id_server)
    authorising_server = _authorising_server(event, version)
    if authorising_server is not None:
        servers.add(authorising_server)
    return frozenset(servers)
