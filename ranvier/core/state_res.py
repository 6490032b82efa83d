"""State resolution: v1 (room version 1), v2 (room versions 2–11) and v2.1 (v12).

Spec: content/rooms/v1.md "State resolution"; content/rooms/fragments/v2-state-res.md;
content/rooms/v12.md "State resolution" (MSC4297). Pure: no I/O, no clock.

``resolve_state`` takes the state sets to merge and an ``event_map`` holding every
event they reach through ``auth_events``. Events missing from ``event_map`` are
skipped, as Synapse does. Nothing here knows about rejected events: every event in
``event_map`` is taken to have passed the auth rules against its own auth events
(see the test vectors' README, caveat 6).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from ranvier.core.auth_rules import (
    AuthError,
    PowerLevel,
    auth_types_for_event,
    check_state_dependent_auth_rules,
    user_power_level,
)
from ranvier.core.events import Event, StateKey
from ranvier.core.room_versions import RoomVersion, StateResAlgorithm

StateMap = dict[StateKey, str]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")

__all__ = [
    "StateMap",
    "auth_ids",
    "lexicographical_topological_sort",
    "mainline_sort",
    "resolve_state",
    "sender_power_level",
]


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    event_map: Mapping[str, Event],
) -> StateMap:
    """Resolve ``state_sets`` into one state map with the room version's algorithm.

    The result does not depend on the order of ``state_sets``; one state set
    resolves to itself.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if room_version.state_res is StateResAlgorithm.V1:
        return _resolve_v1(state_sets, event_map)
    resolver = _V2Resolver(room_version, event_map)
    return resolver.resolve(state_sets, v2_1=room_version.state_res is StateResAlgorithm.V2_1)


# --------------------------------------------------------------------------------------
# Shared helpers


def auth_ids(event: Event) -> tuple[str, ...]:
    """The IDs of ``event``'s auth events, with the v12 create event made explicit.

    v12 (MSC4291): an event's room ID *is* its create event's ID, so ``auth_events``
    never lists the create event; it is implied. State resolution treats it as
    cited (as Synapse does), so it is part of every auth chain and available
    to the auth checks.
    """
    if event.room_version.room_id_from_create_event and event.type != "m.room.create":
        create_id = "$" + event.room_id[1:]
        if create_id not in event.auth_event_ids:
            return (*event.auth_event_ids, create_id)
    return event.auth_event_ids


def sender_power_level(event: Event, event_map: Mapping[str, Event]) -> PowerLevel:
    """The power of ``event``'s sender according to the event's own auth events.

    Used by the reverse topological power ordering. ``user_power_level`` of the
    auth rules applies the power-levels schema: with no power levels among the
    auth events the room creator has 100 and everyone else 0; in v12 creators have
    unlimited power (MSC4289).
    """
    auth_state: dict[StateKey, Event] = {}
    for auth_id in auth_ids(event):
        auth_event = event_map.get(auth_id)
        if auth_event is not None and auth_event.is_state():
            auth_state[auth_event.state_tuple] = auth_event
    if event.is_state() and event.state_tuple == CREATE_KEY:
        auth_state[CREATE_KEY] = event
    return user_power_level(auth_state, event.sender)


def lexicographical_topological_sort(
    graph: Mapping[str, Collection[str]], key: Callable[[str], Any]
) -> list[str]:
    """Kahn's algorithm over ``graph`` (node -> the nodes it points at), parents first.

    A node comes out once every node it points at (its auth events) is out; among
    the nodes ready at each step the one with the smallest ``key`` goes first. Edges
    to nodes outside ``graph`` are ignored. Nodes on a cycle (impossible for valid
    events) never become ready and are left out, as in Synapse.
    """
    outdegree: dict[str, int] = {}
    children: dict[str, list[str]] = {node: [] for node in graph}
    ready: list[tuple[Any, str]] = []
    for node, edges in graph.items():
        targets = {edge for edge in edges if edge in children}
        outdegree[node] = len(targets)
        for target in targets:
            children[target].append(node)
        if not targets:
            ready.append((key(node), node))
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for child in children[node]:
            outdegree[child] -= 1
            if outdegree[child] == 0:
                heapq.heappush(ready, (key(child), child))
    return ordered


def _power_levels_parent(event: Event, event_map: Mapping[str, Event]) -> str | None:
    """The ``m.room.power_levels`` event among ``event``'s auth events, if any."""
    for auth_id in event.auth_event_ids:
        auth_event = event_map.get(auth_id)
        if (
            auth_event is not None
            and auth_event.is_state()
            and auth_event.state_tuple == POWER_LEVELS_KEY
        ):
            return auth_id
    return None


def mainline_sort(
    event_ids: Iterable[str], power_levels_id: str | None, event_map: Mapping[str, Event]
) -> list[str]:
    """Order ``event_ids`` by the mainline ordering based on ``power_levels_id``.

    An event's mainline position is the index in the mainline of the first
    power-levels event found by walking up from the event's own auth events (the
    event itself never counts), or infinity when the walk never meets the
    mainline. Greater positions come first, then ``origin_server_ts``, then the
    event ID.
    """
    mainline: dict[str, int] = {}
    current = power_levels_id
    while current is not None and current not in mainline and current in event_map:
        mainline[current] = len(mainline)
        current = _power_levels_parent(event_map[current], event_map)

    # position_of[pl_id]: the position an event gets when the first PL event of
    # its walk is pl_id. Memoised so each PL event is walked once.
    position_of: dict[str, float] = {}

    def position_from(pl_id: str | None) -> float:
        path: list[str] = []
        result = math.inf
        while pl_id is not None:
            if pl_id in mainline:
                result = mainline[pl_id]
                break
            if pl_id in position_of:
                result = position_of[pl_id]
                break
            if pl_id in path or pl_id not in event_map:
                break
            path.append(pl_id)
            pl_id = _power_levels_parent(event_map[pl_id], event_map)
        for visited in path:
            position_of[visited] = result
        return result

    def order(event_id: str) -> tuple[float, int, str]:
        event = event_map[event_id]
        position = position_from(_power_levels_parent(event, event_map))
        return (-position, event.origin_server_ts, event_id)

    return sorted(event_ids, key=order)


# --------------------------------------------------------------------------------------
# State resolution v1 (room version 1)


def _sha1_hex(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _resolve_v1(
    state_sets: Sequence[Mapping[StateKey, str]], event_map: Mapping[str, Event]
) -> StateMap:
    """Spec content/rooms/v1.md "State resolution".

    A conflict is two state sets holding different events for one key; a key that
    only some state sets have is not a conflict (unlike v2).
    """
    values: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for state_key, event_id in state_set.items():
            values.setdefault(state_key, set()).add(event_id)
    resolved: StateMap = {}
    conflicted: dict[StateKey, list[Event]] = {}
    for state_key, event_ids in values.items():
        if len(event_ids) == 1:
            resolved[state_key] = next(iter(event_ids))
            continue
        events = [event_map[event_id] for event_id in event_ids if event_id in event_map]
        if len(events) == 1:
            resolved[state_key] = events[0].event_id
        elif events:
            conflicted[state_key] = events

    # R, the state the conflicted events are checked against.
    room_state: dict[StateKey, Event] = {
        state_key: event_map[event_id]
        for state_key, event_id in resolved.items()
        if event_id in event_map
    }

    # Power levels, then join rules, then memberships. Within a stage every key is
    # checked against R as it stood at the start of the stage, so the order in which
    # keys are taken does not matter (the spec leaves it open; Synapse does this).
    stages: list[Callable[[StateKey], bool]] = [
        lambda state_key: state_key == POWER_LEVELS_KEY,
        lambda state_key: state_key[0] == "m.room.join_rules",
        lambda state_key: state_key[0] == "m.room.member",
    ]
    done: set[StateKey] = set()
    for in_stage in stages:
        stage_result: dict[StateKey, Event] = {}
        for state_key in sorted(conflicted):
            if state_key in done or not in_stage(state_key):
                continue
            stage_result[state_key] = _v1_resolve_auth_conflict(conflicted[state_key], room_state)
            done.add(state_key)
        room_state.update(stage_result)

    # "No other events affect the authorisation rules": pick the event with the
    # highest depth and lowest sha1(event_id) that passes auth in R.
    for state_key in sorted(conflicted):
        if state_key in done:
            continue
        ordered = sorted(
            conflicted[state_key], key=lambda event: (-event.depth, _sha1_hex(event.event_id))
        )
        chosen = next((event for event in ordered if _allowed(event, room_state)), None)
        if chosen is None:
            # The spec is silent when none passes; Synapse keeps the last one (the
            # lowest depth, highest sha1).
            chosen = ordered[-1]
        room_state[state_key] = chosen

    for state_key in conflicted:
        resolved[state_key] = room_state[state_key].event_id
    return resolved


def _v1_resolve_auth_conflict(events: list[Event], room_state: Mapping[StateKey, Event]) -> Event:
    """Sort by ascending depth then descending sha1(event_id); take the first, then
    each next one while it passes auth against R updated with the one before."""
    ordered = sorted(events, key=lambda event: (-event.depth, _sha1_hex(event.event_id)))
    ordered.reverse()
    state = dict(room_state)
    chosen = ordered[0]
    for event in ordered[1:]:
        state[chosen.state_tuple] = chosen
        if not _allowed(event, state):
            return chosen
        chosen = event
    return chosen


def _allowed(event: Event, state: Mapping[StateKey, Event]) -> bool:
    try:
        check_state_dependent_auth_rules(event, state)
    except AuthError:
        return False
    return True


# --------------------------------------------------------------------------------------
# State resolution v2 and v2.1


#: The state entries whose events are power events whoever sent them.
_POWER_EVENT_KEYS = frozenset({POWER_LEVELS_KEY, ("m.room.join_rules", ""), CREATE_KEY})


def _is_power_event(event: Event) -> bool:
    """Power events: the room's ``m.room.power_levels`` and ``m.room.join_rules``,
    and memberships of ``leave`` or ``ban`` sent by someone else (kicks and bans).

    The spec ("a state event with type ``m.room.power_levels`` or
    ``m.room.join_rules``") counts the two types whatever their state key. Every
    deployed implementation (Synapse's ``_is_power_event``, ruma, conduwuit)
    counts them only with the empty state key, the one the auth rules read; a
    ``m.room.power_levels`` with another state key is an ordinary state event
    to them, sorted in mainline order. Sorting it differently resolves some
    rooms differently, so we match them.

    They also count the create event, which the spec's definition leaves out. A
    create event only reaches the full conflicted set in a broken room; sorting
    it with the power events (first, as everything cites it) changes nothing else.
    """
    if not event.is_state():
        return False
    if event.state_tuple in _POWER_EVENT_KEYS:
        return True
    if event.type == "m.room.member" and event.membership in ("leave", "ban"):
        return event.sender != event.state_key
    return False


class _V2Resolver:
    """One v2 / v2.1 resolution; caches auth chains for the duration of the call."""

    def __init__(self, room_version: RoomVersion, event_map: Mapping[str, Event]) -> None:
        self.room_version = room_version
        self.event_map = event_map
        self._chains: dict[str, frozenset[str]] = {}

    # -- auth chains ------------------------------------------------------------------

    def _parents(self, event_id: str) -> tuple[str, ...]:
        event = self.event_map.get(event_id)
        if event is None:
            return ()
        return tuple(parent for parent in auth_ids(event) if parent in self.event_map)

    def auth_chain(self, event_id: str) -> frozenset[str]:
        """Every event reachable from ``event_id`` through auth events, not itself.

        Iterative post-order walk; each event's chain is computed once per call.
        """
        chains = self._chains
        if event_id in chains:
            return chains[event_id]
        stack: list[tuple[str, bool]] = [(event_id, False)]
        on_path: set[str] = set()
        while stack:
            current, expanded = stack.pop()
            if current in chains:
                continue
            parents = self._parents(current)
            if not expanded:
                on_path.add(current)
                stack.append((current, True))
                for parent in parents:
                    # A parent on the current path is an auth cycle: skip that edge.
                    if parent not in chains and parent not in on_path:
                        stack.append((parent, False))
                continue
            chain: set[str] = set()
            for parent in parents:
                chain.add(parent)
                parent_chain = chains.get(parent)
                if parent_chain is not None:
                    chain.update(parent_chain)
            chains[current] = frozenset(chain)
            on_path.discard(current)
        return chains[event_id]

    def state_set_auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """The auth chain of a state set for the auth difference: the state set's
        own events plus the auth chains of each.

        The spec ("Auth difference") takes the union of the events' auth chains,
        and an event's auth chain leaves the event itself out (test-vector README
        caveat 5). Synapse's ``get_auth_chain_difference`` starts its walk from the
        state sets' events and counts each as reachable from its own set (ruma's
        test harness builds its state-set chains the same way). The readings
        differ when an unconflicted event is in the auth chain of some state
        sets' events but not of others': by the spec's letter it is in the auth
        difference, replayed, and kept as a link in the auth DAG of the reverse
        topological power ordering; for Synapse it is in every set's chain, so
        not. We match Synapse: a room must resolve the same on every server.
        """
        full: set[str] = set()
        for event_id in event_ids:
            full.add(event_id)
            full.update(self.auth_chain(event_id))  # empty for an event we lack
        return full

    # -- the algorithm ----------------------------------------------------------------

    def resolve(self, state_sets: Sequence[Mapping[StateKey, str]], *, v2_1: bool) -> StateMap:
        unconflicted, conflicted_ids = _separate_v2(state_sets)
        if not conflicted_ids:
            return unconflicted

        chains = [self.state_set_auth_chain(state_set.values()) for state_set in state_sets]
        auth_difference = set[str]().union(*chains) - chains[0].intersection(*chains[1:])
        full_conflicted = conflicted_ids | auth_difference
        if v2_1:
            full_conflicted |= self.conflicted_subgraph(conflicted_ids)
        full_conflicted = {event_id for event_id in full_conflicted if event_id in self.event_map}

        # 1. The power events and their auth chains within the full conflicted set,
        #    in reverse topological power order.
        power_events = self.reverse_topological_power_sort(
            [eid for eid in full_conflicted if _is_power_event(self.event_map[eid])],
            full_conflicted,
        )
        # 2. Iterative auth checks from the unconflicted state; v2.1 starts from an
        #    empty state instead (MSC4297).
        base: StateMap = {} if v2_1 else dict(unconflicted)
        partial = self.iterative_auth_checks(power_events, base)
        # 3. The rest, in mainline order of the partially resolved power levels.
        taken = set(power_events)
        others = mainline_sort(
            (eid for eid in full_conflicted if eid not in taken),
            partial.get(POWER_LEVELS_KEY),
            self.event_map,
        )
        # 4. Iterative auth checks on the partially resolved state.
        resolved = self.iterative_auth_checks(others, partial)
        # 5. The unconflicted state wins over anything resolved.
        resolved.update(unconflicted)
        return resolved

    def conflicted_subgraph(self, conflicted_ids: set[str]) -> set[str]:
        """v2.1 (MSC4297): every event on an auth-event path between two events of
        the conflicted state set, endpoints included."""
        conflicted = {eid for eid in conflicted_ids if eid in self.event_map}
        # Candidates: the conflicted events' auth chains. One is on a path when a
        # conflicted event is in its own auth chain.
        candidates: set[str] = set()
        for event_id in conflicted:
            candidates.update(self.auth_chain(event_id))
        subgraph = set(conflicted)
        for candidate in candidates - conflicted:
            if not conflicted.isdisjoint(self.auth_chain(candidate)):
                subgraph.add(candidate)
        return subgraph

    def reverse_topological_power_sort(
        self, power_event_ids: Iterable[str], full_conflicted: set[str]
    ) -> list[str]:
        """Step 1: the power events plus the events of their auth chains that are in
        the full conflicted set, sorted by Kahn's algorithm over their auth events:
        the sender with more power, then the earlier ``origin_server_ts``, then the
        smaller event ID first.
        """
        selected = self._power_events_with_conflicted_auth(power_event_ids, full_conflicted)
        graph = {
            event_id: [parent for parent in self._parents(event_id) if parent in selected]
            for event_id in selected
        }
        power = {eid: sender_power_level(self.event_map[eid], self.event_map) for eid in graph}

        def order(event_id: str) -> tuple[PowerLevel, int, str]:
            return (-power[event_id], self.event_map[event_id].origin_server_ts, event_id)

        return lexicographical_topological_sort(graph, order)

    def _power_events_with_conflicted_auth(
        self, power_event_ids: Iterable[str], full_conflicted: set[str]
    ) -> set[str]:
        """The power events and the events reached from them through auth events
        without leaving the full conflicted set.

        The spec's step 1 adds "the events in the auth chain of P which also
        belong to the full conflicted set", which would take an auth-chain event
        in the full conflicted set even when every path to it passes through
        an event outside the set. Synapse (``_add_event_and_auth_chain_to_graph``),
        ruma and conduwuit follow auth events only while they stay in the full
        conflicted set; an event reached only through an unconflicted event is
        not sorted with the power events but later, in mainline order. We match
        them, so the room resolves the same everywhere.
        """
        selected: set[str] = set()
        stack = list(power_event_ids)
        while stack:
            event_id = stack.pop()
            if event_id in selected:
                continue
            selected.add(event_id)
            stack.extend(
                parent
                for parent in self._parents(event_id)
                if parent in full_conflicted and parent not in selected
            )
        return selected

    def iterative_auth_checks(self, event_ids: Iterable[str], base: StateMap) -> StateMap:
        """Apply each event that the auth rules allow, in order, to ``base``.

        Each event is checked against its own auth events, with the entries the auth
        rules look at (``auth_types_for_event``) replaced by the state resolved so
        far where it has them.
        """
        state = dict(base)
        for event_id in event_ids:
            event = self.event_map[event_id]
            auth_state: dict[StateKey, Event] = {}
            for auth_id in auth_ids(event):
                auth_event = self.event_map.get(auth_id)
                if auth_event is not None and auth_event.is_state():
                    auth_state[auth_event.state_tuple] = auth_event
            for state_key in auth_types_for_event(event):
                current = state.get(state_key)
                if current is not None and current in self.event_map:
                    auth_state[state_key] = self.event_map[current]
            if _allowed(event, auth_state):
                state[event.state_tuple] = event_id
        return state


def _separate_v2(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[StateMap, set[str]]:
    """The unconflicted state map and the conflicted state set.

    A key is unconflicted when every state set has it with the same event; a key
    missing from some state set is conflicted.
    """
    unconflicted: StateMap = {}
    conflicted: set[str] = set()
    all_keys: set[StateKey] = set()
    for state_set in state_sets:
        all_keys.update(state_set)
    for state_key in all_keys:
        values = {state_set.get(state_key) for state_set in state_sets}
        if len(values) == 1:
            value = values.pop()
            if value is not None:
                unconflicted[state_key] = value
        else:
            conflicted.update(value for value in values if value is not None)
    return unconflicted, conflicted
