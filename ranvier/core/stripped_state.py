"""Stripped state: the room summary sent with invites and knocks.

Client-Server API, "Stripped state": "a simplified view of the state of a room
... to help a user decide whether to accept an invite or knock": events with
only ``type``, ``state_key``, ``sender`` and ``content``. Another server sends
it (``invite_room_state`` of PUT /v2/invite, ``knock_room_state`` of
send_knock) and nothing vouches for it, so what we keep is checked and bounded
before it reaches a client's /sync: a malformed entry must never break the
invitee's sync (CVE-2024-52815), and an invite must not carry megabytes of
"state" (CVE-2023-32323 bounded what Synapse sends along for the same reason).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ranvier.core.canonical_json import CanonicalJSONError, encode_canonical_json
from ranvier.core.input_limits import MAX_JSON_DEPTH, exceeds_depth

#: The state a server includes (Client-Server API, "Stripped state"), plus
#: ``m.room.topic`` as Synapse sends it; the sender's member event is added by
#: whoever builds the list.
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)
MEMBER = "m.room.member"
#: More entries than any honest server sends (one per type above, plus members).
MAX_STRIPPED_EVENTS = 20
#: An event is at most 64 KiB (Server-Server API, "Size limits").
MAX_STRIPPED_EVENT_BYTES = 65_536

_FIELDS = ("type", "state_key", "sender", "content")


def strip_event(
    event_type: str, state_key: str, sender: str, content: Mapping[str, Any]
) -> dict[str, Any]:
    """One stripped state event."""
    return {"type": event_type, "state_key": state_key, "sender": sender, "content": dict(content)}


def sanitize_stripped_state(raw: object) -> list[dict[str, Any]]:
    """The well-formed entries of a remote's stripped state, stripped to their
    four keys: at most one per (type, state_key), types of the list above or
    member events, each within the event size limit, at most
    :data:`MAX_STRIPPED_EVENTS`. Anything else is left out, never an error: the
    invite itself stays valid without a summary."""
    if not isinstance(raw, list):
        return []
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in raw:
        if len(kept) >= MAX_STRIPPED_EVENTS:
            break
        stripped = _sanitize_entry(entry)
        if stripped is not None:
            kept.setdefault((stripped["type"], stripped["state_key"]), stripped)
    return list(kept.values())


def _sanitize_entry(entry: object) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping):
        return None
    event_type, state_key, sender, content = (entry.get(name) for name in _FIELDS)
    if not (
        isinstance(event_type, str)
        and isinstance(state_key, str)
        and isinstance(sender, str)
        and isinstance(content, Mapping)
    ):
        return None
    if event_type not in STRIPPED_STATE_TYPES and event_type != MEMBER:
        return None
    stripped = strip_event(event_type, state_key, sender, content)
    if exceeds_depth(stripped, MAX_JSON_DEPTH):
        return None
    try:
        # Strict: no floats or integers beyond 2**53, which clients cannot
        # read alike (and orjson cannot even encode past 64 bits, which would
        # make the invitee's /sync fail).
        size = len(encode_canonical_json(stripped, strict=True))
    except CanonicalJSONError:
        return None
    return stripped if size <= MAX_STRIPPED_EVENT_BYTES else None
