"""What other servers may read of our rooms: /event, /state, /state_ids,
/event_auth, /get_missing_events and /backfill (Server-Server API).

Every read is authorised for the requesting server (FEDERATION-MODELS.md §3,
item 13; CVE-2022-39335): the origin must have a user joined to the room (or,
for an event, have been in the room at that event), and events are filtered
by history visibility for that server (Server-Server API: a server may see an
event if any of its users could; "Visibility of events to servers").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ranvier.core.events import Event
from ranvier.core.ids import server_name_of
from ranvier.errors import MatrixError
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

#: Caps on what one request may make us read (Synapse: /backfill 100).
MAX_BACKFILL = 100
MAX_MISSING_EVENTS = 20
MAX_AUTH_CHAIN = 10_000

HISTORY_VISIBILITY = ("m.room.history_visibility", "")


class FederationReads:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.events = hs.rooms.events

    # --- authorisation ---------------------------------------------------------------

    async def _require_server_in_room(self, origin: str, room_id: str) -> None:
        if await self.hs.rooms.store.get_room(room_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}")
        members = await self.hs.rooms.joined_user_ids(room_id)
        if not any(server_name_of(user_id) == origin for user_id in members):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} is not in room {room_id}")

    async def _visible_to_server(self, origin: str, events: Iterable[StoredEvent]) -> list[Event]:
        """Events ``origin`` may see: history visibility at each event, for any of
        its users (Synapse's ``filter_events_for_server``: ``world_readable`` and
        ``shared`` show everything; ``invited``/``joined`` need a member of that
        server with that membership at the event)."""
        visible: list[Event] = []
        for stored in events:
            if stored.rejected or stored.soft_failed:
                continue
            if stored.outlier or stored.state_group_before is None:
                visible.append(stored.event)  # state and auth chain: shared
                continue
            state = await self.hs.rooms.state_store.get_state_ids(stored.state_group_before)
            visibility = "shared"
            vis_id = state.get(HISTORY_VISIBILITY)
            if vis_id is not None:
                vis = await self.events.get_event(vis_id)
                if vis is not None:
                    visibility = str(vis.event.content.get("history_visibility", "shared"))
            if visibility in ("shared", "world_readable"):
                visible.append(stored.event)
                continue
            wanted = ("join",) if visibility == "joined" else ("join", "invite")
            member_ids = [
                event_id
                for (event_type, user_id), event_id in state.items()
                if event_type == "m.room.member" and server_name_of(user_id) == origin
            ]
            members = await self.events.get_events(member_ids)
            if any(m.event.membership in wanted for m in members.values()):
                visible.append(stored.event)
        return visible

    # --- endpoints ---------------------------------------------------------------------

    async def event(self, origin: str, event_id: str) -> dict[str, Any]:
        """GET /event/{eventId}: a transaction holding the one PDU."""
        stored = await self.events.get_event(event_id)
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        await self._require_server_in_room(origin, stored.room_id)
        visible = await self._visible_to_server(origin, [stored])
        if not visible:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        return self._transaction([visible[0]])

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /state_ids/{roomId}?event_id=: the state before the event and its auth chain."""
        state, chain = await self._state_and_chain(origin, room_id, event_id)
        return {
            "pdu_ids": [e.event_id for e in state],
            "auth_chain_ids": [e.event_id for e in chain],
        }

    async def state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /state/{roomId}?event_id=: the same, as full PDUs."""
        state, chain = await self._state_and_chain(origin, room_id, event_id)
        return {
            "pdus": [dict(e.pdu) for e in state],
            "auth_chain": [dict(e.pdu) for e in chain],
        }

    async def _state_and_chain(
        self, origin: str, room_id: str, event_id: str
    ) -> tuple[list[Event], list[Event]]:
        await self._require_server_in_room(origin, room_id)
        stored = await self.events.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.outlier:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        state_ids = await self.events.state_at_event(event_id) or {}
        loaded = await self.events.get_events(state_ids.values())
        state = [loaded[e].event for e in state_ids.values() if e in loaded]
        chain = await self._auth_chain(e.event_id for e in state)
        return state, chain

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """GET /event_auth/{roomId}/{eventId}: the event's full auth chain."""
        await self._require_server_in_room(origin, room_id)
        stored = await self.events.get_event(event_id)
        if stored is None or stored.room_id != room_id:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found")
        if not await self._visible_to_server(origin, [stored]):
            raise MatrixError(403, "M_FORBIDDEN", "You may not see that event")
        chain = await self._auth_chain([event_id], include_roots=False)
        return {"auth_chain": [dict(e.pdu) for e in chain]}

    async def _auth_chain(
        self, roots: Iterable[str], *, include_roots: bool = False
    ) -> list[Event]:
        """Every event reached through ``auth_events`` from ``roots``, oldest first."""
        found: dict[str, Event] = {}
        root_set = set(roots)
        frontier = set(root_set)
        while frontier and len(found) < MAX_AUTH_CHAIN:
            loaded = await self.events.get_events(frontier)
            frontier = set()
            for stored in loaded.values():
                if stored.event_id not in root_set or include_roots:
                    found[stored.event_id] = stored.event
                for auth_id in stored.event.auth_event_ids:
                    if auth_id not in found and auth_id not in root_set:
                        frontier.add(auth_id)
        return sorted(found.values(), key=lambda e: (e.depth, e.event_id))

    async def get_missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> dict[str, Any]:
        """POST /get_missing_events/{roomId}: walking back from ``latest`` through
        prev events, those not in ``earliest`` (nor reachable from it), at most
        ``limit``, none shallower than ``min_depth``, oldest first."""
        await self._require_server_in_room(origin, room_id)
        limit = max(0, min(limit, MAX_MISSING_EVENTS))
        seen = set(earliest) | set(latest)
        frontier = list(latest)
        found: list[StoredEvent] = []
        while frontier and len(found) < limit:
            loaded = await self.events.get_events(frontier)
            next_frontier: list[str] = []
            for event_id in frontier:
                stored = loaded.get(event_id)
                if stored is None or stored.room_id != room_id:
                    continue
                for prev_id in stored.event.prev_event_ids:
                    if prev_id in seen:
                        continue
                    seen.add(prev_id)
                    next_frontier.append(prev_id)
            prevs = await self.events.get_events(next_frontier)
            for prev_id in next_frontier:
                prev = prevs.get(prev_id)
                if prev is None or prev.room_id != room_id or prev.event.depth < min_depth:
                    continue
                if len(found) < limit:
                    found.append(prev)
            frontier = [e for e in next_frontier if e in prevs]
        visible = await self._visible_to_server(origin, found)
        return {"events": [dict(e.pdu) for e in sorted(visible, key=lambda e: e.depth)]}

    async def backfill(
        self, origin: str, room_id: str, from_ids: Sequence[str], limit: int
    ) -> dict[str, Any]:
        """GET /backfill/{roomId}?v=&limit=: events before (and including) ``from_ids``,
        newest first, walking prev events breadth-first."""
        await self._require_server_in_room(origin, room_id)
        limit = max(0, min(limit, MAX_BACKFILL))
        seen: set[str] = set()
        frontier = list(dict.fromkeys(from_ids))
        found: list[StoredEvent] = []
        while frontier and len(found) < limit:
            loaded = await self.events.get_events(frontier)
            next_frontier: list[str] = []
            for event_id in frontier:
                stored = loaded.get(event_id)
                if stored is None or stored.room_id != room_id or event_id in seen:
                    continue
                seen.add(event_id)
                if len(found) < limit:
                    found.append(stored)
                next_frontier.extend(p for p in stored.event.prev_event_ids if p not in seen)
            frontier = next_frontier
        visible = await self._visible_to_server(origin, found)
        return self._transaction(sorted(visible, key=lambda e: -e.depth))

    async def timestamp_to_event(
        self, origin: str, room_id: str, timestamp: int, direction: Literal["f", "b"]
    ) -> dict[str, Any]:
        """GET /timestamp_to_event/{roomId}?ts=&dir= (MSC3030): the closest event
        at or after (``f``) / at or before (``b``) ``timestamp`` that ``origin``
        may see; 404 ``M_NOT_FOUND`` when there is none."""
        await self._require_server_in_room(origin, room_id)
        stored = await self.events.event_at_timestamp(room_id, timestamp, direction)
        if stored is None or not await self._visible_to_server(origin, [stored]):
            raise MatrixError(
                404, "M_NOT_FOUND", f"Unable to find event from {timestamp} in direction {direction}"
            )
        return {"event_id": stored.event_id, "origin_server_ts": stored.event.origin_server_ts}

    def _transaction(self, events: Sequence[Event]) -> dict[str, Any]:
        return {
            "origin": self.hs.server_name,
            "origin_server_ts": self.hs.clock_ms(),
            "pdus": [dict(e.pdu) for e in events],
        }
