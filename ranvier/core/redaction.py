"""The redaction algorithm (fragments v1-, v6-, v9-, v11-redactions; v8.md).

``redact(room_version, event)`` returns a new dict holding only what the
version's algorithm keeps. It never mutates its input.
"""

from __future__ import annotations

from typing import Any

from ranvier.core.room_versions import RedactionRules, RoomVersion

_TOP_LEVEL_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11 (MSC2176) stops keeping origin, membership and prev_state.
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def _kept_content(rules: RedactionRules, event_type: Any, content: dict[str, Any]) -> dict[str, Any]:
    keep: tuple[str, ...] = ()
    if event_type == "m.room.member":
        if rules in (RedactionRules.V9, RedactionRules.V11):
            keep = ("membership", "join_authorised_via_users_server")
        else:
            keep = ("membership",)
    elif event_type == "m.room.create":
        if rules is RedactionRules.V11:
            return dict(content)
        keep = ("creator",)
    elif event_type == "m.room.join_rules":
        if rules in (RedactionRules.V1, RedactionRules.V6):
            keep = ("join_rule",)
        else:
            keep = ("join_rule", "allow")
    elif event_type == "m.room.power_levels":
        keep = _POWER_LEVEL_KEYS
        if rules is RedactionRules.V11:
            keep = (*_POWER_LEVEL_KEYS, "invite")
    elif event_type == "m.room.aliases":
        if rules is RedactionRules.V1:
            keep = ("aliases",)
    elif event_type == "m.room.history_visibility":
        keep = ("history_visibility",)
    elif event_type == "m.room.redaction" and rules is RedactionRules.V11:
        keep = ("redacts",)
    kept = {key: content[key] for key in keep if key in content}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        third_party_invite = _kept_third_party_invite(content.get("third_party_invite"))
        if third_party_invite is not None:
            kept["third_party_invite"] = third_party_invite
    return kept


def _kept_third_party_invite(value: Any) -> dict[str, Any] | None:
    """v11+ (MSC3821): what redaction keeps of a member's ``third_party_invite``.

    The spec keeps "the ``signed`` key of the ``third_party_invite`` key", and
    v11.md adds that ``third_party_invite`` "is no longer redacted, *but* will
    only contain the ``signed`` key after redaction". So an object without
    ``signed`` stays, as ``{}``; that is what MSC3821 says and what Synapse
    (``redact``) and ruma do. Dropping the key instead would change the
    redacted form, and with it the reference hash and the event ID, and split
    the room. A value that is not an object is dropped, as Synapse does (ruma
    keeps it as it is; no server sends one).
    """
    if not isinstance(value, dict):
        return None
    return {"signed": value["signed"]} if "signed" in value else {}


def redact(room_version: RoomVersion, event: dict[str, Any]) -> dict[str, Any]:
    """Return ``event`` stripped as the room version's redaction algorithm says."""
    rules = room_version.redaction_rules
    allowed = _TOP_LEVEL_V11 if rules is RedactionRules.V11 else _TOP_LEVEL_V1
    redacted = {key: value for key, value in event.items() if key in allowed}
    content = event.get("content")
    redacted["content"] = (
        _kept_content(rules, event.get("type"), content) if isinstance(content, dict) else {}
    )
    return redacted
