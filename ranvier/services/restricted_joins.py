"""Who authorises a join to a restricted room (Client-Server API, "Restricted
rooms"; room versions 8+, MSC3083): a join through membership of an allowed
room names, in ``join_authorised_via_users_server``, a user of the resident
server who may invite. Used for local joins (``RoomsService.join``) and for
the template a resident server answers ``make_join`` with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ranvier.core.auth_rules import JOIN_RULES_KEY, get_named_level, user_power_level
from ranvier.errors import MatrixError

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

MEMBER = "m.room.member"


async def restricted_join_authoriser(hs: Homeserver, room_id: str, user_id: str) -> str | None:
    """For a restricted room the user may join through membership of an allowed
    room: one of our users who may invite (Client-Server API, "Restricted
    rooms"; room versions 8+). None when the room is not restricted or the
    user is invited or joined already."""
    events = hs.rooms.events
    state = await events.current_state_ids(room_id, [JOIN_RULES_KEY, (MEMBER, user_id)])
    loaded = await events.get_events(state.values())
    rules = loaded.get(state.get(JOIN_RULES_KEY, ""))
    if rules is None or rules.event.content.get("join_rule") not in (
        "restricted",
        "knock_restricted",
    ):
        return None
    member = loaded.get(state.get((MEMBER, user_id), ""))
    if member is not None and member.event.membership in ("join", "invite"):
        return None
    allowed_rooms = [
        entry.get("room_id")
        for entry in rules.event.content.get("allow", [])
        if isinstance(entry, dict) and entry.get("type") == "m.room_membership"
    ]
    joined_any = False
    for other in allowed_rooms:
        if isinstance(other, str) and await hs.rooms.get_membership(other, user_id) == "join":
            joined_any = True
            break
    if not joined_any:
        raise MatrixError(403, "M_FORBIDDEN", "The user is in none of the rooms this room allows")
    full = await events.current_state(room_id)
    state_events = {key: stored.event for key, stored in full.items()}
    invite_level = get_named_level(state_events, "invite")
    for (event_type, member_id), stored in sorted(full.items()):
        if (
            event_type == MEMBER
            and stored.event.membership == "join"
            and hs.rooms.is_local_user(member_id)
            and user_power_level(state_events, member_id) >= invite_level
        ):
            return member_id
    raise MatrixError(
        400, "M_UNABLE_TO_AUTHORISE_JOIN", "No user of this server can authorise the join"
    )
