"""History visibility (Client-Server API, "Room History Visibility", Server behaviour).

Whether a user may see an event depends on the room state *at that event*
(the state before it):

1. ``world_readable``: allow.
2. The user's membership was ``join``: allow.
3. ``shared``, and the user joined the room at any point after the event: allow.
4. The user's membership was ``invite`` and visibility ``invited``: allow.
5. Otherwise deny.

For ``m.room.history_visibility`` events the visibility before *or* after
the event counts; for the user's own ``m.room.member`` events, their
membership before *or* after. Missing or unknown visibility is ``shared``.

Both filters also leave out the non-state events of users the user ignores
("Ignoring Users", ``services/ignored_users.py``), so that every endpoint
serving events to a user by these filters leaves them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ranvier.services.ignored_users import drop_ignored_senders
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

_VISIBILITIES = ("world_readable", "shared", "invited", "joined")
HISTORY_VISIBILITY = "m.room.history_visibility"


def _allowed(visibility: str, membership: str | None, joined_later: bool) -> bool:
    if visibility == "world_readable" or membership == "join":
        return True
    if visibility == "shared" and joined_later:
        return True
    return visibility == "invited" and membership == "invite"


def _visibility_of(content: object) -> str:
    value = content.get("history_visibility") if isinstance(content, dict) else None
    return value if isinstance(value, str) and value in _VISIBILITIES else "shared"


async def filter_events_for_user(
    hs: Homeserver,
    user_id: str,
    events: Sequence[StoredEvent],
    *,
    include_ignored: bool = False,
) -> list[StoredEvent]:
    """The events of ``events`` that ``user_id`` may see, in the same order;
    ``include_ignored`` keeps those of ignored senders (for a check that is
    about the room's state at an event, not about serving it)."""
    if not include_ignored:
        events = await drop_ignored_senders(hs, user_id, events)
    store = hs.rooms.events
    state_store = hs.rooms.state_store
    member_key = ("m.room.member", user_id)
    visibility_key = (HISTORY_VISIBILITY, "")
    # Per state group: (visibility, membership) of the user.
    by_group: dict[int, tuple[str, str | None]] = {}
    # Per room: stream positions of the user's joins.
    joins: dict[str, list[int]] = {}

    visible: list[StoredEvent] = []
    for stored in events:
        if stored.rejected or stored.outlier or stored.soft_failed:
            continue
        event = stored.event
        group = stored.state_group_before
        if group is None:
            # The create event: nothing before it. Visible to whoever can see what follows.
            before: tuple[str, str | None] = ("shared", None)
        elif group in by_group:
            before = by_group[group]
        else:
            ids = await state_store.get_state_ids_for_keys(group, [visibility_key, member_key])
            loaded = await store.get_events(ids.values())
            vis_event = loaded.get(ids.get(visibility_key, ""))
            member_event = loaded.get(ids.get(member_key, ""))
            before = (
                _visibility_of(vis_event.event.content) if vis_event else "shared",
                member_event.event.membership if member_event else None,
            )
            by_group[group] = before
        visibilities = [before[0]]
        memberships = [before[1]]
        if event.type == HISTORY_VISIBILITY and event.state_key == "":
            visibilities.append(_visibility_of(dict(event.content)))
        if event.type == "m.room.member" and event.state_key == user_id:
            memberships.append(event.membership)
        if event.room_id not in joins:
            history = await store.membership_history_in_room(event.room_id, user_id)
            joins[event.room_id] = [c.stream_ordering for c in history if c.membership == "join"]
        joined_later = any(pos > stored.stream_ordering for pos in joins[event.room_id])
        if any(
            _allowed(vis, membership, joined_later)
            for vis in visibilities
            for membership in memberships
        ):
            visible.append(stored)
    return visible


async def filter_events_for_member(
    hs: Homeserver,
    user_id: str,
    events: list[StoredEvent],
    joined_from: int | None,
    *,
    include_ignored: bool = False,
) -> list[StoredEvent]:
    """``filter_events_for_user`` with a shortcut for a current member: the
    user's current join (at stream position ``joined_from``) and the events
    after it are visible without looking at the state, since their membership
    at them is join ("History visibility": a joined member sees the events
    while joined; the join event itself carries that membership). An
    initial /sync's timeline of a newly joined room holds that join: no state
    lookups per room for it (on PostgreSQL each was a round trip)."""
    if not include_ignored:
        events = await drop_ignored_senders(hs, user_id, events)
    slow = [e for e in events if joined_from is None or e.stream_ordering < joined_from]
    if not slow:
        return events
    allowed = {
        e.event_id for e in await filter_events_for_user(hs, user_id, slow, include_ignored=True)
    }
    return [
        e
        for e in events
        if (joined_from is not None and e.stream_ordering >= joined_from) or e.event_id in allowed
    ]
