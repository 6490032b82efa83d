"""State resolution: the spec's behaviours on small hand-built rooms, the sorting
helpers, and properties (order independence, one state set resolves to itself)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ranvier.core.events import Event, StateKey, hash_and_sign_event
from ranvier.core.room_versions import RoomVersion, get_room_version
from ranvier.core.signing import SigningKey
from ranvier.core.state_res import (
    _resolve_v1,
    _separate_v2,
    _V2Resolver,
    auth_ids,
    lexicographical_topological_sort,
    mainline_sort,
    resolve_state,
    sender_power_level,
)
from tests.core.test_state_res_vectors import CASES, load_case

V1 = get_room_version("1")
V10 = get_room_version("10")
V12 = get_room_version("12")

ALICE = "@alice:a.test"  # creator, 100 (v12: creator, unlimited)
BOB = "@bob:b.test"  # moderator, 50
CAROL = "@carol:c.test"  # 0
PEGGY = "@peggy:a.test"  # moderator, 50
KEYS = {server: SigningKey("1", bytes([n]) * 32) for n, server in enumerate("abcz", 1)}

PL_KEY: StateKey = ("m.room.power_levels", "")
JR_KEY: StateKey = ("m.room.join_rules", "")
TOPIC_KEY: StateKey = ("m.room.topic", "")


def member_key(user: str) -> StateKey:
    return ("m.room.member", user)


class Branch:
    """One line of history: its head events and the state after them."""

    def __init__(self, room: Room, state: dict[StateKey, Event], heads: list[Event]) -> None:
        self.room = room
        self.state = state
        self.heads = heads

    def fork(self) -> Branch:
        return Branch(self.room, dict(self.state), list(self.heads))

    def state_ids(self) -> dict[StateKey, str]:
        return {key: event.event_id for key, event in self.state.items()}

    def send(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None = "",
        *,
        ts: int | None = None,
        extra_auth: Sequence[Event] = (),
    ) -> Event:
        event = self.room.build(self, event_type, sender, content, state_key, ts, extra_auth)
        self.heads = [event]
        if event.is_state():
            self.state[event.state_tuple] = event
        return event

    def member(self, user: str, membership: str, sender: str | None = None, **kw: Any) -> Event:
        return self.send("m.room.member", sender or user, {"membership": membership}, user, **kw)


class Room:
    """Builds valid, signed events for one room; ``create`` returns the first branch."""

    def __init__(self, version: RoomVersion) -> None:
        self.version = version
        self.events: dict[str, Event] = {}
        self.room_id = "!room:a.test"
        self.clock = 1_000
        self.counter = 0

    def auth_for(
        self,
        branch: Branch,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        state_key: str | None,
    ) -> list[Event]:
        # Server-Server API "Auth events selection".
        keys: list[StateKey] = [PL_KEY, member_key(sender)]
        if not self.version.room_id_from_create_event:
            keys.insert(0, ("m.room.create", ""))
        if event_type == "m.room.member" and state_key is not None:
            keys.append(member_key(state_key))
            if content.get("membership") in ("join", "invite", "knock"):
                keys.append(JR_KEY)
        chosen: dict[str, Event] = {}
        for key in keys:
            if key in branch.state:
                chosen[branch.state[key].event_id] = branch.state[key]
        return list(chosen.values())

    def build(
        self,
        branch: Branch | None,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str | None,
        ts: int | None,
        extra_auth: Sequence[Event],
    ) -> Event:
        self.clock += 1_000
        self.counter += 1
        heads = branch.heads if branch else []
        auth = self.auth_for(branch, event_type, sender, content, state_key) if branch else []
        auth += [event for event in extra_auth if event not in auth]
        pdu: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "origin_server_ts": self.clock if ts is None else ts,
            "depth": max((head.depth for head in heads), default=0) + 1,
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if not (self.version.room_id_from_create_event and event_type == "m.room.create"):
            pdu["room_id"] = self.room_id
        server = sender.split(":", 1)[1]
        if self.version.event_ids_in_pdu:
            pdu["event_id"] = f"${self.counter}:{server}"
            pdu["prev_events"] = [[head.event_id, {"sha256": "x"}] for head in heads]
            pdu["auth_events"] = [[event.event_id, {"sha256": "x"}] for event in auth]
        else:
            pdu["prev_events"] = [head.event_id for head in heads]
            pdu["auth_events"] = [event.event_id for event in auth]
        signed = hash_and_sign_event(self.version, pdu, server, KEYS[server[0]])
        event = Event.from_pdu(self.version, signed)
        self.events[event.event_id] = event
        if event_type == "m.room.create" and self.version.room_id_from_create_event:
            self.room_id = event.room_id
        return event

    def create(
        self, *, join_rule: str = "public", users: Mapping[str, int] | None = None
    ) -> Branch:
        content: dict[str, Any] = {"room_version": self.version.identifier}
        if not self.version.implicit_room_creator:
            content["creator"] = ALICE
        create = self.build(None, "m.room.create", ALICE, content, "", None, ())
        branch = Branch(self, {("m.room.create", ""): create}, [create])
        branch.member(ALICE, "join")
        levels = dict(users if users is not None else {BOB: 50, PEGGY: 50})
        if not self.version.creators_have_infinite_power:
            levels.setdefault(ALICE, 100)
        branch.send("m.room.power_levels", ALICE, {"users": levels})
        branch.send("m.room.join_rules", ALICE, {"join_rule": join_rule})
        for user in (BOB, CAROL, PEGGY):
            branch.member(user, "join")
        return branch

    def resolve(self, *branches: Branch) -> dict[StateKey, str]:
        return resolve_state(self.version, [b.state_ids() for b in branches], self.events)


# ------------------------------------------------------------------------------------
# Basics


@pytest.mark.parametrize("version", [V1, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_no_state_sets_and_one_state_set(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    assert resolve_state(version, [], room.events) == {}
    assert room.resolve(main) == main.state_ids()
    # Identical state sets have nothing conflicted.
    assert room.resolve(main, main.fork()) == main.state_ids()


@pytest.mark.parametrize("version", [V1, V10, V12], ids=lambda v: f"v{v.identifier}")
def test_topic_conflict_later_timestamp_wins_and_unconflicted_state_kept(
    version: RoomVersion,
) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    right.send("m.room.topic", PEGGY, {"topic": "right"})
    later = left.send("m.room.topic", BOB, {"topic": "left"})
    left.send("m.room.name", BOB, {"name": "only left"})
    resolved = room.resolve(left, right)
    if version is V1:
        # v1: the same depth, so the lowest sha1(event_id) wins.
        candidates = [left.state[TOPIC_KEY].event_id, right.state[TOPIC_KEY].event_id]
        assert resolved[TOPIC_KEY] == min(
            candidates, key=lambda eid: hashlib.sha1(eid.encode()).hexdigest()
        )
    else:
        assert resolved[TOPIC_KEY] == later.event_id
    assert resolved[("m.room.name", "")] == left.state[("m.room.name", "")].event_id
    assert resolved[PL_KEY] == main.state[PL_KEY].event_id


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_equal_timestamps_fall_back_to_event_id(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    one = left.send("m.room.topic", BOB, {"topic": "one"}, ts=50_000)
    two = right.send("m.room.topic", PEGGY, {"topic": "two"}, ts=50_000)
    # Mainline order sorts ascending; the last one applied (larger ID) wins.
    assert room.resolve(left, right)[TOPIC_KEY] == max(one.event_id, two.event_id)


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_ban_beats_state_event_of_banned_user(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    old_topic = main.send("m.room.topic", ALICE, {"topic": "old"})
    left, right = main.fork(), main.fork()
    # Bob's topic is later than the ban, but the ban is a power event, applied first.
    ban = left.member(BOB, "ban", sender=ALICE)
    right.send("m.room.topic", BOB, {"topic": "bob was here"})
    resolved = room.resolve(left, right)
    assert resolved[member_key(BOB)] == ban.event_id
    assert resolved[TOPIC_KEY] == old_topic.event_id
    assert room.resolve(right, left) == resolved


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_join_rules_applied_before_join_whatever_the_timestamps(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    invite_only = left.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, ts=90_000)
    right.member("@dave:a.test", "join", ts=95_000)
    resolved = room.resolve(left, right)
    assert resolved[JR_KEY] == invite_only.event_id
    assert member_key("@dave:a.test") not in resolved


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_competing_power_levels_more_powerful_sender_first(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    # Alice demotes Bob; Bob, concurrently and later, promotes Carol.
    demote = left.send(
        "m.room.power_levels",
        ALICE,
        {"users": {BOB: 0, PEGGY: 50} | ({} if version is V12 else {ALICE: 100})},
    )
    right.send(
        "m.room.power_levels",
        BOB,
        {"users": {BOB: 50, PEGGY: 50, CAROL: 50} | ({} if version is V12 else {ALICE: 100})},
    )
    resolved = room.resolve(left, right)
    # Alice's goes first (more power); Bob's is then checked with Bob at 0 and fails.
    assert resolved[PL_KEY] == demote.event_id


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_mainline_position_beats_timestamp(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    # Right: a topic authorised by the current power levels, sent much later.
    late_topic = right.send("m.room.topic", BOB, {"topic": "late"}, ts=900_000)
    # Left: new power levels, then a topic that cites them (earlier timestamp).
    left.send("m.room.power_levels", ALICE, dict(main.state[PL_KEY].content))
    early_topic = left.send("m.room.topic", PEGGY, {"topic": "early"}, ts=500_000)
    resolved = room.resolve(left, right)
    # The late topic's PL is deeper in the mainline, so it sorts first; the early
    # topic, based on the newer PL, is applied last and wins.
    assert resolved[TOPIC_KEY] == early_topic.event_id
    assert late_topic.origin_server_ts > early_topic.origin_server_ts


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_kick_vs_promotion(version: RoomVersion) -> None:
    room = Room(version)
    main = room.create()
    left, right = main.fork(), main.fork()
    kick = left.member(CAROL, "leave", sender=BOB)
    right.send(
        "m.room.power_levels",
        ALICE,
        {"users": {BOB: 50, PEGGY: 50, CAROL: 60} | ({} if version is V12 else {ALICE: 100})},
    )
    resolved = room.resolve(left, right)
    # Alice's promotion sorts before Bob's kick (power); Carol at 60 can't be
    # kicked by Bob at 50.
    assert resolved[member_key(CAROL)] == main.state[member_key(CAROL)].event_id
    assert resolved[member_key(CAROL)] != kick.event_id


def test_v12_creator_has_infinite_power_over_moderator() -> None:
    room = Room(V12)
    main = room.create()
    left, right = main.fork(), main.fork()
    # Bob (50) changes power levels earlier; Alice (creator) later.
    right.send("m.room.power_levels", BOB, {"users": {BOB: 50, PEGGY: 0}}, ts=10)
    alice_pl = left.send("m.room.power_levels", ALICE, {"users": {BOB: 0, PEGGY: 50}}, ts=20)
    assert sender_power_level(alice_pl, room.events) == math.inf
    resolved = room.resolve(left, right)
    # Alice first; Bob's, checked with Bob at 0, fails.
    assert resolved[PL_KEY] == alice_pl.event_id


def test_v12_additional_creator_power() -> None:
    room = Room(V12)
    create = room.build(
        None,
        "m.room.create",
        ALICE,
        {"room_version": "12", "additional_creators": [BOB, 7]},
        "",
        None,
        (),
    )
    branch = Branch(room, {("m.room.create", ""): create}, [create])
    join = branch.member(ALICE, "join")
    topic = branch.send("m.room.topic", BOB, {"topic": "t"})
    carol = branch.send("m.room.topic", CAROL, {"topic": "t"})
    assert sender_power_level(topic, room.events) == math.inf
    assert sender_power_level(join, room.events) == math.inf
    assert sender_power_level(carol, room.events) == 0
    assert sender_power_level(create, room.events) == math.inf
    # The create event is implied in v12 auth events.
    assert create.event_id in auth_ids(topic)
    assert auth_ids(create) == ()


# ------------------------------------------------------------------------------------
# v1


def test_v1_power_levels_ascending_depth_each_checked_against_the_previous() -> None:
    room = Room(V1)
    main = room.create()
    left, right = main.fork(), main.fork()
    # Left, deeper: Alice demotes Bob twice over two events.
    left.send("m.room.topic", ALICE, {"topic": "padding"})
    demote = left.send("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 0}})
    promote = right.send("m.room.power_levels", BOB, {"users": {ALICE: 100, BOB: 50, CAROL: 50}})
    assert promote.depth < demote.depth
    # Bob's (shallower) goes in first, then Alice's is allowed on top of it.
    assert room.resolve(left, right)[PL_KEY] == demote.event_id


def test_v1_stops_at_first_power_levels_not_allowed() -> None:
    room = Room(V1)
    main = room.create()
    left, right = main.fork(), main.fork()
    demote = right.send("m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 0}})
    left.send("m.room.topic", ALICE, {"topic": "padding"})
    bobs = left.send("m.room.power_levels", BOB, {"users": {ALICE: 100, BOB: 50, CAROL: 50}})
    assert demote.depth < bobs.depth
    # Alice's is first; Bob's is then not allowed (Bob has 0), so Alice's stays.
    assert room.resolve(left, right)[PL_KEY] == demote.event_id


def test_v1_membership_and_other_conflicts() -> None:
    room = Room(V1)
    main = room.create()
    left, right = main.fork(), main.fork()
    leave = left.member(CAROL, "leave")
    left.send("m.room.topic", ALICE, {"topic": "deeper"})
    deep_topic = left.send("m.room.topic", ALICE, {"topic": "deepest"})
    right.send("m.room.topic", CAROL, {"topic": "carol"})
    resolved = room.resolve(left, right)
    assert resolved[member_key(CAROL)] == leave.event_id
    assert resolved[TOPIC_KEY] == deep_topic.event_id


def test_v1_none_allowed_keeps_the_shallowest() -> None:
    room = Room(V1)
    main = room.create()
    left, right = main.fork(), main.fork()
    # Both topics are by Carol, who is then banned in both branches' merged state.
    shallow = left.send("m.room.topic", CAROL, {"topic": "a"})
    right.send("m.room.topic", ALICE, {"topic": "padding"})
    deep = right.send("m.room.topic", CAROL, {"topic": "b"})
    ban = left.member(CAROL, "ban", sender=ALICE)
    right.state[member_key(CAROL)] = ban  # both sides agree Carol is banned
    resolved = room.resolve(left, right)
    assert shallow.depth < deep.depth
    assert resolved[TOPIC_KEY] == shallow.event_id


def test_v1_key_missing_from_one_state_set_is_not_a_conflict() -> None:
    room = Room(V1)
    main = room.create()
    left, right = main.fork(), main.fork()
    name = left.send("m.room.name", ALICE, {"name": "n"})
    assert room.resolve(left, right)[("m.room.name", "")] == name.event_id


def test_v1_conflicted_events_missing_from_event_map() -> None:
    room = Room(V1)
    main = room.create()
    base = main.state_ids()
    one = {**base, TOPIC_KEY: "$missing1"}
    two = {**base, TOPIC_KEY: "$missing2"}
    assert TOPIC_KEY not in _resolve_v1([one, two], room.events)
    left = main.fork()
    topic = left.send("m.room.topic", ALICE, {"topic": "t"})
    assert _resolve_v1([left.state_ids(), two], room.events)[TOPIC_KEY] == topic.event_id


# ------------------------------------------------------------------------------------
# v2 internals


def test_separate_v2_missing_key_is_conflicted() -> None:
    unconflicted, conflicted = _separate_v2([{("a", ""): "$1", ("b", ""): "$2"}, {("a", ""): "$1"}])
    assert unconflicted == {("a", ""): "$1"}
    assert conflicted == {"$2"}


def test_conflicted_subgraph_is_paths_between_conflicted_events() -> None:
    room = Room(V10)
    main = room.create()
    c_low = main.member("@dave:a.test", "join")
    middle = main.member("@dave:a.test", "leave", sender=BOB, extra_auth=[c_low])
    c_high = main.member("@dave:a.test", "join", extra_auth=[middle])
    resolver = _V2Resolver(V10, room.events)
    subgraph = resolver.conflicted_subgraph({c_low.event_id, c_high.event_id, "$unknown"})
    assert subgraph == {c_low.event_id, middle.event_id, c_high.event_id}
    # Events below the lowest conflicted event are not on a path.
    assert main.state[PL_KEY].event_id not in subgraph


def test_auth_chain_is_iterative_memoised_and_skips_missing() -> None:
    version = get_room_version("2")
    events: dict[str, Event] = {}
    previous: str | None = None
    for n in range(5_000):  # far beyond Python's recursion limit
        pdu: dict[str, Any] = {
            "event_id": f"${n}:a.test",
            "type": "m.room.topic",
            "state_key": "",
            "sender": ALICE,
            "room_id": "!r:a.test",
            "content": {},
            "prev_events": [],
            "auth_events": [[previous, {}]] if previous else [["$gone:a.test", {}]],
            "origin_server_ts": n,
            "depth": n,
        }
        events[pdu["event_id"]] = Event.from_pdu(version, pdu)
        previous = pdu["event_id"]
    resolver = _V2Resolver(version, events)
    chain = resolver.auth_chain("$4999:a.test")
    assert len(chain) == 4_999 and "$gone:a.test" not in chain
    assert resolver.auth_chain("$4000:a.test") == frozenset(f"${n}:a.test" for n in range(4_000))


def test_auth_cycle_does_not_hang() -> None:
    version = get_room_version("2")

    def pdu(event_id: str, auth: str) -> Event:
        return Event.from_pdu(
            version,
            {
                "event_id": event_id,
                "type": "m.room.power_levels",
                "state_key": "",
                "sender": ALICE,
                "room_id": "!r:a.test",
                "content": {},
                "prev_events": [],
                "auth_events": [[auth, {}]],
                "origin_server_ts": 1,
                "depth": 1,
            },
        )

    events = {"$x": pdu("$x", "$y"), "$y": pdu("$y", "$x")}
    resolver = _V2Resolver(version, events)
    assert "$y" in resolver.auth_chain("$x")
    assert resolver.reverse_topological_power_sort(["$x", "$y"], {"$x", "$y"}) == []


def test_v2_conflicted_events_missing_from_event_map_are_skipped() -> None:
    room = Room(V10)
    main = room.create()
    left = main.fork()
    topic = left.send("m.room.topic", ALICE, {"topic": "t"})
    right = {**main.state_ids(), TOPIC_KEY: "$missing"}
    assert resolve_state(V10, [left.state_ids(), right], room.events)[TOPIC_KEY] == topic.event_id


def test_v2_1_differs_from_v2_on_a_vector_dag() -> None:
    """MSC4297 changes the outcome on some forks of the v12 random DAGs."""
    case = next(c for c in CASES if c["id"] == "state_res/v12/random-seed11-n51")
    version, _, event_map = load_case(case)
    after = _states_after_every_event(case["id"])
    differs = 0
    ids = list(after)
    for first, second in zip(ids, ids[1:] + ids[:1], strict=True):
        sets = [after[first], after[second]]
        v2_1 = resolve_state(version, sets, event_map)
        v2 = _V2Resolver(version, event_map).resolve(sets, v2_1=False)
        differs += v2_1 != v2
    assert differs > 0


# ------------------------------------------------------------------------------------
# Sorting helpers


def test_lexicographical_topological_sort_parents_first_smallest_key_first() -> None:
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["outside"]}
    assert lexicographical_topological_sort(graph, key=lambda n: n) == ["a", "b", "c", "d", "e"]
    rank = {"a": 0, "b": 2, "c": 1, "d": 0, "e": 9}
    assert lexicographical_topological_sort(graph, key=rank.__getitem__) == [
        "a",
        "c",
        "b",
        "d",
        "e",
    ]
    assert lexicographical_topological_sort({"x": ["y"], "y": ["x"], "z": []}, key=str) == ["z"]
    assert lexicographical_topological_sort({}, key=str) == []


def test_mainline_sort() -> None:
    room = Room(V10)
    main = room.create()
    pl1 = main.state[PL_KEY]
    before = main.send("m.room.topic", BOB, {"topic": "under pl1"}, ts=5_000_000)
    pl2 = main.send("m.room.power_levels", ALICE, dict(pl1.content))
    after_a = main.send("m.room.topic", BOB, {"topic": "under pl2"}, ts=10)
    after_b = main.send("m.room.name", BOB, {"name": "under pl2"}, ts=10)
    side = main.fork()
    side.state.pop(PL_KEY)
    no_pl = side.send("m.room.name", ALICE, {"name": "no pl"}, ts=99_999_999)
    order = mainline_sort(
        [after_b.event_id, after_a.event_id, before.event_id, no_pl.event_id],
        pl2.event_id,
        room.events,
    )
    # Position infinity first, then pl1 (position 1), then pl2 (0) by ts and ID.
    assert order == [no_pl.event_id, before.event_id, *sorted([after_a.event_id, after_b.event_id])]
    # Without power levels every event has position infinity: timestamp order.
    assert mainline_sort([after_a.event_id, before.event_id], None, room.events) == [
        after_a.event_id,
        before.event_id,
    ]
    # A PL event that is not in the mainline counts through its own parent.
    fork = main.fork()
    fork.state[PL_KEY] = pl1
    pl_side = fork.send("m.room.power_levels", ALICE, dict(pl1.content))
    under_side = fork.send("m.room.topic", BOB, {"topic": "side"}, ts=1)
    under_side2 = fork.send("m.room.name", BOB, {"name": "side"}, ts=2)
    order = mainline_sort(
        [after_a.event_id, under_side2.event_id, under_side.event_id], pl2.event_id, room.events
    )
    assert pl_side.event_id not in order
    assert order == [under_side.event_id, under_side2.event_id, after_a.event_id]


def test_power_level_of_sender_without_power_levels_and_odd_values() -> None:
    for version in (V1, V10, get_room_version("11")):
        room = Room(version)
        create = room.build(
            None,
            "m.room.create",
            ALICE,
            {"creator": ALICE, "room_version": version.identifier},
            "",
            None,
            (),
        )
        branch = Branch(room, {("m.room.create", ""): create}, [create])
        join = branch.member(ALICE, "join")
        other = branch.member(BOB, "join")
        assert sender_power_level(join, room.events) == 100
        assert sender_power_level(other, room.events) == 0
        assert sender_power_level(create, room.events) == 100
    orphan = Event.from_pdu(
        V1,
        {
            "event_id": "$o",
            "type": "m.room.topic",
            "state_key": "",
            "sender": ALICE,
            "room_id": "!r:a.test",
            "content": {},
            "auth_events": [["$nowhere", {}]],
        },
    )
    assert sender_power_level(orphan, {}) == 0
    room = Room(get_room_version("5"))
    main = room.create(users={BOB: " 42"})  # type: ignore[dict-item]
    main.send("m.room.power_levels", ALICE, {"users": {BOB: "30"}, "users_default": "7"})
    bob = main.send("m.room.topic", BOB, {"topic": "t"})
    carol = main.send("m.room.topic", CAROL, {"topic": "t"})
    assert sender_power_level(bob, room.events) == 30
    assert sender_power_level(carol, room.events) == 7


# ------------------------------------------------------------------------------------
# Properties over the vector DAGs


@cache
def _states_after_every_event(case_id: str) -> dict[str, dict[StateKey, str]]:
    """The state after each event of a vector DAG, resolving at every merge."""
    case = next(c for c in CASES if c["id"] == case_id)
    version, _, event_map = load_case(case)
    after: dict[str, dict[StateKey, str]] = {}
    for pdu in case["input"]["events"]:
        event = event_map[pdu["event_id"]]
        prev = [after[p] for p in event.prev_event_ids]
        state = resolve_state(version, prev, event_map) if prev else {}
        if event.is_state():
            state[event.state_tuple] = event.event_id
        after[event.event_id] = state
    return after


RANDOM_CASES = [c["id"] for c in CASES if "/random-" in c["id"]]


@pytest.mark.parametrize(
    "case_id", [c for c in RANDOM_CASES if "/v1/" in c or "/v7/" in c or "/v12/" in c]
)
def test_states_recomputed_from_the_dag_match_the_vector_state_sets(case_id: str) -> None:
    case = next(c for c in CASES if c["id"] == case_id)
    _, state_sets, _ = load_case(case)
    after = _states_after_every_event(case_id)
    assert [after[x] for x in case["input"]["extremities"]] == state_sets


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_order_of_state_sets_never_matters(data: st.DataObject) -> None:
    case_id = data.draw(st.sampled_from(RANDOM_CASES[::4]))
    case = next(c for c in CASES if c["id"] == case_id)
    version, _, event_map = load_case(case)
    after = _states_after_every_event(case_id)
    picks = data.draw(st.lists(st.sampled_from(sorted(after)), min_size=1, max_size=4))
    sets = [after[p] for p in picks]
    expected = resolve_state(version, sets, event_map)
    shuffled = data.draw(st.permutations(sets))
    assert resolve_state(version, shuffled, event_map) == expected
    # Adding a state set that is already there changes nothing.
    assert resolve_state(version, [*sets, sets[0]], event_map) == expected
    if len(set(picks)) == 1:
        assert expected == sets[0]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_subsets_of_vector_state_sets_permuted(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from([c for c in CASES if len(c["input"]["state_sets"]) > 1]))
    version, state_sets, event_map = load_case(case)
    subset = data.draw(st.lists(st.sampled_from(state_sets), min_size=1, max_size=len(state_sets)))
    expected = resolve_state(version, subset, event_map)
    assert resolve_state(version, data.draw(st.permutations(subset)), event_map) == expected
    if len(subset) == 1:
        assert expected == subset[0]


def test_auth_chain_counts_the_state_set_events_themselves_on_a_vector_dag() -> None:
    """Vector README caveat 5, on a fork of a vector DAG where the readings differ.

    Alice's re-join $rand334 is in both state sets (unconflicted) but only in the
    auth chains of the first set's events. Counting each state set's own events
    as part of its chain, as Synapse does, puts $rand334 in both chains, so not
    in the auth difference; nothing then links Alice's join rules $rand350 to
    Peggy's $rand330 (which $rand334 cites), Alice sorts first (more power) and
    Peggy's $rand330 is applied last and kept. By the spec's letter $rand334 is
    in the auth difference and $rand350 would win.
    """
    case_id = "state_res/v2/random-seed3-n49"
    case = next(c for c in CASES if c["id"] == case_id)
    version, _, event_map = load_case(case)
    after = _states_after_every_event(case_id)
    sets = [after["$rand334:a.test"], after["$rand355:b.test"]]
    assert all(s[member_key(ALICE)] == "$rand334:a.test" for s in sets)
    assert resolve_state(version, sets, event_map)[JR_KEY] == "$rand330:a.test"


# ------------------------------------------------------------------------------------
# Where deployed servers read the spec differently, we resolve as they do
# (issue 10, "Agreeing with the rest of the network"); each room below resolves
# differently under the spec's letter.


def test_state_set_events_count_in_their_own_auth_chain() -> None:
    """Auth difference: a state set's auth chain includes the set's own events
    (Synapse's ``get_auth_chain_difference``).

    Alice re-joins (``rejoin``) citing Peggy's join rules; then Alice changes the
    join rules. ``rejoin`` is in both state sets, but only the second set's join
    rules cite it. By the spec's letter it is in the auth difference, and in
    step 1 it links Alice's join rules after Peggy's (which it cites), so Alice's
    win. Synapse leaves it out: the two join rules are sorted by power alone,
    Alice's first, and Peggy's, applied last, is kept.
    """
    room = Room(V10)
    main = room.create()
    peggys = main.send("m.room.join_rules", PEGGY, {"join_rule": "public"})
    rejoin = main.member(ALICE, "join")
    assert peggys.event_id in rejoin.auth_event_ids
    before, after = main.fork(), main.fork()
    alices = after.send("m.room.join_rules", ALICE, {"join_rule": "invite"})
    assert rejoin.event_id in alices.auth_event_ids
    assert before.state[member_key(ALICE)] is after.state[member_key(ALICE)] is rejoin
    assert room.resolve(before, after)[JR_KEY] == peggys.event_id
    assert room.resolve(after, before)[JR_KEY] == peggys.event_id


def test_state_set_own_events_rule_does_not_matter_in_v2_1() -> None:
    """The same room in v12: ``rejoin`` lies on the auth path between the two
    conflicted join rules, so the conflicted subgraph (MSC4297) replays it and
    links them either way; Alice's join rules win."""
    room = Room(V12)
    main = room.create()
    main.send("m.room.join_rules", PEGGY, {"join_rule": "public"})
    main.member(ALICE, "join")
    before, after = main.fork(), main.fork()
    alices = after.send("m.room.join_rules", ALICE, {"join_rule": "invite"})
    assert room.resolve(before, after)[JR_KEY] == alices.event_id


def test_power_ordering_follows_auth_events_only_within_the_full_conflicted_set() -> None:
    """Step 1 gathers the power events' auth events only while they stay in the
    full conflicted set (Synapse's ``_add_event_and_auth_chain_to_graph``, ruma).

    Carol's join ``carol_join`` is conflicted (the other branch has Carol leave).
    It is in the auth chain of Dave's power levels, but only through Dave's join
    and invite, which are unconflicted. By the spec's letter it is sorted with
    the power events and applied in step 1, before Carol's leave (step 3): Carol
    ends up left. Deployed servers sort it in mainline order with the leave; the
    leave has the earlier timestamp, goes first, and the join, applied after it
    in a public room, is kept.
    """
    room = Room(V10)
    dave = "@dave:a.test"
    main = room.create(users={BOB: 50, PEGGY: 50, dave: 50})
    carol_join = main.state[member_key(CAROL)]
    invite = main.member(dave, "invite", sender=CAROL)
    dave_join = main.member(dave, "join")
    assert carol_join.event_id in invite.auth_event_ids
    assert invite.event_id in dave_join.auth_event_ids
    kept, left = main.fork(), main.fork()
    daves_levels = dict(main.state[PL_KEY].content)
    daves_levels["events"] = {"m.room.topic": 10}
    kept.send("m.room.power_levels", dave, daves_levels)
    carol_leave = left.member(CAROL, "leave", ts=1)
    assert carol_leave.origin_server_ts < carol_join.origin_server_ts
    resolved = room.resolve(kept, left)
    assert resolved[member_key(CAROL)] == carol_join.event_id
    assert resolved[PL_KEY] == kept.state[PL_KEY].event_id


@pytest.mark.parametrize("version", [V10, V12], ids=lambda v: f"v{v.identifier}")
def test_power_levels_with_a_state_key_are_not_power_events(version: RoomVersion) -> None:
    """Only the room's ``m.room.power_levels`` and ``m.room.join_rules`` (state key
    "") are power events for deployed servers (Synapse's ``_is_power_event``,
    ruma); the spec counts the types alone.

    Alice and Bob each set ``m.room.power_levels`` with state key "x", Bob first.
    As power events Alice's sorts first (more power) and Bob's, applied last,
    wins; as ordinary state events the mainline order puts Bob's (earlier) first
    and Alice's wins.
    """
    room = Room(version)
    main = room.create()
    levels = dict(main.state[PL_KEY].content)
    alices_side, bobs_side = main.fork(), main.fork()
    bobs = bobs_side.send("m.room.power_levels", BOB, levels, "x", ts=50_000)
    alices = alices_side.send("m.room.power_levels", ALICE, levels, "x", ts=60_000)
    resolved = room.resolve(alices_side, bobs_side)
    assert resolved[("m.room.power_levels", "x")] == alices.event_id != bobs.event_id
    assert resolved[PL_KEY] == main.state[PL_KEY].event_id
