"""Scenarios 11 and 12: a populated server, and the SBRC 2026 /sync profile.

11 "populated server" (issue 14): thousands of users, hundreds of rooms (a few
large, most small) and tens of thousands of events, loaded through the
Client-Server API by parallel requests (``pop_load_concurrency`` in flight;
both servers with their cheapest password hashing, since no login is
measured), then long-polling clients and senders talking for a while. It
reports what users of a server with a past feel: fan-out and incremental
/sync under that traffic, the initial /sync of a user in many rooms, memory
at the end, database size, and the restart time on the populated database.

12 "SBRC /sync profile": the initial /sync profile published by the SBRC 2026
study of Synapse and tuwunel (doi 10.5753/sbrc.2026.19722: users each in 300
rooms of 300 members; timeline 1, 5 and 20 with lazy-loaded members, timeline
10 with full member state), scaled down: ``sbrc_users`` users all in the same
``sbrc_rooms`` rooms with some history, ``sbrc_syncing_users`` initial
/syncs at once per profile.

Both run on fresh servers of their own (bench/run.py, ``Runner.loaded_phase``):
the two servers are loaded at the same time (loading is not measured), then
measured one after the other. The plans (who is in which room, how many
messages where) are pure functions of the sizes, unit-tested in
tests/bench/test_populated.py.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.client import BenchError, User, timeline_bodies
from bench.scenarios import (
    MIB,
    Outcome,
    Scenario,
    ServerContext,
    Sizes,
    bounded_gather,
    latency_figures,
    percentile,
    timed,
)
from bench.servers import CHEAP_PASSWORD_HASHING

# Events that ``POST /createRoom`` with the public_chat preset writes on both servers:
# m.room.create, the creator's m.room.member, m.room.power_levels, m.room.join_rules and
# m.room.history_visibility (Client-Server API, "Creation": preset public_chat sets no
# guest access). Counted towards ``pop_events`` with joins and messages.
STATE_EVENTS_PER_ROOM = 5
PLAN_SEED = 14  # issue 14; the same plan on both servers and in every run


# --- plans (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomPlan:
    creator: int  # user index
    members: tuple[int, ...]  # users who join after the creation (the creator excluded)
    messages: int = 0

    @property
    def everyone(self) -> tuple[int, ...]:
        return (self.creator, *self.members)


@dataclass(frozen=True)
class PopulatedPlan:
    users: int
    rooms: tuple[RoomPlan, ...]
    big_user: int  # the user in ``big_user_rooms`` rooms, whose initial /sync is timed
    big_user_rooms: int
    traffic_rooms: tuple[int, ...]  # room indexes; sender i talks in traffic_rooms[i]
    senders: tuple[int, ...]
    pollers: tuple[int, ...]
    probers: tuple[int, ...]

    @property
    def joins(self) -> int:
        return sum(len(room.members) for room in self.rooms)

    @property
    def messages(self) -> int:
        return sum(room.messages for room in self.rooms)

    @property
    def events(self) -> int:
        return len(self.rooms) * STATE_EVENTS_PER_ROOM + self.joins + self.messages

    def rooms_of(self, user: int) -> list[int]:
        return [i for i, room in enumerate(self.rooms) if user in room.everyone]


def apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders): sums to ``total``."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    shares = [total * weight / whole for weight in weights]
    counts = [math.floor(share) for share in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def plan_populated(sizes: Sizes, seed: int = PLAN_SEED) -> PopulatedPlan:
    """Who creates and joins which room, and how many messages each room gets.

    User 0 is the big user, in the first ``pop_big_user_rooms`` rooms and
    nowhere else; it creates the large rooms (the first ``pop_large_rooms``). The last ``pop_senders`` rooms are the traffic rooms, one
    per sender (their creator); pollers and probers are spread round-robin over
    them. Other members are drawn at random. Messages go to rooms in proportion
    to the square root of their member count (bigger rooms are chattier, not
    linearly so) and make up what room state and joins leave of ``pop_events``.
    """
    rng = random.Random(seed)
    users, room_count = sizes.pop_users, sizes.pop_rooms
    s, p, q = sizes.pop_senders, sizes.pop_pollers, sizes.pop_probers
    senders = tuple(range(1, 1 + s))
    pollers = tuple(range(1 + s, 1 + s + p))
    probers = tuple(range(1 + s + p, 1 + s + p + q))
    special = 1 + s + p + q  # users from here on have no role but membership
    if s < 1 or p < s or users < special + 2 or users < sizes.pop_large_room_members:
        raise ValueError(
            f"pop_users={users} cannot hold the big user, {s} senders (at least 1), "
            f"{p} pollers (at least one per sender), {q} probers, 2 more users and "
            f"rooms of {sizes.pop_large_room_members}"
        )
    if sizes.pop_large_rooms + s > room_count:
        raise ValueError("pop_rooms must hold the large rooms and one traffic room per sender")
    if not sizes.pop_large_rooms <= sizes.pop_big_user_rooms <= room_count - s:
        raise ValueError("pop_big_user_rooms must hold the large rooms, not the traffic rooms")
    members: list[set[int]] = []
    creators: list[int] = []
    for index in range(room_count):
        traffic = index - (room_count - s)
        if traffic >= 0:
            creator = senders[traffic]
            chosen = {u for u in (*pollers, *probers) if u % s == traffic}
            chosen.update(rng.sample(range(special, users), 2))
        elif index < sizes.pop_large_rooms:
            creator = 0  # the big user, in every large room
            chosen = set(rng.sample(range(1, users), sizes.pop_large_room_members - 1))
        else:
            creator = rng.randrange(special, users)
            size = rng.randint(2, max(2, sizes.pop_small_room_members))
            chosen = set(rng.sample(range(1, users), size - 1))
        if index < sizes.pop_big_user_rooms:
            chosen.add(0)
        chosen.discard(creator)
        creators.append(creator)
        members.append(chosen)
    state = room_count * STATE_EVENTS_PER_ROOM + sum(len(m) for m in members)
    if state > sizes.pop_events:
        raise ValueError(f"pop_events={sizes.pop_events} is below the {state} state events")
    weights = [math.sqrt(1 + len(m)) for m in members]
    counts = apportion(sizes.pop_events - state, weights)
    rooms = tuple(
        RoomPlan(creator, tuple(sorted(chosen)), count)
        for creator, chosen, count in zip(creators, members, counts, strict=True)
    )
    traffic_rooms = tuple(range(room_count - s, room_count))
    return PopulatedPlan(
        users, rooms, 0, sizes.pop_big_user_rooms, traffic_rooms, senders, pollers, probers
    )


@dataclass(frozen=True)
class SbrcPlan:
    users: int
    rooms: tuple[RoomPlan, ...]  # everyone is in every room
    syncing: tuple[int, ...]  # the users whose initial /syncs run at once

    @property
    def joins(self) -> int:
        return sum(len(room.members) for room in self.rooms)


def plan_sbrc(sizes: Sizes) -> SbrcPlan:
    """Room r is created by user r mod users, everyone else joins; history by varied senders."""
    users = sizes.sbrc_users
    if sizes.sbrc_syncing_users > users or users < 2:
        raise ValueError("sbrc_users must be at least 2 and hold the syncing users")
    rooms = tuple(
        RoomPlan(
            r % users,
            tuple(u for u in range(users) if u != r % users),
            sizes.sbrc_messages_per_room,
        )
        for r in range(sizes.sbrc_rooms)
    )
    return SbrcPlan(users, rooms, tuple(range(sizes.sbrc_syncing_users)))


def message_sender(room: RoomPlan, number: int) -> int:
    """The sender of a room's message ``number``: its members in turn, a stride apart.

    The stride (7, coprime with most sizes) varies who sends consecutive messages, so a
    lazy-loaded timeline of a few events names several members.
    """
    everyone = room.everyone
    return everyone[(number * 7) % len(everyone)]


# --- loading through the client API ----------------------------------------------------------


@dataclass
class Loaded:
    users: list[User]
    room_ids: list[str]
    figures: dict[str, float | str] = field(default_factory=dict)


async def _phase(
    figures: dict[str, float | str],
    label: str,
    limit: int,
    calls: list[Callable[[], Awaitable[Any]]],
) -> list[Any]:
    started = time.perf_counter()
    answers = await bounded_gather(limit, calls)
    elapsed = time.perf_counter() - started
    figures[f"load: {len(calls)} {label} (per s)"] = len(calls) / elapsed if elapsed else 0.0
    return answers


async def load_rooms(
    ctx: ServerContext, user_count: int, rooms: tuple[RoomPlan, ...], prefix: str
) -> Loaded:
    """Register the users, create the rooms, join the members, send the messages.

    Each phase is one bounded pool of requests over every room, shuffled, so no
    room's sequence holds the others up (requests into one room still queue
    there, on both servers). The per-second rate of each phase is reported.
    """
    client, limit = ctx.client, ctx.sizes.pop_load_concurrency
    rng = random.Random(PLAN_SEED)
    figures: dict[str, float | str] = {
        "load: password hashing": CHEAP_PASSWORD_HASHING.get(ctx.server.name, "?")
    }
    began = time.perf_counter()
    users: list[User] = await _phase(
        figures, "users registered", limit,
        [lambda: ctx.new_user(prefix) for _ in range(user_count)],
    )  # fmt: skip
    room_ids: list[str] = await _phase(
        figures, "rooms created", limit,
        [lambda r=r: client.create_room(users[r.creator], public=True) for r in rooms],  # type: ignore[misc]
    )  # fmt: skip
    joins = [(users[u], room_ids[i]) for i, room in enumerate(rooms) for u in room.members]
    rng.shuffle(joins)
    await _phase(
        figures, "joins", limit,
        [lambda u=u, r=r: client.join(u, r) for u, r in joins],  # type: ignore[misc]
    )  # fmt: skip
    sends = [
        (users[message_sender(room, n)], room_ids[i], f"history {n} of room {i}")
        for i, room in enumerate(rooms)
        for n in range(room.messages)
    ]
    rng.shuffle(sends)
    await _phase(
        figures, "messages sent", limit,
        [lambda u=u, r=r, b=b: client.send_text(u, r, b) for u, r, b in sends],  # type: ignore[misc]
    )  # fmt: skip
    figures["load: all (s)"] = time.perf_counter() - began
    return Loaded(users, room_ids, figures)


def sync_filter(timeline_limit: int, lazy_members: bool) -> str:
    """An inline filter for /sync's ``filter`` parameter (Client-Server API, "Filtering")."""
    definition = {
        "room": {
            "timeline": {"limit": timeline_limit},
            "state": {"lazy_load_members": lazy_members},
        }
    }
    return orjson.dumps(definition).decode()


def joined_rooms(answer: dict[str, Any]) -> dict[str, Any]:
    rooms: dict[str, Any] = answer.get("rooms", {}).get("join", {})
    return rooms


# --- 14 populated server ---------------------------------------------------------------------


@dataclass
class PopulatedState:
    plan: PopulatedPlan
    loaded: Loaded


@dataclass
class Traffic:
    """What the traffic phase measured."""

    fanout_ms: list[float]
    incremental_ms: list[float]
    sent: int
    deliveries: int
    expected_deliveries: int


POLL_TIMEOUT_MS = 30_000
PROBE_INTERVAL_S = 0.25
# Cheap initial /syncs for the pollers and probers (not measured): where they start from.
START_FILTER = sync_filter(1, lazy_members=True)


class Populated(Scenario):
    key = "populated"
    title = "14 populated server"

    def repeats(self, sizes: Sizes) -> int:
        return 1  # the load is the set-up; one traffic phase, one restart

    async def setup(self, ctx: ServerContext) -> PopulatedState:
        plan = plan_populated(ctx.sizes)
        loaded = await load_rooms(ctx, plan.users, plan.rooms, "pop")
        return PopulatedState(plan, loaded)

    async def measure(self, ctx: ServerContext, state: PopulatedState, repeat: int) -> Outcome:
        plan = state.plan
        traffic = await run_traffic(ctx, state)
        rss_end = ctx.server.rss_bytes() / MIB
        peak = max(rss_end, (ctx.server.peak_rss_bytes() or 0) / MIB)
        initial = await self.initial_syncs(ctx, state)
        size = await ctx.server.database.size_bytes() / MIB
        restart = await self.restart(ctx, state)
        figures: dict[str, float | str] = {
            "loaded: users / rooms / events": (
                f"{plan.users} / {len(plan.rooms)} / {plan.events} "
                f"({plan.joins} joins, {plan.messages} messages)"
            ),
            **state.loaded.figures,
            **latency_figures(
                f"traffic: send → {len(plan.pollers)} pollers' /sync", traffic.fanout_ms
            ),
            "traffic: deliveries seen / expected": f"{traffic.deliveries} / "
            f"{traffic.expected_deliveries} ({traffic.sent} messages)",
            **latency_figures("traffic: incremental /sync", traffic.incremental_ms),
            "RSS at the end of the traffic (MiB)": rss_end,
            "peak RSS (MiB)": peak,
            **initial,
            "database size (MiB)": size,
            **restart,
        }
        return Outcome(
            figures,
            {
                "populated: send → /sync (ms)": traffic.fanout_ms,
                "populated: incremental /sync (ms)": traffic.incremental_ms,
            },
        )

    async def initial_syncs(
        self, ctx: ServerContext, state: PopulatedState
    ) -> dict[str, float | str]:
        """The big user's initial /sync, full member state then lazy; median of 3 each."""
        user = state.loaded.users[state.plan.big_user]
        expected = len(state.plan.rooms_of(state.plan.big_user))
        figures: dict[str, float | str] = {}
        for label, lazy in (("", False), (", lazy members", True)):
            seconds: list[float] = []
            for _ in range(3):
                answer, ms = await timed(ctx.client.sync(user, filter_id=sync_filter(10, lazy)))
                if len(joined_rooms(answer)) != expected:
                    raise BenchError(
                        f"the big user's initial /sync shows {len(joined_rooms(answer))} "
                        f"of {expected} rooms"
                    )
                seconds.append(ms / 1000)
            figures[f"initial /sync, {expected} rooms{label} (s)"] = statistics.median(seconds)
        return figures

    async def restart(self, ctx: ServerContext, state: PopulatedState) -> dict[str, float | str]:
        """Stop the server, start it on its populated database: to /versions, then a /sync."""
        server = ctx.server
        server.stop()
        seconds = await server.start(ctx.client.session)
        user = state.loaded.users[state.plan.big_user]
        _, first_sync_ms = await timed(ctx.client.sync(user, filter_id=START_FILTER))
        return {
            "restart: process start → first /versions (s)": seconds,
            "restart: then the big user's initial /sync, lazy, timeline 1 (s)": (
                first_sync_ms / 1000
            ),
        }


async def run_traffic(ctx: ServerContext, state: PopulatedState) -> Traffic:
    """Pollers long-poll /sync and probers poll it while each sender talks in its room."""
    plan, sizes, client = state.plan, ctx.sizes, ctx.client
    users, room_ids = state.loaded.users, state.loaded.room_ids
    traffic_ids = {room_ids[r]: plan.rooms[r] for r in plan.traffic_rooms}
    sent_at: dict[str, float] = {}
    acknowledged: set[str] = set()  # bodies whose send answered 200
    arrivals: dict[str, list[float]] = {}
    incremental_ms: list[float] = []
    stopping = asyncio.Event()
    ready: list[int] = []

    # The initial /syncs (not measured) go ``pop_load_concurrency`` at a time, as the load
    # does: clients come online over time, not in one burst of 200 connections.
    starting = asyncio.Semaphore(sizes.pop_load_concurrency)

    async def start(user: User) -> str:
        async with starting:
            answer = await client.sync(user, filter_id=START_FILTER)
        since: str = answer["next_batch"]
        return since

    async def poll(index: int) -> None:
        user = users[index]
        since = await start(user)
        ready.append(index)
        while not stopping.is_set():
            answer = await client.sync(user, since=since, timeout_ms=POLL_TIMEOUT_MS)
            now = time.perf_counter()
            since = answer["next_batch"]
            for room_id in traffic_ids:
                for body in timeline_bodies(answer, room_id):
                    if body in sent_at:
                        arrivals.setdefault(body, []).append(now)

    async def probe(index: int) -> None:
        user = users[index]
        since = await start(user)
        ready.append(index)
        while not stopping.is_set():
            await asyncio.sleep(PROBE_INTERVAL_S)
            answer, ms = await timed(client.sync(user, since=since))
            since = answer["next_batch"]
            incremental_ms.append(ms)

    async def talk(sender: int, room_id: str) -> None:
        for number in range(1_000_000):
            began = time.perf_counter()
            body = f"traffic {sender} {number} {secrets.token_hex(3)}"
            sent_at[body] = began
            await client.send_text(users[sender], room_id, body)
            acknowledged.add(body)
            await asyncio.sleep(max(0.0, sizes.pop_send_interval_s - (time.perf_counter() - began)))

    listeners = [
        *(asyncio.create_task(poll(u)) for u in plan.pollers),
        *(asyncio.create_task(probe(u)) for u in plan.probers),
    ]
    talkers: list[asyncio.Task[None]] = []
    try:
        while len(ready) < len(listeners):
            _raise_failure(listeners)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # every poller is in its long-poll before the talk starts
        talkers = [
            asyncio.create_task(talk(s, room_ids[r]))
            for s, r in zip(plan.senders, plan.traffic_rooms, strict=True)
        ]
        deadline = time.perf_counter() + sizes.pop_traffic_s
        while time.perf_counter() < deadline:
            _raise_failure([*listeners, *talkers])
            await asyncio.sleep(0.2)
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        await asyncio.sleep(2.0)  # the last messages reach the long-polls
        stopping.set()
        # End every long-poll: a last message into each traffic room (not counted).
        for s, r in zip(plan.senders, plan.traffic_rooms, strict=True):
            await client.send_text(users[s], room_ids[r], "traffic: the end")
        await asyncio.wait_for(asyncio.gather(*listeners), timeout=60)
    finally:
        for task in [*listeners, *talkers]:
            task.cancel()
        await asyncio.gather(*listeners, *talkers, return_exceptions=True)
    return traffic_result(plan, sent_at, acknowledged, arrivals, incremental_ms)


def traffic_result(
    plan: PopulatedPlan,
    sent_at: dict[str, float],
    acknowledged: set[str],
    arrivals: dict[str, list[float]],
    incremental_ms: list[float],
) -> Traffic:
    pollers = set(plan.pollers)
    receivers = {
        plan.senders[i]: sum(1 for u in plan.rooms[r].everyone if u in pollers)
        for i, r in enumerate(plan.traffic_rooms)
    }
    fanout_ms = [
        (arrival - sent_at[body]) * 1000
        for body, times in arrivals.items()
        if body in acknowledged
        for arrival in times
    ]
    # Only sends the server acknowledged are expected (the last ones may be cut short).
    expected = sum(receivers[int(body.split()[1])] for body in acknowledged)
    if not fanout_ms or not incremental_ms:
        raise BenchError("the traffic phase measured nothing (no delivery or no probe)")
    return Traffic(fanout_ms, incremental_ms, len(acknowledged), len(fanout_ms), expected)


def _raise_failure(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done():
            task.result()
            raise BenchError("a traffic client stopped without an error")


# --- 15 SBRC /sync profile ---------------------------------------------------------------------

# (label, timeline limit, lazy-loaded members): the four profiles of the SBRC 2026 study.
SBRC_PROFILES: tuple[tuple[str, int, bool], ...] = (
    ("a) timeline 1, lazy members", 1, True),
    ("b) timeline 5, lazy members", 5, True),
    ("c) timeline 20, lazy members", 20, True),
    ("d) timeline 10, full member state", 10, False),
)


@dataclass
class SbrcState:
    plan: SbrcPlan
    loaded: Loaded


def sbrc_figures(
    syncing: int, rooms: int, by_profile: dict[str, list[float]]
) -> dict[str, float | str]:
    """Per profile: p50 and the slowest of the ``syncing`` initial /syncs at once (ms)."""
    figures: dict[str, float | str] = {}
    for label, _, _ in SBRC_PROFILES:
        samples = by_profile[label]
        figures[f"{label}: {syncing} at once, {rooms} rooms each, p50 (ms)"] = percentile(
            samples, 0.5
        )
        figures[f"{label}: slowest (ms)"] = max(samples)
    return figures


class Sbrc(Scenario):
    key = "sbrc"
    title = "15 SBRC /sync profile"

    async def setup(self, ctx: ServerContext) -> SbrcState:
        plan = plan_sbrc(ctx.sizes)
        loaded = await load_rooms(ctx, plan.users, plan.rooms, "sbrc")
        return SbrcState(plan, loaded)

    async def measure(self, ctx: ServerContext, state: SbrcState, repeat: int) -> Outcome:
        rooms = len(state.plan.rooms)
        by_profile: dict[str, list[float]] = {}
        # Each repeat starts with the next profile: the first /syncs after the load meet
        # cold caches, and the median over repeats should not charge that to one profile.
        first = repeat % len(SBRC_PROFILES)
        for label, limit, lazy in (*SBRC_PROFILES[first:], *SBRC_PROFILES[:first]):
            inline = sync_filter(limit, lazy)

            async def one(user: User, inline: str = inline, limit: int = limit) -> float:
                answer, ms = await timed(ctx.client.sync(user, filter_id=inline))
                joined = joined_rooms(answer)
                if len(joined) != rooms:
                    raise BenchError(f"initial /sync shows {len(joined)} of {rooms} rooms")
                if any(
                    len(r.get("timeline", {}).get("events", [])) > limit for r in joined.values()
                ):
                    raise BenchError(f"a timeline is longer than its limit {limit}")
                return ms

            users = [state.loaded.users[u] for u in state.plan.syncing]
            by_profile[label] = list(await asyncio.gather(*(one(user) for user in users)))
        figures: dict[str, float | str] = {}
        if repeat == 0:
            figures["loaded: users / rooms / joins"] = (
                f"{state.plan.users} / {rooms} / {state.plan.joins}"
            )
            figures.update(state.loaded.figures)
        figures.update(sbrc_figures(len(state.plan.syncing), rooms, by_profile))  # a) to d)
        return Outcome(figures, {f"SBRC {label} (ms)": v for label, v in by_profile.items()})


POPULATED = Populated()
SBRC = Sbrc()
