"""``rooms.invite`` and ``rooms.knock``: stripped state (Client-Server API,
"Stripped state") after the user's invite or knock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.core.stripped_state import STRIPPED_STATE_TYPES, sanitize_stripped_state
from ranvier.storage.events import StoredEvent
from ranvier.storage.rooms import Membership
from ranvier.storage.state import StateKey

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

MEMBER = "m.room.member"


async def stripped_state(hs: Homeserver, membership: Membership) -> list[dict[str, Any]]:
    """The stripped state after the user's invite or knock, the member event
    itself included (with its ID and timestamp, as Synapse serves it)."""
    store = hs.rooms.events
    own = await store.get_event(membership.event_id)
    state = await store.state_after_event(membership.event_id)
    if state is None and own is not None:
        # An invite or knock of a room this server is not in: the stripped
        # state the other server sent (services/federation/invites.py).
        return _remote_stripped_state(own)
    state = state or {}
    keys: list[StateKey] = [(t, "") for t in STRIPPED_STATE_TYPES]
    if own is not None:
        keys.append((MEMBER, own.event.sender))
    wanted = [state[key] for key in keys if key in state and state[key] != membership.event_id]
    events = await store.get_events_ordered(wanted)
    stripped: list[dict[str, Any]] = [
        {
            "type": e.event.type,
            "state_key": e.event.state_key,
            "sender": e.event.sender,
            "content": dict(e.event.content) if e.redacted_by is None else {},
        }
        for e in events
    ]
    if own is not None:
        stripped.append(_own_member_event(own))
    return stripped


def _remote_stripped_state(own: StoredEvent) -> list[dict[str, Any]]:
    unsigned = own.event.pdu.get("unsigned")
    unsigned = unsigned if isinstance(unsigned, dict) else {}
    raw = unsigned.get("invite_room_state", unsigned.get("knock_room_state"))
    # Checked when received; checked again so that nothing stored can break a sync.
    stripped = [
        entry
        for entry in sanitize_stripped_state(raw)
        if (entry["type"], entry["state_key"]) != own.event.state_tuple
    ]
    stripped.append(_own_member_event(own))
    return stripped


def _own_member_event(own: StoredEvent) -> dict[str, Any]:
    """The user's own invite or knock in its stripped state, with its ID and
    timestamp (as Synapse serves it)."""
    return {
        "type": own.event.type,
        "state_key": own.event.state_key,
        "sender": own.event.sender,
        "content": dict(own.event.content),
        "event_id": own.event_id,
        "origin_server_ts": own.event.origin_server_ts,
    }
