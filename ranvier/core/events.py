"""Events: hashes, reference hashes, event IDs and the immutable ``Event``.

Spec: Server-Server API "Calculating the content hash for an event",
"Calculating the reference hash for an event"; fragments v1-event-ids,
v4-event-ids; v12.md "Room IDs" (MSC4291).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ranvier.core.canonical_json import CanonicalJSONError, encode_canonical_json
from ranvier.core.ids import server_name_of
from ranvier.core.redaction import redact
from ranvier.core.room_versions import EventIdFormat, RoomVersion
from ranvier.core.signing import SigningKey, encode_base64, sign_json

StateKey = tuple[str, str]


class EventFormatError(ValueError):
    """A PDU does not have the shape its room version requires."""


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def compute_content_hash(event: Mapping[str, Any]) -> str:
    """``hashes.sha256``: sha256 over the event without unsigned, signatures, hashes."""
    data = encode_canonical_json(_without(event, "unsigned", "signatures", "hashes"))
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
    data = encode_canonical_json(reference_hash_input(room_version, event))
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
    pdu["hashes"] = {"sha256": compute_content_hash(pdu)}
    to_sign = _without(redact(room_version, pdu), "unsigned", "age_ts")
    if not room_version.event_ids_in_pdu:
        to_sign.pop("event_id", None)
    signed = sign_json(to_sign, signer, key)
    pdu["signatures"] = signed["signatures"]
    return pdu


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


@dataclass(frozen=True, eq=False)
class Event:
    """An immutable PDU with its ID and the fields the protocol reads."""

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
