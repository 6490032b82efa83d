"""Room events received over federation: into the room's DAG, checked, stored.

Server-Server API, "Checks performed on receipt of a PDU". What arrives here
has passed the checks that need no room state (format, size limits,
signatures, content hash: ``verify``, the same function for every source of
events — pushed by /send, pulled by /get_missing_events, /state_ids, /event
— so nothing fetched skips a check, the lesson of CVE-2022-39200). This
module does the rest, in the spec's order:

4. authorization against the event's own auth events → rejected on failure;
5. authorization against the state before it (the resolution of the states
   after its prev events) → rejected on failure;
6. authorization against the room's current state → soft-failed on failure.

Gaps are filled before that, without holding the room's lock while waiting
on another server (FEDERATION-MODELS.md, Synapse #9490): missing prev events
through /get_missing_events (bounded), and for prev events still unknown the
state at them through /state_ids (their events fetched and stored as
outliers). Missing auth events are fetched through /event. Then, under the
room's lock, the event is stored with its state, and the room's current state
becomes the resolution of the states after its forward extremities.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ranvier.core.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_rules,
    check_state_dependent_auth_rules,
)
from ranvier.core.events import Event, StateKey
from ranvier.core.room_versions import RoomVersion, get_room_version
from ranvier.core.state_res import resolve_state
from ranvier.storage.events import FederatedEvent, StoredEvent
from ranvier.storage.state import StateMap

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

logger = logging.getLogger(__name__)

#: /get_missing_events: how many events to ask for per request (Synapse asks for 10).
MISSING_EVENTS_LIMIT = 10
#: A gap (events missed while this server or the origin was unreachable) is
#: walked back with further /get_missing_events requests until it closes, up to
#: this many events; only beyond it does the gap's state come from /state_ids
#: alone, leaving the oldest missed events out of the timeline. Synapse stops
#: after one request and backfills the rest when a client pages into the gap;
#: pagination here follows stream order, so the history is fetched now, in
#: order, before the event that revealed the gap.
MAX_GAP_EVENTS = 500
#: How many unknown events one gap may make us fetch through /event (state
#: and auth chains at a missing prev event); beyond it the event is rejected.
MAX_EVENTS_FETCHED = 5000
#: Concurrent /event requests while filling one gap.
FETCH_CONCURRENCY = 10
#: Every remote call made to fill a gap is bounded (FEDERATION-MODELS.md: never
#: wait on an unbounded remote call; Synapse's get_missing_events timeout).
REMOTE_CALL_TIMEOUT_S = 60.0

#: Verifies a PDU from another server (format, limits, signatures, content hash)
#: and returns it as an Event, or raises ``PduCheckFailed``.
PduVerifier = Callable[[RoomVersion, Mapping[str, Any]], Awaitable[Event]]


class PduCheckFailed(Exception):
    """A PDU failed a check that needs no room state; it is dropped."""


class RemoteEvents(Protocol):
    """The federation requests that fill gaps in a room's DAG (the origin answers)."""

    async def get_missing_events(
        self,
        destination: str,
        room_id: str,
        earliest_events: Sequence[str],
        latest_events: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> list[Mapping[str, Any]]: ...

    async def state_ids(
        self, destination: str, room_id: str, event_id: str
    ) -> tuple[list[str], list[str]]: ...

    async def event(self, destination: str, event_id: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class PduOutcome:
    """What became of one received PDU (for /send's per-PDU results)."""

    event_id: str
    #: None when accepted (soft-failed events are accepted: the sender did nothing wrong
    #: that it could know of); else why it was rejected.
    error: str | None = None
    soft_failed: bool = False


class FederationEventHandler:
    """Receives room events from other servers into rooms this server is in."""

    def __init__(self, hs: Homeserver, remote: RemoteEvents, verify: PduVerifier) -> None:
        self.hs = hs
        self.remote = remote
        self.verify = verify
        self.events = hs.rooms.events

    # --- the entry point ---------------------------------------------------------------

    async def on_receive_pdu(self, origin: str, event: Event) -> PduOutcome:
        """Process one verified PDU of a room this server knows, pushed by ``origin``."""
        if await self.events.get_event(event.event_id) is not None:
            return PduOutcome(event.event_id)  # a duplicate: already processed
        room = await self.hs.rooms.store.get_room(event.room_id)
        if room is None:
            return PduOutcome(event.event_id, "this server is not in the room")
        version = get_room_version(room.room_version)
        if event.room_version.identifier != version.identifier:
            return PduOutcome(event.event_id, "room version does not match the room's")
        try:
            await self._fetch_missing_prev_events(origin, event)
            extra_state = await self._state_at_unknown_prevs(origin, event)
            await self._fetch_missing_auth_events(origin, [event])
        except (TimeoutError, PduCheckFailed, GapTooLarge) as exc:
            return PduOutcome(event.event_id, f"could not fill the gap before it: {exc}")
        async with self.hs.rooms.room_lock(event.room_id):
            outcome = await self._check_and_persist(event, extra_state)
        if outcome.error is None and not outcome.soft_failed:
            await self.hs.rooms.notify_event(event)
        return outcome

    # --- pulled history (backfill) ----------------------------------------------------------

    async def check_backfilled(
        self, origin: str, event: Event, batch_state_after: Mapping[str, StateMap]
    ) -> FederatedEvent | None:
        """Steps 4 and 5 for an old event pulled through /backfill, its state
        before it resolved over its prev events: those of its batch (their
        states after in ``batch_state_after``), stored ones, and for the rest
        the origin's /state_ids. No step 6: history is not checked against the
        current state (Synapse does not soft-fail backfilled events either).
        None when the state before it cannot be known (it is then not stored)."""
        await self._fetch_missing_auth_events(origin, [event])
        extra = await self._state_at_unknown_prevs(origin, event, batch_state_after)
        state_before = await self._state_before(event, {**batch_state_after, **extra})
        if state_before is None:
            return None
        error = await self._check_against_auth_events(event)
        if error is None:
            error = await self._check_against_state(event, state_before)
        if error is not None:
            logger.info("Rejected backfilled %s from %s: %s", event.event_id, origin, error)
        return FederatedEvent(event, state_before, rejected=error is not None)

    # --- steps 4 to 6, under the room's lock ----------------------------------------------

    async def _check_and_persist(
        self, event: Event, extra_state: Mapping[str, StateMap]
    ) -> PduOutcome:
        if await self.events.get_event(event.event_id) is not None:
            return PduOutcome(event.event_id)
        auth_error = await self._check_against_auth_events(event)
        state_before = await self._state_before(event, extra_state)
        if state_before is None:
            # Only when a prev event's state could be known neither here nor
            # from the origin: store it as an outlier, never as room state.
            await self.events.persist_federated_events(
                event.room_id, [FederatedEvent(event, None, rejected=True)]
            )
            return PduOutcome(event.event_id, "the state before the event is unknown")
        if auth_error is None:
            auth_error = await self._check_against_state(event, state_before)
        if auth_error is not None:
            await self.events.persist_federated_events(
                event.room_id, [FederatedEvent(event, state_before, rejected=True)]
            )
            return PduOutcome(event.event_id, auth_error)
        soft_failed = await self._soft_fails(event, state_before)
        current = None if soft_failed else await self._new_current_state(event, state_before)
        await self.events.persist_federated_events(
            event.room_id,
            [FederatedEvent(event, state_before, soft_failed=soft_failed)],
            current_state=current,
        )
        return PduOutcome(event.event_id, soft_failed=soft_failed)

    async def _check_against_auth_events(self, event: Event) -> str | None:
        """Step 4: the auth rules with the event's own auth events as the state."""
        auth_ids = list(event.auth_event_ids)
        create_id = _implied_create_event_id(event)
        if create_id is not None:
            auth_ids.append(create_id)
        stored = await self.events.get_events(auth_ids)
        missing = [event_id for event_id in event.auth_event_ids if event_id not in stored]
        if missing:
            return f"auth events unknown: {missing[:3]}"
        rejected = frozenset(e for e, s in stored.items() if s.rejected)
        try:
            check_auth_rules(event, [s.event for s in stored.values()], rejected)
        except AuthError as exc:
            return f"not allowed by its auth events: {exc}"
        return None

    async def _check_against_state(self, event: Event, state: StateMap) -> str | None:
        """Step 5: the auth rules against the state before the event."""
        try:
            check_state_dependent_auth_rules(event, await self._state_events(event, state))
        except AuthError as exc:
            return f"not allowed by the state before it: {exc}"
        return None

    async def _soft_fails(self, event: Event, state_before: StateMap) -> bool:
        """Step 6: is the event allowed by the room's current state?

        As Synapse does (``_check_for_soft_fail``), the "current state" is the
        resolution of the states at the forward extremities together with the
        state before the event: the room as it will be once the event joins
        it. When the event cites exactly the extremities, that is the state
        before it, which step 5 checked already.
        """
        extremities = [
            event_id for event_id, _ in await self.events.forward_extremities(event.room_id)
        ]
        if set(extremities) == set(event.prev_event_ids):
            return False
        state_sets = [state_before]
        for extremity in extremities:
            after = await self.events.state_after_event(extremity)
            if after is not None:
                state_sets.append(after)
        current = await self._resolve(event.room_version, state_sets)
        try:
            check_state_dependent_auth_rules(event, await self._state_events(event, current))
        except AuthError as exc:
            logger.info("Soft-failed %s in %s: %s", event.event_id, event.room_id, exc)
            return True
        return False

    async def _state_events(self, event: Event, state: StateMap) -> dict[StateKey, Event]:
        """The events of ``state`` that the auth rules read for ``event``."""
        keys = auth_types_for_event(event) | {("m.room.create", "")}
        wanted = {key: state[key] for key in keys if key in state}
        loaded = await self.events.get_events(wanted.values())
        return {key: loaded[eid].event for key, eid in wanted.items() if eid in loaded}

    # --- state -----------------------------------------------------------------------------

    async def _state_before(
        self, event: Event, extra_state: Mapping[str, StateMap]
    ) -> StateMap | None:
        """The resolution of the states after the event's prev events."""
        state_sets: list[StateMap] = []
        for prev_id in event.prev_event_ids:
            if prev_id in extra_state:
                state_sets.append(dict(extra_state[prev_id]))
                continue
            after = await self._state_after(prev_id)
            if after is None:
                return None
            state_sets.append(after)
        return await self._resolve(event.room_version, state_sets)

    async def _state_after(self, event_id: str) -> StateMap | None:
        stored = await self.events.get_event(event_id)
        if stored is None or stored.outlier:
            return None
        return await self.events.state_after_event(event_id)

    async def _new_current_state(self, event: Event, state_before: StateMap) -> StateMap:
        """The resolution of the states after the room's forward extremities once
        ``event`` is one of them (it replaces the extremities it cites)."""
        after = dict(state_before)
        if event.is_state():
            after[event.state_tuple] = event.event_id
        cited = set(event.prev_event_ids)
        state_sets = [after]
        for extremity, _ in await self.events.forward_extremities(event.room_id):
            if extremity in cited:
                continue
            other = await self.events.state_after_event(extremity)
            if other is not None:
                state_sets.append(other)
        return await self._resolve(event.room_version, state_sets, event)

    async def _resolve(
        self, version: RoomVersion, state_sets: list[StateMap], new_event: Event | None = None
    ) -> StateMap:
        """Resolve ``state_sets``; ``new_event`` is one they may name that is not
        stored yet (the event being received)."""
        distinct = [dict(s) for s in {tuple(sorted(s.items())): s for s in state_sets}.values()]
        if len(distinct) <= 1:
            return distinct[0] if distinct else {}
        extra = {} if new_event is None else {new_event.event_id: new_event}
        roots = {event_id for state in distinct for event_id in state.values()}
        if new_event is not None:
            roots.update(new_event.auth_event_ids)
        event_map = await self.auth_closure(roots - extra.keys())
        event_map.update(extra)
        # Resolution is CPU work (it can be large); keep the event loop free.
        return await asyncio.to_thread(resolve_state, version, distinct, event_map)

    async def auth_closure(self, event_ids: Iterable[str]) -> dict[str, Event]:
        """The given events and every event their auth chains reach that is stored."""
        found: dict[str, Event] = {}
        frontier = set(event_ids)
        while frontier:
            loaded = await self.events.get_events(frontier)
            found.update({eid: stored.event for eid, stored in loaded.items()})
            frontier = {
                auth_id
                for stored in loaded.values()
                for auth_id in stored.event.auth_event_ids
                if auth_id not in found
            }
        return found

    # --- filling gaps (no lock held) -------------------------------------------------------

    async def _fetch_missing_prev_events(self, origin: str, event: Event) -> None:
        """Server-Server API, "Retrieving events": ask the origin for the events
        between our forward extremities and this one, and process them oldest first."""
        missing = await self._unknown(event.prev_event_ids)
        if not missing:
            return
        fetched = await self._walk_back_gap(origin, event)
        for missing_event in sorted(fetched, key=lambda e: (e.depth, e.event_id)):
            if missing_event.room_id != event.room_id:
                continue
            if await self._unknown([missing_event.event_id]):
                # Its own prev events may still be missing: /state_ids fills that.
                extra = await self._state_at_unknown_prevs(origin, missing_event)
                await self._fetch_missing_auth_events(origin, [missing_event])
                async with self.hs.rooms.room_lock(event.room_id):
                    await self._check_and_persist(missing_event, extra)

    async def _walk_back_gap(self, origin: str, event: Event) -> list[Event]:
        """The events between our forward extremities and ``event``, asked of the
        origin ``MISSING_EVENTS_LIMIT`` at a time, each request walking back from
        the oldest events fetched so far whose prev events are still unknown,
        until none are, the origin has no more, or ``MAX_GAP_EVENTS``."""
        extremities = await self.events.forward_extremities(event.room_id)
        earliest = [event_id for event_id, _ in extremities]
        min_depth = min((depth for _, depth in extremities), default=0)
        fetched: dict[str, Event] = {}
        latest = [event.event_id]
        while latest and len(fetched) < MAX_GAP_EVENTS:
            try:
                pdus = await asyncio.wait_for(
                    self.remote.get_missing_events(
                        origin, event.room_id, earliest, latest, MISSING_EVENTS_LIMIT, min_depth
                    ),
                    REMOTE_CALL_TIMEOUT_S,
                )
            except Exception as exc:  # no answer: the state at the gap comes from /state_ids
                logger.info("get_missing_events from %s failed: %r", origin, exc)
                break
            new: list[Event] = []
            for pdu in pdus[:MISSING_EVENTS_LIMIT]:
                try:
                    verified = await self.verify(event.room_version, pdu)
                except PduCheckFailed as exc:
                    logger.info("Dropped a missing event from %s: %s", origin, exc)
                    continue
                if verified.room_id == event.room_id and verified.event_id not in fetched:
                    fetched[verified.event_id] = verified
                    new.append(verified)
            if not new:
                break
            latest = await self._open_ends(list(fetched.values()), fetched)
        return list(fetched.values())

    async def _open_ends(self, events: list[Event], fetched: Mapping[str, Event]) -> list[str]:
        """Those of ``events`` with a prev event neither fetched nor held: where
        the gap continues."""
        cited = {prev for e in events for prev in e.prev_event_ids if prev not in fetched}
        unknown = set(await self._unknown(cited))
        return [e.event_id for e in events if any(p in unknown for p in e.prev_event_ids)]

    async def _state_at_unknown_prevs(
        self, origin: str, event: Event, known: Mapping[str, StateMap] | None = None
    ) -> dict[str, StateMap]:
        """For each prev event we do not have with its state (nor in ``known``):
        the state after it, from the origin's /state_ids at it (the state before
        it) plus the event itself. The events named are fetched, verified and
        stored as outliers."""
        result: dict[str, StateMap] = {}
        for prev_id in event.prev_event_ids:
            if (known is not None and prev_id in known) or await self._state_after(
                prev_id
            ) is not None:
                continue
            state_ids, auth_chain_ids = await asyncio.wait_for(
                self.remote.state_ids(origin, event.room_id, prev_id), REMOTE_CALL_TIMEOUT_S
            )
            prev = await self._fetch_events(origin, event.room_version, [prev_id])
            await self._store_outliers(origin, event.room_version, [*auth_chain_ids, *state_ids])
            state_events = await self.events.get_events(state_ids)
            state: StateMap = {}
            for event_id in state_ids:
                stored = state_events.get(event_id)
                if stored is None or stored.rejected or not stored.event.is_state():
                    continue
                state[stored.event.state_tuple] = event_id
            prev_event = prev.get(prev_id)
            if prev_event is None:
                raise PduCheckFailed(f"{origin} did not give prev event {prev_id}")
            if prev_event.is_state():
                state[prev_event.state_tuple] = prev_id
            await self._store_outliers(origin, event.room_version, [prev_id], known=prev)
            result[prev_id] = state
        return result

    async def _fetch_missing_auth_events(self, origin: str, events: Sequence[Event]) -> None:
        wanted = [auth_id for event in events for auth_id in event.auth_event_ids]
        if await self._unknown(wanted) and events:
            await self._store_outliers(origin, events[0].room_version, wanted)

    async def _store_outliers(
        self,
        origin: str,
        version: RoomVersion,
        event_ids: Sequence[str],
        known: Mapping[str, Event] | None = None,
    ) -> None:
        """Fetch the unknown ones among ``event_ids`` and their unknown auth events,
        check each against its auth events (rejecting those that fail), and store
        them as outliers, auth events first."""
        fetched: dict[str, Event] = dict(known or {})
        todo = await self._unknown([eid for eid in event_ids if eid not in fetched])
        while todo:
            if len(fetched) + len(todo) > MAX_EVENTS_FETCHED:
                raise GapTooLarge(f"more than {MAX_EVENTS_FETCHED} events to fetch")
            fetched.update(await self._fetch_events(origin, version, todo))
            needed = {a for eid in todo if eid in fetched for a in fetched[eid].auth_event_ids}
            todo = [eid for eid in await self._unknown(needed) if eid not in fetched]
        ordered = auth_ordered(fetched)
        for event in ordered:
            if not await self._unknown([event.event_id]):
                continue
            error = await self._check_against_auth_events(event)
            async with self.hs.rooms.room_lock(event.room_id):
                await self.events.persist_federated_events(
                    event.room_id, [FederatedEvent(event, None, rejected=error is not None)]
                )

    async def _fetch_events(
        self, origin: str, version: RoomVersion, event_ids: Sequence[str]
    ) -> dict[str, Event]:
        semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(event_id: str) -> Event | None:
            async with semaphore:
                pdu = await asyncio.wait_for(
                    self.remote.event(origin, event_id), REMOTE_CALL_TIMEOUT_S
                )
            if pdu is None:
                return None
            event = await self.verify(version, pdu)
            if event.event_id != event_id:
                raise PduCheckFailed(f"{origin} answered {event.event_id} for {event_id}")
            return event

        results = await asyncio.gather(*(one(eid) for eid in dict.fromkeys(event_ids)))
        return {event.event_id: event for event in results if event is not None}

    async def _unknown(self, event_ids: Iterable[str]) -> list[str]:
        wanted = list(dict.fromkeys(event_ids))
        stored = await self.events.get_events(wanted)
        return [event_id for event_id in wanted if event_id not in stored]


class GapTooLarge(Exception):
    """Filling a gap would mean fetching more events than we allow."""


def _implied_create_event_id(event: Event) -> str | None:
    """Room version 12 (MSC4291): the room ID is the create event's ID, which
    is then not listed in ``auth_events`` but is always one of them."""
    if not event.room_version.room_id_from_create_event or event.type == "m.room.create":
        return None
    return "$" + event.room_id[1:]


def auth_ordered(events: Mapping[str, Event]) -> list[Event]:
    """``events`` with every event after those of its auth events that are in the set."""
    ordered: list[Event] = []
    placed: set[str] = set()

    def place(event: Event, trail: frozenset[str]) -> None:
        if event.event_id in placed or event.event_id in trail:
            return
        for auth_id in event.auth_event_ids:
            if auth_id in events:
                place(events[auth_id], trail | {event.event_id})
        placed.add(event.event_id)
        ordered.append(event)

    for event in sorted(events.values(), key=lambda e: (e.depth, e.event_id)):
        place(event, frozenset())
    return ordered


__all__ = [
    "FederationEventHandler",
    "GapTooLarge",
    "PduCheckFailed",
    "PduOutcome",
    "PduVerifier",
    "RemoteEvents",
    "StoredEvent",
    "auth_ordered",
]
