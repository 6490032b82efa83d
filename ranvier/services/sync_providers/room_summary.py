"""A joined room's ``summary`` (sync.yaml, ``RoomSummary``): member counts and,
for rooms without a name or canonical alias, ``m.heroes``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranvier.storage.state import StateKey, StateMap

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: Room summary: "the first 5 members of the room" (sync.yaml, m.heroes).
HERO_COUNT = 5
_NAME_KEYS: list[StateKey] = [("m.room.name", ""), ("m.room.canonical_alias", "")]


async def room_summaries(
    hs: Homeserver, user_id: str, room_ids: list[str], starts: dict[str, StateMap]
) -> dict[str, dict[str, Any]]:
    """The summary of each room (``starts``: state already loaded, by room)."""
    if not room_ids:
        return {}
    named = await _named_rooms(hs, room_ids, starts)
    return await _summaries(hs, user_id, room_ids, named)


async def _named_rooms(
    hs: Homeserver, room_ids: list[str], starts: dict[str, StateMap]
) -> set[str]:
    """The rooms with a non-empty ``m.room.name`` or ``m.room.canonical_alias``
    (they need no heroes), from the state already loaded where there is one."""
    events = hs.rooms.events
    ids: dict[str, list[str]] = {}
    for room_id in room_ids:
        state = starts.get(room_id) or await events.current_state_ids(room_id, _NAME_KEYS)
        ids[room_id] = [state[key] for key in _NAME_KEYS if key in state]
    loaded = await events.get_events([eid for eids in ids.values() for eid in eids])
    named: set[str] = set()
    for room_id, event_ids in ids.items():
        for event_id in event_ids:
            stored = loaded.get(event_id)
            content = stored.event.content if stored is not None else {}
            if content.get("name") or content.get("alias"):
                named.add(room_id)
    return named


async def _summaries(
    hs: Homeserver, user_id: str, room_ids: list[str], named: set[str]
) -> dict[str, dict[str, Any]]:
    """``m.joined_member_count``, ``m.invited_member_count`` and, for rooms
    without a name or canonical alias, ``m.heroes`` (as Synapse)."""
    store = hs.rooms.store
    counts = await store.membership_counts(room_ids)
    unnamed = [room_id for room_id in room_ids if room_id not in named]
    heroes: dict[str, list[str]] = {}
    if unnamed:
        heroes = await store.first_members(unnamed, ("join", "invite"), user_id, HERO_COUNT)
        lonely = [room_id for room_id in unnamed if not heroes.get(room_id)]
        if lonely:
            heroes.update(await store.first_members(lonely, ("leave", "ban"), user_id, HERO_COUNT))
    summaries: dict[str, dict[str, Any]] = {}
    for room_id in room_ids:
        summary: dict[str, Any] = {
            "m.joined_member_count": counts.get(room_id, {}).get("join", 0),
            "m.invited_member_count": counts.get(room_id, {}).get("invite", 0),
        }
        if room_id not in named:
            summary["m.heroes"] = heroes.get(room_id, [])
        summaries[room_id] = summary
    return summaries
