"""Backfill: history of a room from before this server joined it.

Server-Server API, "Backfilling and retrieving missing events"
(``GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=``). A server
that joins over federation holds the state and the join, not what came
before; the room's *backward extremities* (prev events cited by events we
hold with their state, but not held so themselves; maintained by
``persist_federated_events``) mark where its known history stops. When a
client's ``/messages`` pages backwards to there, we ask servers in the room
for earlier events, as Synapse does (``maybe_backfill``).

Each event pulled passes the one verification path (``hs.pdu_checker``: format,
signatures, content hash), then authorization against its auth events and
the state before it (``FederationEventHandler.check_backfilled``; missing auth
events and the state at unknown prev events are fetched by the handler's
helpers). It is stored as backfilled history: ordered before everything held
(negative stream orderings, see ``persist_federated_events``), never room
state, never a forward extremity, and /sync is not woken.

Bounded: one call makes at most ``MAX_SERVERS_TRIED`` /backfill requests, each
under ``BACKFILL_TIMEOUT_S``; a server that fails or answers garbage is
skipped, and /messages answers with what is held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ranvier.core.events import Event
from ranvier.core.ids import server_name_of
from ranvier.core.room_versions import get_room_version
from ranvier.services.federation.events import FederationEventHandler, PduCheckFailed, PduVerifier
from ranvier.storage.events import FederatedEvent
from ranvier.storage.state import StateMap

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: Events asked for per /backfill request (Synapse asks for 100; the resident
#: caps it at 100 too, ranvier/services/federation/reads.py).
BACKFILL_LIMIT = 100
#: Servers asked, one after another, per backfill attempt.
MAX_SERVERS_TRIED = 3
#: Backward extremities named in one request (``v`` may repeat).
MAX_EXTREMITIES = 5
#: Each remote call is bounded: a slow server must not hold /messages forever.
BACKFILL_TIMEOUT_S = 20.0


class RemoteBackfill(Protocol):
    async def backfill(
        self, destination: str, room_id: str, event_ids: Sequence[str], limit: int
    ) -> list[Mapping[str, Any]]: ...


class FederationBackfill:
    def __init__(
        self,
        hs: Homeserver,
        remote: RemoteBackfill,
        verify: PduVerifier,
        handler: FederationEventHandler,
    ) -> None:
        self.hs = hs
        self.remote = remote
        self.verify = verify
        self.handler = handler
        self.events = hs.rooms.events
        #: One backfill per room at a time: concurrent /messages wait for it.
        self._running: dict[str, asyncio.Lock] = {}

    async def backfill(self, room_id: str) -> int:
        """Pull history from before the room's backward extremities; how many
        events were stored (0: none to pull, or no server gave any)."""
        lock = self._running.setdefault(room_id, asyncio.Lock())
        async with lock:
            extremities = await self.events.backward_extremities(room_id, MAX_EXTREMITIES)
            if not extremities:
                return 0
            for server in await self._servers(room_id):
                try:
                    stored = await self._backfill_from(server, room_id, extremities)
                except Exception as exc:  # any failure of one server: try the next
                    logger.info("Backfill of %s from %s failed: %r", room_id, server, exc)
                    continue
                if stored:
                    return stored
            return 0

    async def _servers(self, room_id: str) -> list[str]:
        """Other servers with users joined, the room creator's first (likely to
        hold the whole history); at most ``MAX_SERVERS_TRIED``."""
        members = await self.hs.rooms.joined_user_ids(room_id)
        servers = sorted({server_name_of(user) or "" for user in members})
        room = await self.hs.rooms.store.get_room(room_id)
        creator = None if room is None else server_name_of(room.creator)
        if creator in servers:
            servers.remove(creator)
            servers.insert(0, creator)
        mine = self.hs.server_name
        return [s for s in servers if s and s != mine][:MAX_SERVERS_TRIED]

    async def _backfill_from(self, server: str, room_id: str, extremities: list[str]) -> int:
        room = await self.hs.rooms.store.get_room(room_id)
        if room is None:
            return 0
        version = get_room_version(room.room_version)
        pdus = await asyncio.wait_for(
            self.remote.backfill(server, room_id, extremities, BACKFILL_LIMIT),
            BACKFILL_TIMEOUT_S,
        )
        pulled: dict[str, Event] = {}
        for pdu in pdus[:BACKFILL_LIMIT]:
            try:
                event = await self.verify(version, pdu)
            except PduCheckFailed as exc:
                logger.info("Dropped a backfilled event from %s: %s", server, exc)
                continue
            if event.room_id == room_id:
                pulled[event.event_id] = event
        checked = await self._check(server, list(pulled.values()))
        if not checked:
            return 0
        async with self.hs.rooms.room_lock(room_id):
            stored = await self.events.persist_federated_events(
                room_id, checked, backfilled=True
            )
        return len(stored)

    async def _check(self, server: str, events: list[Event]) -> list[FederatedEvent]:
        """The pulled events not yet held with their state, checked oldest first
        (depth order: prev events before the events citing them)."""
        held = await self.events.get_events(e.event_id for e in events)

        def wanted_event(event: Event) -> bool:
            stored = held.get(event.event_id)
            return stored is None or (stored.outlier and not stored.rejected)

        wanted = [e for e in sorted(events, key=lambda e: (e.depth, e.event_id)) if wanted_event(e)]
        state_after: dict[str, StateMap] = {}
        checked: list[FederatedEvent] = []
        for event in wanted:
            item = await self.handler.check_backfilled(server, event, state_after)
            if item is None or item.state_before is None:
                continue
            after = dict(item.state_before)
            if event.is_state() and not item.rejected:
                after[event.state_tuple] = event.event_id
            state_after[event.event_id] = after
            checked.append(item)
        return checked


__all__ = ["BACKFILL_LIMIT", "FederationBackfill", "RemoteBackfill"]
