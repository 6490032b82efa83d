"""Room versions 1–12 as data (spec: "Room Versions", content/rooms/v1.md … v12.md).

Behaviour switches on the flags of a ``RoomVersion``, never on its identifier.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EventIdFormat(enum.Enum):
    """How an event's ID is made (fragments v1-event-ids, v4-event-ids)."""

    #: v1–v2: ``$opaque:server``, chosen by the origin server and part of the PDU.
    V1_OPAQUE = "v1"
    #: v3: ``$`` + reference hash, unpadded standard base64.
    V3_BASE64 = "v3"
    #: v4+: ``$`` + reference hash, unpadded URL-safe base64.
    V4_URLSAFE = "v4"


class StateResAlgorithm(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    #: State resolution v2.1 (room version 12, MSC4297).
    V2_1 = "v2.1"


class RedactionRules(enum.Enum):
    """Which redaction algorithm applies (fragments v1-, v6-, v9-, v11-redactions)."""

    V1 = "v1"  # v1–v5
    V6 = "v6"  # v6–v7: m.room.aliases no longer keeps ``aliases``
    V8 = "v8"  # v8: m.room.join_rules keeps ``allow``
    V9 = "v9"  # v9–v10: m.room.member keeps ``join_authorised_via_users_server``
    V11 = "v11"  # v11+: MSC2176 and MSC3821


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    stable: bool
    event_id_format: EventIdFormat
    redaction_rules: RedactionRules
    state_res: StateResAlgorithm
    #: v1–v2: prev_events/auth_events are ``[event_id, {hashes}]`` pairs and
    #: events carry an ``event_id`` field.
    event_ids_in_pdu: bool
    #: v1–v2: redactions are allowed if the sender's domain matches the target's
    #: (v3 moved the check out of the auth rules; fragment v3-handling-redactions).
    redaction_domain_check_in_auth: bool
    #: v1–v5: ``m.room.aliases`` has its own auth rule (removed in v6, MSC2432).
    special_case_aliases_auth: bool
    #: v5+: signing keys must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    #: v6+: events with floats or out-of-range integers are rejected (MSC2540).
    #: v1–v5 events may hold them and are hashed and signed with the relaxed
    #: canonical JSON (fragment v1-canonical-json; see ``canonical_json``).
    strict_canonical_json: bool
    #: v6+: ``notifications`` in power levels is checked like the rest (MSC2209).
    limit_notifications_power_levels: bool
    #: v7+: the ``knock`` join rule and membership (MSC2403).
    knock_join_rule: bool
    #: v8+: the ``restricted`` join rule (MSC3083).
    restricted_join_rule: bool
    #: v10+: the ``knock_restricted`` join rule (MSC3787).
    knock_restricted_join_rule: bool
    #: v10+: power-level values must be integers, not strings (MSC3667).
    integer_power_levels: bool
    #: v1–v5: power-level values may be floats, truncated towards zero; values
    #: that are not finite doubles reject the event (fragment
    #: v1-floaty-power-levels). From v6 canonical JSON is enforced, so a float
    #: is not a valid power level.
    float_power_levels: bool
    #: v11+: the room creator is the create event's sender; ``creator`` is
    #: no longer required or used (MSC2175).
    implicit_room_creator: bool
    #: v11+: redacts lives in ``content`` (MSC2174).
    redacts_in_content: bool
    #: v12+: the room ID is derived from the create event's reference hash
    #: (MSC4291), creators have infinite power and may be listed in
    #: ``additional_creators`` (MSC4289), the create event is implied in
    #: auth_events.
    room_id_from_create_event: bool
    creators_have_infinite_power: bool


def _version(
    identifier: str,
    *,
    event_id_format: EventIdFormat,
    redaction_rules: RedactionRules,
    state_res: StateResAlgorithm,
    number: int,
) -> RoomVersion:
    return RoomVersion(
        identifier=identifier,
        stable=True,
        event_id_format=event_id_format,
        redaction_rules=redaction_rules,
        state_res=state_res,
        event_ids_in_pdu=number <= 2,
        redaction_domain_check_in_auth=number <= 2,
        special_case_aliases_auth=number <= 5,
        enforce_key_validity=number >= 5,
        strict_canonical_json=number >= 6,
        limit_notifications_power_levels=number >= 6,
        knock_join_rule=number >= 7,
        restricted_join_rule=number >= 8,
        knock_restricted_join_rule=number >= 10,
        integer_power_levels=number >= 10,
        float_power_levels=number <= 5,
        implicit_room_creator=number >= 11,
        redacts_in_content=number >= 11,
        room_id_from_create_event=number >= 12,
        creators_have_infinite_power=number >= 12,
    )


def _build() -> dict[str, RoomVersion]:
    versions: dict[str, RoomVersion] = {}
    for number in range(1, 13):
        if number <= 2:
            id_format = EventIdFormat.V1_OPAQUE
        elif number == 3:
            id_format = EventIdFormat.V3_BASE64
        else:
            id_format = EventIdFormat.V4_URLSAFE
        if number <= 5:
            redaction = RedactionRules.V1
        elif number <= 7:
            redaction = RedactionRules.V6
        elif number == 8:
            redaction = RedactionRules.V8
        elif number <= 10:
            redaction = RedactionRules.V9
        else:
            redaction = RedactionRules.V11
        if number == 1:
            state_res = StateResAlgorithm.V1
        elif number <= 11:
            state_res = StateResAlgorithm.V2
        else:
            state_res = StateResAlgorithm.V2_1
        versions[str(number)] = _version(
            str(number),
            event_id_format=id_format,
            redaction_rules=redaction,
            state_res=state_res,
            number=number,
        )
    return versions


KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = _build()

#: The spec recommends room version 12 as the default for new rooms (v1.19,
#: content/rooms/_index.md).
DEFAULT_ROOM_VERSION = KNOWN_ROOM_VERSIONS["12"]


class UnknownRoomVersion(KeyError):
    pass


def get_room_version(identifier: str) -> RoomVersion:
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnknownRoomVersion(identifier) from None
