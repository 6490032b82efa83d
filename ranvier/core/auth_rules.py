"""Authorization rules for room versions 1–12.

Spec: "Room Versions", the "Authorisation rules" of each version
(content/rooms/fragments/v1-auth-rules.md for v1–v2, v3-auth-rules.md for
v3–v7, v8-auth-rules.md for v8–v9, v10.md, v11.md and v12.md), the power-level
value fragments (v1-stringy-power-levels, v1-floaty-power-levels) and
Server-Server API "Auth events selection".

Rule numbers in comments are those of the room version 10 text ("v10 rule
4.3.5"), unless a comment names another version. Room version 12 inserts a
rule 2 (room ID is an accepted create event), so from rule 2 on its numbers
are one higher.

The rules come in two halves, as in Synapse:

* :func:`check_state_independent_auth_rules`: rule 1 (create events) and the
  checks on the event's ``auth_events`` themselves (rule 2; v12 rules 2–3).
* :func:`check_state_dependent_auth_rules`: everything else, given the room
  state that matters (the auth events, or the full state during state
  resolution).

Both raise :class:`AuthError` when the event is not allowed. Behaviour
switches on :class:`~ranvier.core.room_versions.RoomVersion` flags only.

Not done here: the signature checks on receipt of a PDU, including v8+ rule
4.2 ("a join with ``join_authorised_via_users_server`` must be signed by that
user's server"), which needs the remote server's keys; the federation
receiver applies it together with the sender's signature check
(:func:`ranvier.core.events.required_signature_servers` names the servers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

from ranvier.core.events import Event, StateKey, room_id_from_create_event_id
from ranvier.core.ids import UserID, server_name_of
from ranvier.core.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from ranvier.core.signing import SignatureError, decode_base64, verify_signature

__all__ = [
    "INFINITE_POWER",
    "AuthError",
    "PowerLevel",
    "auth_types_for_event",
    "check_auth_rules",
    "check_state_dependent_auth_rules",
    "check_state_independent_auth_rules",
    "get_creators",
    "get_named_level",
    "get_send_level",
    "is_valid_user_id",
    "parse_power_level",
    "user_power_level",
]


class AuthError(Exception):
    """The event is not allowed by the authorization rules."""


#: A user's power level: an integer, or :data:`INFINITE_POWER` for the room
#: creators of room version 12 (MSC4289). ``int`` is a ``float`` for typing.
PowerLevel: TypeAlias = float

#: v12: "The power level of room creators is infinitely high."
INFINITE_POWER: Final[float] = math.inf

CREATE_KEY: Final[StateKey] = ("m.room.create", "")
POWER_LEVELS_KEY: Final[StateKey] = ("m.room.power_levels", "")
JOIN_RULES_KEY: Final[StateKey] = ("m.room.join_rules", "")

_MEMBER = "m.room.member"
_THIRD_PARTY_INVITE = "m.room.third_party_invite"

#: The properties of m.room.power_levels that hold a single level, with their
#: defaults (m.room.power_levels schema: kick, ban and redact default to 50,
#: invite, users_default and events_default to 0, state_default to 50).
_NAMED_LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "redact": 50,
    "kick": 50,
    "invite": 0,
}

#: m.room.power_levels schema: "If the room contains no m.room.power_levels
#: event, the room's creator has a power level of 100" (room versions 1–11).
_CREATOR_LEVEL_WITHOUT_POWER_LEVELS: Final = 100

# Fragment v1-stringy-power-levels: "a single base 10 integer ... optionally
# with any number of leading zeroes; optionally prefixed with a single - or +;
# optionally with any number of leading or trailing whitespace characters".
# Whitespace and digits are ASCII only (the spec does not say; Synapse's int()
# also accepts Unicode digits, Unicode spaces and "5_0", which we do not).
_STRINGY_LEVEL = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*", re.ASCII)

# ---------------------------------------------------------------------------
# Small helpers


def _domain(identifier: str) -> str:
    """The server part of a user, room or (v1–v2) event ID: after the first colon."""
    return server_name_of(identifier) or ""


def is_valid_user_id(value: object) -> bool:
    """The user ID validation applied to ``sender`` (Appendices, "User Identifiers").

    Historical user IDs are accepted: servers "MUST accept user IDs with
    localparts consisting of any legal non-surrogate Unicode code points
    except for : and NUL" over federation.
    """
    return isinstance(value, str) and UserID.is_valid(value, historical=True)


def _is_strict_int(value: object) -> bool:
    """A JSON integer (``bool`` is a subclass of ``int`` in Python but not one in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_power_level(room_version: RoomVersion, value: object) -> int | None:
    """A power-level value as an integer, or ``None`` if it is not a valid one.

    * Integers are valid in every room version.
    * v1–v9 (fragment v1-stringy-power-levels): "a string that is an integer".
    * v1–v5 (fragment v1-floaty-power-levels): floats, truncated at the
      decimal point; infinities and NaN are invalid.
    * v10+ (MSC3667): integers only.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and not room_version.integer_power_levels:
        if _STRINGY_LEVEL.fullmatch(value):
            return int(value.strip(" \t\n\r\f\v"))
        return None
    if isinstance(value, float) and room_version.float_power_levels and math.isfinite(value):
        return math.trunc(value)
    return None


def _membership(state: Mapping[StateKey, Event], user_id: str) -> str | None:
    event = state.get((_MEMBER, user_id))
    return event.membership if event is not None else None


def _creator(create: Event) -> str | None:
    """The room creator (singular) of rule 4.3.1 and of the no-power-levels default.

    v1–v10: ``content.creator``; v11+ (MSC2175): the create event's sender.
    """
    if create.room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else None


def get_creators(create: Event) -> frozenset[str]:
    """v12 (MSC4289) "room creators": the create event's sender plus
    ``content.additional_creators``. Before v12: the single creator."""
    if not create.room_version.creators_have_infinite_power:
        creator = _creator(create)
        return frozenset() if creator is None else frozenset({creator})
    creators = {create.sender}
    extra = create.content.get("additional_creators")
    if isinstance(extra, list):
        creators.update(user for user in extra if isinstance(user, str))
    return frozenset(creators)


def user_power_level(state: Mapping[StateKey, Event], user_id: str) -> PowerLevel:
    """The power level of ``user_id`` given the room state (m.room.power_levels schema).

    v12 creators: :data:`INFINITE_POWER`. Otherwise ``users[user_id]``, else
    ``users_default`` (default 0); with no power levels event, the creator has
    100 before v12 and everybody else 0. A malformed entry (possible before
    v10) counts as absent.
    """
    create = state.get(CREATE_KEY)
    infinite_creators = create is not None and create.room_version.creators_have_infinite_power
    if create is not None and infinite_creators and user_id in get_creators(create):
        return INFINITE_POWER
    power_levels = state.get(POWER_LEVELS_KEY)
    if power_levels is None:
        if create is not None and not infinite_creators and user_id == _creator(create):
            return _CREATOR_LEVEL_WITHOUT_POWER_LEVELS
        return 0
    room_version = power_levels.room_version
    users = power_levels.content.get("users")
    if isinstance(users, dict) and user_id in users:
        level = parse_power_level(room_version, users[user_id])
        if level is not None:
            return level
    return get_named_level(state, "users_default")


def get_named_level(state: Mapping[StateKey, Event], name: str) -> int:
    """``ban``, ``kick``, ``invite``, ``redact``, ``*_default`` with their defaults.

    The defaults apply both when the property is missing and when there is no
    m.room.power_levels event (schema of m.room.power_levels).
    """
    default = _NAMED_LEVEL_DEFAULTS[name]
    power_levels = state.get(POWER_LEVELS_KEY)
    if power_levels is None or name not in power_levels.content:
        return default
    level = parse_power_level(power_levels.room_version, power_levels.content[name])
    return default if level is None else level


def get_send_level(state: Mapping[StateKey, Event], event_type: str, is_state: bool) -> int:
    """The *required power level* of an event type (m.room.power_levels schema).

    ``events[event_type]`` if set, else ``state_default`` (50) for state
    events or ``events_default`` (0) for the rest.
    """
    power_levels = state.get(POWER_LEVELS_KEY)
    if power_levels is not None:
        events = power_levels.content.get("events")
        if isinstance(events, dict) and event_type in events:
            level = parse_power_level(power_levels.room_version, events[event_type])
            if level is not None:
                return level
    return get_named_level(state, "state_default" if is_state else "events_default")


# ---------------------------------------------------------------------------
# Auth events selection


def auth_types_for_event(event: Event) -> set[StateKey]:
    """The (type, state_key) pairs the event's ``auth_events`` may cite.

    Server-Server API, "Auth events selection". v12 (MSC4291): the create
    event is implied by the room ID and is not selected. The create event
    itself has no auth events.
    """
    if event.type == "m.room.create":
        return set()
    selected: set[StateKey] = {POWER_LEVELS_KEY, (_MEMBER, event.sender)}
    if not event.room_version.room_id_from_create_event:
        selected.add(CREATE_KEY)
    if event.type != _MEMBER:
        return selected
    if event.state_key is not None:
        selected.add((_MEMBER, event.state_key))
    membership = event.membership
    if membership in ("join", "invite", "knock"):
        selected.add(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_invite_token(event)
        if token is not None:
            selected.add((_THIRD_PARTY_INVITE, token))
    if membership == "join" and event.room_version.restricted_join_rule:
        authoriser = event.content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str):
            selected.add((_MEMBER, authoriser))
    return selected


def _third_party_invite_token(event: Event) -> str | None:
    third_party_invite = event.content.get("third_party_invite")
    if not isinstance(third_party_invite, dict):
        return None
    signed = third_party_invite.get("signed")
    if not isinstance(signed, dict):
        return None
    token = signed.get("token")
    return token if isinstance(token, str) else None


# ---------------------------------------------------------------------------
# State-independent rules


def check_state_independent_auth_rules(
    event: Event, auth_events: Iterable[Event], rejected_event_ids: frozenset[str] = frozenset()
) -> None:
    """Rule 1 (create events) and the checks on ``auth_events`` (rule 2; v12 rules 2–3).

    ``auth_events`` are the events the event cites; in v12 the caller adds the
    room's create event, which the room ID implies. ``rejected_event_ids``
    names auth events that were themselves rejected.
    """
    room_version = event.room_version
    if event.type == "m.room.create":
        _check_create(event)
        return

    cited = set(event.auth_event_ids)
    allowed_types = auth_types_for_event(event)
    seen: dict[StateKey, Event] = {}
    create: Event | None = None
    for auth_event in auth_events:
        if auth_event.state_key is None:
            raise AuthError(f"auth event {auth_event.event_id} is not a state event")
        key = auth_event.state_tuple
        # Rule 2.1: duplicate entries for a (type, state_key) pair.
        if key in seen:
            raise AuthError(f"auth_events has more than one {key}")
        seen[key] = auth_event
        if key == CREATE_KEY:
            create = auth_event
            if room_version.room_id_from_create_event and auth_event.event_id in cited:
                # v12 rule 3.2: "In this room version, m.room.create MUST NOT
                # be selected."
                raise AuthError("auth_events must not list the create event in this room version")
        # Rule 2.2: only the types the auth events selection allows.
        if key not in allowed_types and not (
            key == CREATE_KEY and room_version.room_id_from_create_event
        ):
            raise AuthError(f"auth_events has an unexpected entry {key}")
        # Rule 2.3: entries that were themselves rejected.
        if auth_event.event_id in rejected_event_ids:
            raise AuthError(f"auth event {auth_event.event_id} was rejected")
        # Rule 2.5: entries from another room.
        if auth_event.room_id != event.room_id:
            raise AuthError(f"auth event {auth_event.event_id} is from another room")

    if room_version.room_id_from_create_event:
        # v12 rule 2: "If the event's room_id is not an event ID for an
        # accepted (not rejected) m.room.create event, with the sigil ! instead
        # of $, reject." The create event is the implied auth event.
        if create is None or room_id_from_create_event_id(create.event_id) != event.room_id:
            raise AuthError("room_id is not the ID of an accepted create event")
    elif create is None:
        # Rule 2.4: "If there is no m.room.create event among the entries, reject."
        raise AuthError("auth_events has no m.room.create event")


def _check_create(event: Event) -> None:
    """Rule 1: ``m.room.create``."""
    room_version = event.room_version
    # 1.1: "If it has any prev_events, reject."
    if event.prev_event_ids:
        raise AuthError("create event has prev_events")
    if room_version.room_id_from_create_event:
        # v12 1.2: "If the event has a room_id, reject."
        if event.pdu.get("room_id") is not None:
            raise AuthError("create event has a room_id")
    elif _domain(event.room_id) != _domain(event.sender):
        # 1.2: "If the domain of the room_id does not match the domain of the sender, reject."
        raise AuthError("create event's room_id domain does not match the sender's")
    # 1.3: "If content.room_version is present and is not a recognised version, reject."
    # Absent means "1" (Client-Server API, m.room.create).
    if "room_version" in event.content:
        version_id = event.content["room_version"]
        if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"unknown room version {version_id!r}")
    if room_version.creators_have_infinite_power and "additional_creators" in event.content:
        # v12 1.4: additional_creators must be an array of strings that each
        # pass the user ID validation applied to sender.
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(user) for user in extra):
            raise AuthError("additional_creators must be an array of valid user IDs")
    if not room_version.implicit_room_creator and "creator" not in event.content:
        # v1–v10 1.4: "If content has no creator property, reject."
        raise AuthError("create event has no creator")


# ---------------------------------------------------------------------------
# State-dependent rules


def check_state_dependent_auth_rules(event: Event, state: Mapping[StateKey, Event]) -> None:
    """Every rule after the ``auth_events`` checks, against ``state``.

    ``state`` maps ``(type, state_key)`` to events: the event's auth events or
    a full room state; only the entries the rules need are looked up. In v12
    the create event must be in it under ``("m.room.create", "")``.
    """
    if event.type == "m.room.create":
        return  # Rule 1 already decided (1.5 / v11+ 1.4: "Otherwise, allow").
    room_version = event.room_version
    create = state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no m.room.create event in the room state")

    # Rule 3: m.federate false keeps other servers out.
    if create.content.get("m.federate", True) is False and _domain(event.sender) != _domain(
        create.sender
    ):
        raise AuthError("room is not federated and the sender is on another server")

    # v1–v5 rule 4: m.room.aliases (removed in v6, MSC2432). It precedes the
    # membership check, so even a non-member may set their server's aliases.
    if event.type == "m.room.aliases" and room_version.special_case_aliases_auth:
        # 4.1: no state_key, reject; 4.2: state_key not the sender's domain, reject.
        if event.state_key is None or event.state_key != _domain(event.sender):
            raise AuthError("m.room.aliases state_key must be the sender's domain")
        return

    # Rule 4: m.room.member.
    if event.type == _MEMBER:
        _check_membership(event, state, create)
        return

    # Rule 5: "If the sender's current membership state is not join, reject."
    if _membership(state, event.sender) != "join":
        raise AuthError(f"{event.sender} is not joined to the room")

    sender_level = user_power_level(state, event.sender)

    # Rule 6: m.room.third_party_invite needs the invite level.
    if event.type == _THIRD_PARTY_INVITE:
        if sender_level >= get_named_level(state, "invite"):
            return
        raise AuthError("sender's power level is below the invite level")

    # Rule 7: the event type's required power level.
    if get_send_level(state, event.type, event.is_state()) > sender_level:
        raise AuthError(f"sender's power level is too low to send {event.type}")

    # Rule 8: a state_key starting with @ is reserved to that user.
    if (
        event.state_key is not None
        and event.state_key.startswith("@")
        and event.state_key != event.sender
    ):
        raise AuthError("state_key starts with @ and is not the sender")

    # Rule 9: m.room.power_levels.
    if event.type == "m.room.power_levels":
        _check_power_levels(event, state, create, sender_level)
        return

    # v1–v2 rule 11: m.room.redaction (moved out of the auth rules in v3,
    # fragment v3-handling-redactions).
    if event.type == "m.room.redaction" and room_version.redaction_domain_check_in_auth:
        if sender_level >= get_named_level(state, "redact"):
            return
        redacts = event.redacts
        if redacts is not None and _domain(redacts) == _domain(event.event_id):
            return
        raise AuthError("sender may not redact this event")

    # Rule 10: "Otherwise, allow."


def _check_membership(event: Event, state: Mapping[StateKey, Event], create: Event) -> None:
    """Rule 4: ``m.room.member``."""
    room_version = event.room_version
    target = event.state_key
    membership = event.membership
    # 4.1: no state_key, or no membership in content.
    if target is None or membership is None:
        raise AuthError("membership event without state_key or membership")
    # 4.2 (v8+, join_authorised_via_users_server signature) is checked with
    # the PDU's signatures, outside these rules (see the module docstring and
    # events.required_signature_servers).

    sender_membership = _membership(state, event.sender)
    target_membership = _membership(state, target)
    join_rules = state.get(JOIN_RULES_KEY)
    # With no m.room.join_rules event the rule is "invite": the spec is
    # silent; Synapse defaults to invite (and so do the oracle vectors).
    join_rule: object = "invite" if join_rules is None else join_rules.content.get("join_rule")

    if membership == "join":
        _check_join(event, state, create, target, target_membership, join_rule)
    elif membership == "invite":
        _check_invite(event, state, target, sender_membership, target_membership)
    elif membership == "leave":
        # 4.5.1: leaving oneself is allowed from invite, join or knock.
        if event.sender == target:
            if target_membership in ("invite", "join", "knock"):
                return
            raise AuthError(f"cannot leave from membership {target_membership!r}")
        # 4.5.2
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        sender_level = user_power_level(state, event.sender)
        # 4.5.3: unbanning needs the ban level.
        if target_membership == "ban" and sender_level < get_named_level(state, "ban"):
            raise AuthError("sender's power level is below the ban level")
        # 4.5.4: kicking needs the kick level and more power than the target.
        if (
            sender_level >= get_named_level(state, "kick")
            and user_power_level(state, target) < sender_level
        ):
            return
        raise AuthError("sender may not kick this user")
    elif membership == "ban":
        # 4.6.1
        if sender_membership != "join":
            raise AuthError("sender is not joined")
        # 4.6.2
        sender_level = user_power_level(state, event.sender)
        if (
            sender_level >= get_named_level(state, "ban")
            and user_power_level(state, target) < sender_level
        ):
            return
        raise AuthError("sender may not ban this user")
    elif membership == "knock" and room_version.knock_join_rule:
        # v7+ 4.7 (MSC2403); v10 adds knock_restricted (MSC3787).
        knock_rules = {"knock"}
        if room_version.knock_restricted_join_rule:
            knock_rules.add("knock_restricted")
        if join_rule not in knock_rules:
            raise AuthError("the join rule does not allow knocking")
        if event.sender != target:
            raise AuthError("cannot knock for another user")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"cannot knock from membership {sender_membership!r}")
    else:
        # 4.8: "Otherwise, the membership is unknown. Reject."
        raise AuthError(f"unknown membership {membership!r}")


def _check_join(
    event: Event,
    state: Mapping[StateKey, Event],
    create: Event,
    target: str,
    target_membership: str | None,
    join_rule: object,
) -> None:
    """Rule 4.3: ``membership`` is ``join``."""
    room_version = event.room_version
    # 4.3.1: "If the only previous event is an m.room.create and the state_key
    # is the creator, allow." (v11+: the sender of the m.room.create.)
    if event.prev_event_ids == (create.event_id,) and target == _creator(create):
        return
    # 4.3.2
    if event.sender != target:
        raise AuthError("cannot join for another user")
    # 4.3.3
    if target_membership == "ban":
        raise AuthError("sender is banned")
    # 4.3.4: invite (and v7+ knock) rooms need an invite.
    invite_rules = {"invite", "knock"} if room_version.knock_join_rule else {"invite"}
    if join_rule in invite_rules:
        if target_membership in ("invite", "join"):
            return
        raise AuthError("the room is invite-only and the user is not invited")
    # 4.3.5 (v8+ restricted, MSC3083; v10+ knock_restricted, MSC3787).
    restricted_rules: set[str] = set()
    if room_version.restricted_join_rule:
        restricted_rules.add("restricted")
    if room_version.knock_restricted_join_rule:
        restricted_rules.add("knock_restricted")
    if join_rule in restricted_rules:
        if target_membership in ("invite", "join"):
            return
        authoriser = event.content.get("join_authorised_via_users_server")
        if not isinstance(authoriser, str):
            raise AuthError("restricted join without join_authorised_via_users_server")
        if _membership(state, authoriser) != "join":
            raise AuthError("the authorising user is not joined")
        if user_power_level(state, authoriser) < get_named_level(state, "invite"):
            raise AuthError("the authorising user may not invite")
        return
    # 4.3.6
    if join_rule == "public":
        return
    # 4.3.7
    raise AuthError(f"join rule {join_rule!r} does not allow this join")


def _check_invite(
    event: Event,
    state: Mapping[StateKey, Event],
    target: str,
    sender_membership: str | None,
    target_membership: str | None,
) -> None:
    """Rule 4.4: ``membership`` is ``invite``."""
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, state, target, target_membership)
        return
    # 4.4.2
    if sender_membership != "join":
        raise AuthError("sender is not joined")
    # 4.4.3
    if target_membership in ("join", "ban"):
        raise AuthError(f"cannot invite a user whose membership is {target_membership}")
    # 4.4.4
    if user_power_level(state, event.sender) >= get_named_level(state, "invite"):
        return
    raise AuthError("sender's power level is below the invite level")


def _check_third_party_invite(
    event: Event, state: Mapping[StateKey, Event], target: str, target_membership: str | None
) -> None:
    """Rule 4.4.1: an invite with ``content.third_party_invite``."""
    # 4.4.1.1
    if target_membership == "ban":
        raise AuthError("the invited user is banned")
    # 4.4.1.2
    third_party_invite = event.content["third_party_invite"]
    signed = third_party_invite.get("signed") if isinstance(third_party_invite, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no signed object")
    # 4.4.1.3
    mxid = signed.get("mxid")
    token = signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed needs mxid and token")
    # 4.4.1.4
    if mxid != target:
        raise AuthError("third_party_invite.signed.mxid does not match the state_key")
    # 4.4.1.5
    invite_event = state.get((_THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("no m.room.third_party_invite for this token")
    # 4.4.1.6
    if invite_event.sender != event.sender:
        raise AuthError("sender does not match the m.room.third_party_invite's sender")
    # 4.4.1.7: any signature in signed made by any of the published keys.
    if _signed_by_any(signed, _third_party_public_keys(invite_event.content)):
        return
    # 4.4.1.8
    raise AuthError("third_party_invite.signed is not signed by the invite's keys")


def _third_party_public_keys(content: Mapping[str, Any]) -> list[bytes]:
    """``public_key`` and every ``public_keys[].public_key``, decoded; bad ones skipped."""
    encoded: list[object] = [content.get("public_key")]
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        encoded.extend(entry.get("public_key") for entry in public_keys if isinstance(entry, dict))
    keys: list[bytes] = []
    for value in encoded:
        if isinstance(value, str):
            try:
                keys.append(decode_base64(value))
            except ValueError:
                continue
    return keys


def _signed_by_any(signed: dict[str, Any], keys: list[bytes]) -> bool:
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    for signer, by_key_id in signatures.items():
        if not isinstance(by_key_id, dict):
            continue
        for key_id in by_key_id:
            for key in keys:
                try:
                    verify_signature(signed, signer, key_id, key)
                except (SignatureError, ValueError):
                    continue
                return True
    return False


def _check_power_levels(
    event: Event, state: Mapping[StateKey, Event], create: Event, sender_level: PowerLevel
) -> None:
    """Rule 9 (v12: rule 10): ``m.room.power_levels``."""
    room_version = event.room_version
    content = event.content
    _validate_power_levels_content(room_version, content)

    users = content.get("users", {})
    if room_version.creators_have_infinite_power:
        # v12 10.4: creators cannot be listed in users.
        listed = get_creators(create).intersection(users)
        if listed:
            raise AuthError(f"room creators may not be listed in users: {sorted(listed)}")

    # 9.4: "If there is no previous m.room.power_levels event in the room, allow."
    # The previous event is the one this event replaces, the one with the same
    # state key: for the room's power levels (state key "") the two readings
    # agree. For an m.room.power_levels with another state key (which grants
    # nothing: only "" is read as the room's power levels), Synapse compares
    # it with the previous event of that state key, and with none allows it
    # (``_check_power_levels``); on receipt the auth events never hold one.
    # Comparing it with the room's power levels instead would reject events
    # every Synapse server accepts, so we match Synapse.
    previous = state.get(event.state_tuple)
    if previous is None:
        return
    old = previous.content

    def level(mapping: object, key: str) -> int | None:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        return parse_power_level(room_version, mapping[key])

    # 9.5: named levels added, changed or removed: neither the old nor the
    # new value may be above the sender's level.
    for name in _NAMED_LEVEL_DEFAULTS:
        old_value, new_value = level(old, name), level(content, name)
        if old_value == new_value:
            continue
        if old_value is not None and old_value > sender_level:
            raise AuthError(f"cannot change {name} from a level above your own")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"cannot set {name} above your own level")

    # 9.6 / 9.7: events, and (v6+, MSC2209) notifications.
    mapping_names = ["events"]
    if room_version.limit_notifications_power_levels:
        mapping_names.append("notifications")
    for mapping_name in mapping_names:
        old_mapping, new_mapping = old.get(mapping_name), content.get(mapping_name)
        for key in _keys(old_mapping) | _keys(new_mapping):
            old_value, new_value = level(old_mapping, key), level(new_mapping, key)
            if old_value == new_value:
                continue
            if old_value is not None and old_value > sender_level:
                raise AuthError(f"cannot change {mapping_name}[{key!r}] from above your level")
            if new_value is not None and new_value > sender_level:
                raise AuthError(f"cannot set {mapping_name}[{key!r}] above your level")

    # 9.8 / 9.9: users.
    old_users = old.get("users")
    for user in _keys(old_users) | _keys(users):
        old_value, new_value = level(old_users, user), level(users, user)
        if old_value == new_value:
            continue
        # 9.8: others' entries at or above the sender's level cannot change.
        if user != event.sender and old_value is not None and old_value >= sender_level:
            raise AuthError(f"cannot change the level of {user}, at or above your own")
        # 9.9
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"cannot give {user} a level above your own")


def _keys(mapping: object) -> set[str]:
    return set(mapping) if isinstance(mapping, dict) else set()


def _validate_power_levels_content(room_version: RoomVersion, content: Mapping[str, Any]) -> None:
    """Rules 9.1–9.3: the shape of an m.room.power_levels event's content."""
    if room_version.integer_power_levels:
        # v10+ 9.1: named levels, if present, are integers.
        for name in _NAMED_LEVEL_DEFAULTS:
            if name in content and not _is_strict_int(content[name]):
                raise AuthError(f"{name} must be an integer")
        # v10+ 9.2: events and notifications, if present, map to integers.
        for name in ("events", "notifications"):
            if name in content:
                value = content[name]
                if not isinstance(value, dict) or not all(
                    _is_strict_int(v) for v in value.values()
                ):
                    raise AuthError(f"{name} must be an object of integers")
    elif room_version.float_power_levels:
        # Fragment v1-floaty-power-levels: "Values outside the range
        # represented by IEEE754 binary64, Infinity, -Infinity and NaN cause
        # the power level event to be rejected."
        values: list[object] = [content.get(name) for name in _NAMED_LEVEL_DEFAULTS]
        for name in ("events", "notifications", "users"):
            nested = content.get(name)
            if isinstance(nested, dict):
                values.extend(nested.values())
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise AuthError("power levels must be finite numbers")

    # 9.3 (v1–v9: 9.1): users maps valid user IDs to levels. Absent is
    # allowed (treated as empty, as Synapse does; the spec is silent).
    if "users" not in content:
        return
    users = content["users"]
    if not isinstance(users, dict):
        raise AuthError("users must be an object")
    for user_id, value in users.items():
        if not is_valid_user_id(user_id):
            raise AuthError(f"not a valid user ID: {user_id!r}")
        if parse_power_level(room_version, value) is None:
            raise AuthError(f"not a valid power level for {user_id}: {value!r}")


# ---------------------------------------------------------------------------
# Both halves


def check_auth_rules(
    event: Event, auth_events: Iterable[Event], rejected_event_ids: frozenset[str] = frozenset()
) -> None:
    """Authorize ``event`` against its auth events (checks on receipt of a PDU, step 4).

    Runs :func:`check_state_independent_auth_rules`, then
    :func:`check_state_dependent_auth_rules` with the auth events as the state.
    In v12 ``auth_events`` must include the room's create event.
    """
    events = list(auth_events)
    check_state_independent_auth_rules(event, events, rejected_event_ids)
    check_state_dependent_auth_rules(event, {e.state_tuple: e for e in events})
