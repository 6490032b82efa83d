"""The benchmark scenarios, each with its sizes as parameters.

A scenario has an optional ``setup`` (users, rooms, messages it needs; not
measured) and a ``measure`` that the runner repeats for noisy figures, taking
the median over repeats. ``measure`` returns an :class:`Outcome`: named figures
(the table) and raw samples (the JSON and the chart). Everything goes through
the Client-Server API (bench/client.py); an endpoint a server lacks surfaces as
NotImplementedYet and the runner prints "n/a" for that server.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bench.client import BenchError, Client, User, timeline_bodies
from bench.servers import Server

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizes:
    """Every size of every scenario; ``QUICK`` is the ``make bench QUICK=1`` set."""

    repeats: int = 3  # noisy scenarios run this many times; the table shows medians
    startup_repeats: int = 3
    idle_settle_s: float = 3.0
    register_users: int = 50
    send_messages: int = 1000
    send_senders: int = 10
    send_per_sender: int = 100
    fanout_receivers: int = 50
    fanout_messages: int = 20
    sync_rooms: int = 200
    sync_messages_per_room: int = 50
    sync_other_members: int = 3  # other members in every room, so lazy loading has work
    sync_incremental_samples: int = 5
    large_room_users: int = 1000
    disk_messages: int = 10_000
    soak_pollers: int = 200  # long-polling /sync clients, spread over the senders' rooms
    soak_senders: int = 20  # each sends into its own room, one message per interval at most
    # Fast enough that Ranvier's event cache (10,000 events) fills within the first rounds.
    soak_send_interval_s: float = 0.25
    soak_rounds: int = 6
    soak_round_s: float = 60.0
    soak_sample_interval_s: float = 1.0
    push_room_users: int = 1000  # members of the room the push scenario sends into
    push_sends: int = 20  # sends into that room, one at a time
    push_sync_rooms: int = 200  # rooms that all have unread notifications for one user
    push_sync_samples: int = 3
    fed_joins: int = 20  # first joins of a server into rooms of the other (federated)
    fed_ping_messages: int = 50  # one at a time: send on one server → the other's /sync
    fed_cpu_messages: int = 200  # back to back; both servers' CPU time over them
    media_uploads: int = 5  # 10 MiB uploads timed one at a time (scenario 11, bench/media.py)
    media_downloads: int = 50  # 1 MiB downloads
    media_thumbnails: int = 10  # fresh 2000×1500 JPEGs, each uploaded then thumbnailed
    media_concurrent_uploads: int = 20  # 10 MiB uploads at once, for the peak RSS
    search_messages: int = 100_000  # history of the searched room
    search_queries: int = 20  # each query of SEARCH_QUERIES this many times
    search_index_messages: int = 2_000  # indexed vs not-indexed sends, for the index's cost
    setup_concurrency: int = 8
    # 14 populated server (bench/populated.py): loaded through the client API, then traffic.
    pop_users: int = 2000
    pop_rooms: int = 500
    pop_large_rooms: int = 3
    pop_large_room_members: int = 1000
    pop_small_room_members: int = 8  # the most members of a small room (2 at least)
    # Every event loaded: room state, joins and messages. The issue asks for 50,000; Synapse
    # loads ~20-80 events/s here, so full size is 15,000 (docs/performance.md, scenario 14).
    pop_events: int = 15_000
    pop_big_user_rooms: int = 200  # rooms of the user whose initial /sync is timed
    pop_pollers: int = 200
    pop_senders: int = 10
    pop_probers: int = 10  # incremental /sync (timeout 0) in a loop during the traffic
    pop_send_interval_s: float = 0.5
    pop_traffic_s: float = 60.0
    pop_load_concurrency: int = 32  # requests in flight while loading
    # 15 SBRC /sync profile (bench/populated.py): everyone in every room.
    # The issue suggests 100 × 100 (9,900 joins); 60 × 60 (3,540) keeps `make bench` near 20 min.
    sbrc_users: int = 60
    sbrc_rooms: int = 60
    sbrc_messages_per_room: int = 25
    sbrc_syncing_users: int = 20  # initial /syncs at once
    scenario_timeout_s: float = 3600.0


FULL = Sizes()
QUICK = replace(
    FULL,
    repeats=1,
    startup_repeats=1,
    idle_settle_s=1.0,
    register_users=8,
    send_messages=40,
    send_senders=4,
    send_per_sender=10,
    fanout_receivers=5,
    fanout_messages=3,
    sync_rooms=10,
    sync_messages_per_room=5,
    sync_other_members=1,
    sync_incremental_samples=3,
    large_room_users=20,
    disk_messages=200,
    soak_pollers=10,
    soak_senders=2,
    soak_send_interval_s=0.5,
    soak_rounds=2,
    soak_round_s=5.0,
    soak_sample_interval_s=0.5,
    push_room_users=20,
    push_sends=5,
    push_sync_rooms=10,
    push_sync_samples=2,
    fed_joins=5,
    fed_ping_messages=10,
    fed_cpu_messages=30,
    media_uploads=2,
    media_downloads=10,
    media_thumbnails=3,
    media_concurrent_uploads=4,
    search_messages=2_000,
    search_queries=5,
    search_index_messages=200,
    pop_users=40,
    pop_rooms=16,
    pop_large_rooms=1,
    pop_large_room_members=40,
    pop_small_room_members=4,
    pop_events=400,
    pop_big_user_rooms=10,
    pop_pollers=12,
    pop_senders=3,
    pop_probers=2,
    pop_traffic_s=5.0,
    sbrc_users=12,
    sbrc_rooms=8,
    sbrc_messages_per_room=5,
    sbrc_syncing_users=6,
    scenario_timeout_s=120.0,
)


@dataclass
class Outcome:
    # Figure name (with its unit) -> value; a str for descriptive figures.
    figures: dict[str, float | str] = field(default_factory=dict)
    # Raw samples in milliseconds (or as named), kept in order, for the JSON and the chart.
    samples: dict[str, list[float]] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_figures(label: str, samples_ms: list[float]) -> dict[str, float | str]:
    return {
        f"{label} p50 (ms)": percentile(samples_ms, 0.50),
        f"{label} p95 (ms)": percentile(samples_ms, 0.95),
        f"{label} p99 (ms)": percentile(samples_ms, 0.99),
    }


async def timed(call: Awaitable[Any]) -> tuple[Any, float]:
    """(result, milliseconds) of one awaited request."""
    started = time.perf_counter()
    result = await call
    return result, (time.perf_counter() - started) * 1000


async def bounded_gather(limit: int, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


class ServerContext:
    """What a scenario needs of one server: its client, process, database and users."""

    def __init__(self, server: Server, client: Client, sizes: Sizes) -> None:
        self.server = server
        self.client = client
        self.sizes = sizes
        self.tag = secrets.token_hex(3)
        self._users = 0
        self.pool: list[User] = []  # registered users, shared by scenarios' setups

    def localpart(self, prefix: str) -> str:
        self._users += 1
        return f"{prefix}{self.tag}n{self._users}"

    async def new_user(self, prefix: str = "u") -> User:
        return await self.client.register(self.localpart(prefix))

    async def pool_users(self, count: int) -> list[User]:
        """``count`` registered users, reusing those registered by earlier scenarios."""
        missing = count - len(self.pool)
        if missing > 0:
            users = await bounded_gather(
                self.sizes.setup_concurrency,
                [lambda: self.new_user("p") for _ in range(missing)],
            )
            self.pool.extend(users)
        return self.pool[:count]


class Scenario:
    key: str = ""
    title: str = ""

    def repeats(self, sizes: Sizes) -> int:
        return sizes.repeats

    async def setup(self, ctx: ServerContext) -> Any:
        return None

    async def measure(self, ctx: ServerContext, state: Any, repeat: int) -> Outcome:
        raise NotImplementedError


class RegisterLogin(Scenario):
    key = "register"
    title = "2 register and login"

    async def measure(self, ctx: ServerContext, state: Any, repeat: int) -> Outcome:
        count = ctx.sizes.register_users
        localparts = [ctx.localpart("r") for _ in range(count)]
        register_ms: list[float] = []
        started = time.perf_counter()
        for localpart in localparts:
            user, elapsed = await timed(ctx.client.register(localpart))
            register_ms.append(elapsed)
            ctx.pool.append(user)
        register_rate = count / (time.perf_counter() - started)
        login_ms: list[float] = []
        started = time.perf_counter()
        for localpart in localparts:
            _, elapsed = await timed(ctx.client.login(localpart))
            login_ms.append(elapsed)
        login_rate = count / (time.perf_counter() - started)
        figures: dict[str, float | str] = {}
        figures.update(latency_figures("register", register_ms))
        figures["register (ops/s, sequential)"] = register_rate
        figures.update(latency_figures("login", login_ms))
        figures["login (ops/s, sequential)"] = login_rate
        return Outcome(figures, {"register (ms)": register_ms, "login (ms)": login_ms})


@dataclass
class SendState:
    sender: User
    room_id: str
    senders: list[User]
    rooms: list[str]


class Send(Scenario):
    key = "send"
    title = "3 send messages"

    async def setup(self, ctx: ServerContext) -> SendState:
        users = await ctx.pool_users(ctx.sizes.send_senders)
        sender = users[0]
        room_id = await ctx.client.create_room(sender)
        rooms = await bounded_gather(
            ctx.sizes.setup_concurrency,
            [lambda user=user: ctx.client.create_room(user) for user in users],  # type: ignore[misc]
        )
        return SendState(sender, room_id, users, rooms)

    async def measure(self, ctx: ServerContext, state: SendState, repeat: int) -> Outcome:
        sizes = ctx.sizes
        sequential_ms: list[float] = []
        started = time.perf_counter()
        for i in range(sizes.send_messages):
            _, elapsed = await timed(
                ctx.client.send_text(state.sender, state.room_id, f"sequential {repeat}/{i}")
            )
            sequential_ms.append(elapsed)
        sequential_rate = sizes.send_messages / (time.perf_counter() - started)

        concurrent_ms: list[float] = []

        async def one_sender(user: User, room_id: str) -> None:
            for i in range(sizes.send_per_sender):
                _, elapsed = await timed(ctx.client.send_text(user, room_id, f"concurrent {i}"))
                concurrent_ms.append(elapsed)

        started = time.perf_counter()
        await asyncio.gather(
            *(one_sender(user, room) for user, room in zip(state.senders, state.rooms, strict=True))
        )
        concurrent_rate = len(concurrent_ms) / (time.perf_counter() - started)
        figures: dict[str, float | str] = {}
        figures.update(latency_figures("1 sender", sequential_ms))
        figures["1 sender (msgs/s)"] = sequential_rate
        figures.update(latency_figures(f"{sizes.send_senders} senders", concurrent_ms))
        figures[f"{sizes.send_senders} senders in {sizes.send_senders} rooms (msgs/s)"] = (
            concurrent_rate
        )
        return Outcome(
            figures,
            {"send, 1 sender (ms)": sequential_ms, "send, K senders (ms)": concurrent_ms},
        )


@dataclass
class FanoutState:
    sender: User
    receivers: list[User]
    room_id: str


class Fanout(Scenario):
    key = "fanout"
    title = "4 fan-out to /sync"

    async def setup(self, ctx: ServerContext) -> FanoutState:
        users = await ctx.pool_users(ctx.sizes.fanout_receivers + 1)
        sender, receivers = users[0], users[1:]
        room_id = await ctx.client.create_room(sender, public=True)
        await bounded_gather(
            ctx.sizes.setup_concurrency,
            [lambda user=user: ctx.client.join(user, room_id) for user in receivers],  # type: ignore[misc]
        )
        return FanoutState(sender, receivers, room_id)

    async def measure(self, ctx: ServerContext, state: FanoutState, repeat: int) -> Outcome:
        client = ctx.client
        room_id = state.room_id
        receivers = state.receivers
        arrivals: dict[str, list[float]] = {}
        complete: dict[str, asyncio.Event] = {}

        async def receive(user: User) -> None:
            since = (await client.sync(user))["next_batch"]
            ready.append(user.user_id)
            while True:
                answer = await client.sync(user, since=since, timeout_ms=30_000)
                now = time.perf_counter()
                since = answer["next_batch"]
                for body in timeline_bodies(answer, room_id):
                    if body in arrivals:
                        arrivals[body].append(now)
                        if len(arrivals[body]) == len(receivers):
                            complete[body].set()

        ready: list[str] = []
        tasks = [asyncio.create_task(receive(user)) for user in receivers]
        latencies_ms: list[float] = []
        try:
            while len(ready) < len(receivers):
                for task in tasks:
                    if task.done():
                        task.result()  # raise its error
                await asyncio.sleep(0.01)
            for i in range(ctx.sizes.fanout_messages):
                body = f"fanout {repeat}/{i} {secrets.token_hex(4)}"
                arrivals[body] = []
                complete[body] = asyncio.Event()
                await asyncio.sleep(0.3)  # every receiver is back in its long-poll
                sent_at = time.perf_counter()
                await client.send_text(state.sender, room_id, body)
                try:
                    await asyncio.wait_for(complete[body].wait(), timeout=60)
                except TimeoutError:
                    for task in tasks:
                        if task.done():
                            task.result()
                    raise BenchError(
                        f"{len(arrivals[body])} of {len(receivers)} receivers got the "
                        "message within 60 s"
                    ) from None
                latencies_ms.extend((arrival - sent_at) * 1000 for arrival in arrivals[body])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        figures = latency_figures(
            f"send → {len(receivers)} receivers' /sync", latencies_ms
        )
        return Outcome(figures, {"fan-out, send → /sync (ms)": latencies_ms})


@dataclass
class SyncState:
    user: User
    room_ids: list[str]
    plain_filter: str
    lazy_filter: str


class Sync(Scenario):
    key = "sync"
    title = "5 sync"

    async def setup(self, ctx: ServerContext) -> SyncState:
        sizes = ctx.sizes
        client = ctx.client
        user = await ctx.new_user("s")
        members = await ctx.pool_users(sizes.sync_other_members)
        room_ids: list[str] = await bounded_gather(
            sizes.setup_concurrency,
            [lambda: client.create_room(user, public=True) for _ in range(sizes.sync_rooms)],
        )
        await bounded_gather(
            sizes.setup_concurrency,
            [
                lambda member=member, room_id=room_id: client.join(member, room_id)  # type: ignore[misc]
                for room_id in room_ids
                for member in members
            ],
        )

        async def fill(room_id: str) -> None:
            for i in range(sizes.sync_messages_per_room):
                await client.send_text(user, room_id, f"history {i}")

        await bounded_gather(
            sizes.setup_concurrency,
            [lambda room_id=room_id: fill(room_id) for room_id in room_ids],  # type: ignore[misc]
        )
        timeline = {"limit": 10}
        plain = await client.define_filter(user, {"room": {"timeline": timeline}})
        lazy = await client.define_filter(
            user, {"room": {"timeline": timeline, "state": {"lazy_load_members": True}}}
        )
        return SyncState(user, room_ids, plain, lazy)

    async def measure(self, ctx: ServerContext, state: SyncState, repeat: int) -> Outcome:
        client = ctx.client
        answer, plain_ms = await timed(client.sync(state.user, filter_id=state.plain_filter))
        answer_kib = client.last_response_bytes / 1024
        joined = len(answer.get("rooms", {}).get("join", {}))
        if joined != len(state.room_ids):
            raise BenchError(f"initial /sync shows {joined} of {len(state.room_ids)} rooms")
        _, lazy_ms = await timed(client.sync(state.user, filter_id=state.lazy_filter))
        since = answer["next_batch"]
        incremental_ms: list[float] = []
        for i in range(ctx.sizes.sync_incremental_samples):
            body = f"incremental {repeat}/{i} {secrets.token_hex(4)}"
            room_id = state.room_ids[i % len(state.room_ids)]
            await client.send_text(state.user, room_id, body)
            update, elapsed = await timed(
                client.sync(
                    state.user, since=since, timeout_ms=10_000, filter_id=state.plain_filter
                )
            )
            if body not in timeline_bodies(update, room_id):
                raise BenchError("incremental /sync did not return the new message")
            since = update["next_batch"]
            incremental_ms.append(elapsed)
        rooms = len(state.room_ids)
        return Outcome(
            {
                f"initial /sync, {rooms} rooms (s)": plain_ms / 1000,
                f"initial /sync, {rooms} rooms, lazy members (s)": lazy_ms / 1000,
                "initial /sync answer size (KiB)": answer_kib,
                "incremental /sync after 1 message (ms)": statistics.median(incremental_ms),
            },
            {"incremental /sync (ms)": incremental_ms},
        )


@dataclass
class LargeRoomState:
    creator: User
    users: list[User]
    room_id: str


class LargeRoom(Scenario):
    key = "large_room"
    title = "6 large room"

    def repeats(self, sizes: Sizes) -> int:
        return 1  # a join happens once

    async def setup(self, ctx: ServerContext) -> LargeRoomState:
        creator = await ctx.new_user("l")
        users = await ctx.pool_users(ctx.sizes.large_room_users)
        room_id = await ctx.client.create_room(creator, public=True)
        return LargeRoomState(creator, users, room_id)

    async def measure(self, ctx: ServerContext, state: LargeRoomState, repeat: int) -> Outcome:
        client = ctx.client
        size_before = await ctx.server.database.size_bytes()
        join_ms: list[float] = []
        for user in state.users:
            _, elapsed = await timed(client.join(user, state.room_id))
            join_ms.append(elapsed)
        size_after = await ctx.server.database.size_bytes()
        send_ms: list[float] = []
        for i in range(5):
            _, elapsed = await timed(client.send_text(state.creator, state.room_id, f"big {i}"))
            send_ms.append(elapsed)
        count = len(join_ms)
        tenth = max(1, count // 10)
        figures: dict[str, float | str] = {}
        figures.update(latency_figures(f"join ({count} joins)", join_ms))
        figures["join, first 10% (ms, mean)"] = statistics.fmean(join_ms[:tenth])
        figures["join, last 10% (ms, mean)"] = statistics.fmean(join_ms[-tenth:])
        figures[f"send in the {count + 1}-member room (ms, median)"] = statistics.median(send_ms)
        figures["DB growth per join (KiB)"] = (size_after - size_before) / count / 1024
        return Outcome(figures, {"join as the room grows (ms)": join_ms})


@dataclass
class DiskState:
    sender: User
    room_id: str


class Disk(Scenario):
    key = "disk"
    title = "8 disk"

    def repeats(self, sizes: Sizes) -> int:
        return 1

    async def setup(self, ctx: ServerContext) -> DiskState:
        sender = await ctx.new_user("d")
        return DiskState(sender, await ctx.client.create_room(sender))

    async def measure(self, ctx: ServerContext, state: DiskState, repeat: int) -> Outcome:
        count = ctx.sizes.disk_messages
        size_before = await ctx.server.database.size_bytes()
        started = time.perf_counter()
        # Four requests in flight into the one room: the server still orders them.
        await bounded_gather(
            4,
            [
                lambda i=i: ctx.client.send_text(  # type: ignore[misc]
                    state.sender, state.room_id, f"message number {i} of the disk scenario"
                )
                for i in range(count)
            ],
        )
        elapsed = time.perf_counter() - started
        size_after = await ctx.server.database.size_bytes()
        return Outcome(
            {
                f"DB size after {count} more messages (MiB)": size_after / MIB,
                "DB growth per message (bytes)": (size_after - size_before) / count,
                f"{count} sends, 4 in flight (msgs/s)": count / elapsed,
            }
        )


@dataclass
class SoakState:
    senders: list[User]
    rooms: list[str]
    pollers: list[User]


# Samples of scenario 9 that the chart draws as a line (RSS against time), not as box plots.
SOAK_RSS = "soak: server RSS (MiB)"
SOAK_TIMES = "soak: time of each RSS sample (s)"


class Soak(Scenario):
    """Steady traffic for several rounds on a fresh server: does its memory level off?

    ``soak_pollers`` clients long-poll /sync (30 s timeout) and ``soak_senders``
    senders each send one message per ``soak_send_interval_s`` into their own
    room, whose members the pollers are (round-robin). The server's RSS is
    sampled all along and reported at the end of each round: bounded caches
    filling show as growth that stops; a leak keeps growing round after round.
    """

    key = "soak"
    title = "9 soak"

    def repeats(self, sizes: Sizes) -> int:
        return 1  # the rounds are the repetition

    async def setup(self, ctx: ServerContext) -> SoakState:
        sizes = ctx.sizes
        client = ctx.client
        senders: list[User] = await bounded_gather(
            sizes.setup_concurrency, [lambda: ctx.new_user("ss") for _ in range(sizes.soak_senders)]
        )
        rooms: list[str] = await bounded_gather(
            sizes.setup_concurrency,
            [lambda user=user: client.create_room(user, public=True) for user in senders],  # type: ignore[misc]
        )
        pollers: list[User] = await bounded_gather(
            sizes.setup_concurrency, [lambda: ctx.new_user("sp") for _ in range(sizes.soak_pollers)]
        )
        memberships = [(user, rooms[i % len(rooms)]) for i, user in enumerate(pollers)]
        await bounded_gather(
            sizes.setup_concurrency,
            [
                lambda user=user, room_id=room_id: client.join(user, room_id)  # type: ignore[misc]
                for user, room_id in memberships
            ],
        )
        return SoakState(senders, rooms, pollers)

    async def measure(self, ctx: ServerContext, state: SoakState, repeat: int) -> Outcome:
        sizes = ctx.sizes
        client = ctx.client
        counts = {"ready": 0, "sent": 0, "answers": 0}
        stopping = asyncio.Event()

        async def poll(user: User) -> None:
            since = (await client.sync(user))["next_batch"]
            counts["ready"] += 1
            while not stopping.is_set():
                answer = await client.sync(user, since=since, timeout_ms=30_000)
                since = answer["next_batch"]
                counts["answers"] += 1

        async def send(user: User, room_id: str) -> None:
            for i in itertools.count():
                started = time.perf_counter()
                await client.send_text(user, room_id, f"soak message {i}")
                counts["sent"] += 1
                elapsed = time.perf_counter() - started
                await asyncio.sleep(max(0.0, sizes.soak_send_interval_s - elapsed))

        pollers = [asyncio.create_task(poll(user)) for user in state.pollers]
        senders: list[asyncio.Task[None]] = []
        try:
            while counts["ready"] < len(pollers):
                _raise_failure(pollers)
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # every poller is in its long-poll before traffic starts
            rss_before = ctx.server.rss_bytes() / MIB
            senders = [
                asyncio.create_task(send(user, room))
                for user, room in zip(state.senders, state.rooms, strict=True)
            ]
            times, rss, rounds = await self._rounds(ctx, [*pollers, *senders], counts)
            await self._stop(ctx, state, stopping, pollers, senders)
        finally:
            for task in [*pollers, *senders]:
                task.cancel()
            await asyncio.gather(*pollers, *senders, return_exceptions=True)
        figures: dict[str, float | str] = {"RSS before the traffic (MiB)": rss_before}
        for number, (end_rss, _, _) in enumerate(rounds, start=1):
            figures[f"RSS after round {number} of {sizes.soak_round_s:g} s (MiB)"] = end_rss
        figures["RSS growth in the last round (MiB)"] = rounds[-1][0] - (
            rounds[-2][0] if len(rounds) > 1 else rss_before
        )
        figures["peak RSS (MiB)"] = max(rss, default=rss_before)
        figures["messages sent per round (mean)"] = statistics.fmean(r[1] for r in rounds)
        figures["/sync answers per round (mean)"] = statistics.fmean(r[2] for r in rounds)
        return Outcome(figures, {SOAK_RSS: rss, SOAK_TIMES: times})

    async def _stop(
        self,
        ctx: ServerContext,
        state: SoakState,
        stopping: asyncio.Event,
        pollers: list[asyncio.Task[None]],
        senders: list[asyncio.Task[None]],
    ) -> None:
        """Stop the senders, then end every long-poll with a last message in each room.

        A cancelled client request leaves its long-poll running on the server
        until it times out, and a server stopping waits for requests in flight.
        """
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        stopping.set()
        for sender, room_id in zip(state.senders, state.rooms, strict=True):
            await ctx.client.send_text(sender, room_id, "soak: the end")
        await asyncio.wait_for(asyncio.gather(*pollers), timeout=60)

    async def _rounds(
        self, ctx: ServerContext, tasks: list[asyncio.Task[None]], counts: dict[str, int]
    ) -> tuple[list[float], list[float], list[tuple[float, int, int]]]:
        """RSS samples (times, MiB) and, per round, (RSS at its end, messages, answers)."""
        sizes = ctx.sizes
        times: list[float] = []
        rss: list[float] = []
        rounds: list[tuple[float, int, int]] = []
        started = time.perf_counter()
        for number in range(1, sizes.soak_rounds + 1):
            sent, answers = counts["sent"], counts["answers"]
            round_end = started + number * sizes.soak_round_s
            while (now := time.perf_counter()) < round_end:
                await asyncio.sleep(min(sizes.soak_sample_interval_s, round_end - now))
                _raise_failure(tasks)
                times.append(time.perf_counter() - started)
                rss.append(ctx.server.rss_bytes() / MIB)
            rounds.append((rss[-1], counts["sent"] - sent, counts["answers"] - answers))
        return times, rss, rounds


@dataclass
class PushState:
    sender: User
    big_room: str
    reader: User
    unread_rooms: list[str]
    filter_id: str


class Push(Scenario):
    """Issue 11's two figures: push rules evaluated for every member of a large
    room (default rules) on each send, and an initial /sync of a user whose
    rooms all have unread notifications (the counts are part of the answer)."""

    key = "push"
    title = "13 push rules and unread counts"

    async def setup(self, ctx: ServerContext) -> PushState:
        sizes = ctx.sizes
        client = ctx.client
        sender = await ctx.new_user("pu")
        big_room = await client.create_room(sender, public=True)
        members = await ctx.pool_users(sizes.push_room_users)
        await bounded_gather(
            sizes.setup_concurrency,
            [lambda user=user: client.join(user, big_room) for user in members],  # type: ignore[misc]
        )
        reader = await ctx.new_user("pr")
        rooms: list[str] = await bounded_gather(
            sizes.setup_concurrency,
            [lambda: client.create_room(sender, public=True) for _ in range(sizes.push_sync_rooms)],
        )
        await bounded_gather(
            sizes.setup_concurrency,
            [lambda room_id=room_id: client.join(reader, room_id) for room_id in rooms],  # type: ignore[misc]
        )
        await bounded_gather(
            sizes.setup_concurrency,
            [
                lambda room_id=room_id: client.send_text(sender, room_id, "unread")  # type: ignore[misc]
                for room_id in rooms
            ],
        )
        filter_id = await client.define_filter(reader, {"room": {"timeline": {"limit": 1}}})
        return PushState(sender, big_room, reader, rooms, filter_id)

    async def measure(self, ctx: ServerContext, state: PushState, repeat: int) -> Outcome:
        sizes = ctx.sizes
        send_ms: list[float] = []
        for i in range(sizes.push_sends):
            _, elapsed = await timed(
                ctx.client.send_text(state.sender, state.big_room, f"to everyone {repeat}/{i}")
            )
            send_ms.append(elapsed)
        sync_ms: list[float] = []
        for _ in range(sizes.push_sync_samples):
            answer, elapsed = await timed(ctx.client.sync(state.reader, filter_id=state.filter_id))
            _check_unread(answer, state.unread_rooms)
            sync_ms.append(elapsed)
        members = sizes.push_room_users + 1
        rooms = len(state.unread_rooms)
        return Outcome(
            {
                f"send into a {members}-member room, default push rules p50 (ms)": percentile(
                    send_ms, 0.5
                ),
                f"initial /sync, {rooms} rooms all with unread counts (ms, median)": (
                    statistics.median(sync_ms)
                ),
            },
            {"push: send into the large room (ms)": send_ms, "push: /sync (ms)": sync_ms},
        )


def _check_unread(answer: dict[str, Any], room_ids: list[str]) -> None:
    """Every room has its unread message counted (else the figure means nothing)."""
    joined = answer.get("rooms", {}).get("join", {})
    for room_id in room_ids:
        counts = joined.get(room_id, {}).get("unread_notifications", {})
        if counts.get("notification_count", 0) < 1:
            raise BenchError(f"/sync shows no unread notification in {room_id}: {counts}")


def _raise_failure(tasks: list[asyncio.Task[None]]) -> None:
    """Raise the error of a poller or sender that stopped (they loop until cancelled)."""
    for task in tasks:
        if task.done():
            task.result()
            raise BenchError("a soak client stopped without an error")


#: Words of the search scenario's messages: message i holds WORDS[i % 40] and
#: WORDS[(i * 7) % 40], so each word is in ~1/20 of the history.
SEARCH_WORDS = (
    "apple",
    "brook",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "iris",
    "jasper",
    "kettle",
    "lumen",
    "meadow",
    "nickel",
    "orchid",
    "pebble",
    "quartz",
    "raven",
    "saffron",
    "timber",
    "umber",
    "velvet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "amber",
    "basil",
    "cobalt",
    "dune",
    "elm",
    "flint",
    "garnet",
    "hazel",
    "indigo",
    "juniper",
    "kelp",
    "lotus",
    "maple",
    "nectar",
)


def search_text(i: int) -> str:
    words = SEARCH_WORDS
    rare = " rarity" if i % 1000 == 0 else ""  # in 1/1000 of the history
    return f"note {i}: {words[i % 40]} near the {words[(i * 7) % 40]} today{rare}"


#: (label, criteria without the filter): a common word, two words, a rare word, by
#: relevance and by date; each returns a first page of 10 results.
SEARCH_QUERIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("common word, rank", {"search_term": "meadow", "order_by": "rank"}),
    ("common word, recent", {"search_term": "meadow", "order_by": "recent"}),
    ("two words, rank", {"search_term": "brook harbor", "order_by": "rank"}),
    ("rare word, recent", {"search_term": "rarity", "order_by": "recent"}),
)


@dataclass
class SearchState:
    user: User
    room_id: str
    index_room_id: str


class Search(Scenario):
    """/search over one room's history: latency, and what the index costs on disk."""

    key = "search"
    title = "12 search"

    def repeats(self, sizes: Sizes) -> int:
        return 1

    async def setup(self, ctx: ServerContext) -> SearchState:
        user = await ctx.new_user("s")
        room_id = await ctx.client.create_room(user)
        index_room_id = await ctx.client.create_room(user)
        # Both servers load the same history the same way: the client API, 8 in flight.
        await bounded_gather(
            ctx.sizes.setup_concurrency,
            [
                lambda i=i: ctx.client.send_text(user, room_id, search_text(i))  # type: ignore[misc]
                for i in range(ctx.sizes.search_messages)
            ],
        )
        return SearchState(user, room_id, index_room_id)

    async def measure(self, ctx: ServerContext, state: SearchState, repeat: int) -> Outcome:
        client = ctx.client
        samples: list[float] = []
        figures: dict[str, float | str] = {}
        for label, criteria in SEARCH_QUERIES:
            query = {**criteria, "filter": {"rooms": [state.room_id], "limit": 10}}
            answer = await client.search(state.user, query)  # warm-up, and a sanity check
            if not answer.get("results"):
                raise BenchError(f"/search {label!r} found nothing")
            times: list[float] = []
            for _ in range(ctx.sizes.search_queries):
                _, elapsed = await timed(client.search(state.user, query))
                times.append(elapsed)
            figures[f"{label} p50 (ms)"] = percentile(times, 0.5)
            samples.extend(times)
        figures = {**latency_figures("/search, all queries", samples), **figures}
        figures["DB growth per message from the index (bytes)"] = await self._index_cost(ctx, state)
        return Outcome(figures, {"/search (ms)": samples})

    async def _index_cost(self, ctx: ServerContext, state: SearchState) -> float:
        """Growth per message of indexed messages minus that of the same content
        under an event type no server indexes: what the index costs per message."""
        count = ctx.sizes.search_index_messages
        growth: list[float] = []
        for event_type in ("m.room.message", "org.ranvier.bench.unindexed"):
            before = await ctx.server.database.size_bytes()
            await bounded_gather(
                4,
                [
                    lambda i=i, event_type=event_type: ctx.client.send_event(  # type: ignore[misc]
                        state.user,
                        state.index_room_id,
                        event_type,
                        {"msgtype": "m.text", "body": search_text(i)},
                    )
                    for i in range(count)
                ],
            )
            growth.append((await ctx.server.database.size_bytes() - before) / count)
        return growth[0] - growth[1]


SEARCH = Search()
SCENARIOS: tuple[Scenario, ...] = (
    RegisterLogin(),
    Send(),
    Fanout(),
    Sync(),
    LargeRoom(),
    Disk(),
    SEARCH,
    Push(),
)
# Scenario 9 runs on a fresh server of its own after the others (bench/run.py).
SOAK = Soak()
