"""Scenario 10, federation: two servers of one kind federating over TLS on loopback.

For each server kind the harness starts a pair: A, where the rooms live, and
B, whose users join them. Each has a federation TLS listener with a
certificate from a test CA (trustme) that both trust, the server name
``127.0.0.1:<TLS port>``, and may reach loopback (bench/servers.py,
FederationTls). The harness itself still speaks only the Client-Server API,
over each server's plain HTTP client listener.

Figures, per repeat:

- federated join: a user of B joins a fresh public room of A by ID, ``via`` A
  (``POST /join/{roomId}`` → 200). B's server is not in the room, so this is
  a whole make_join / send_join exchange (Server-Server API, "Joining
  Rooms"), state included. ``fed_joins`` joins, one at a time.
- ping: a user of A sends into a room both servers are in while a user of B
  is in a ``/sync`` long-poll; the time from the send until that /sync
  returned the event (send → /send transaction → B's checks and persistence
  → B's /sync). ``fed_ping_messages`` messages, one at a time.
- CPU per federated message: A's user sends ``fed_cpu_messages`` messages
  back to back; once B's /sync has returned the last of them, the CPU time
  both server processes used since the first send (psutil: user + system),
  divided by the count. It covers the whole path (A's send, the
  transactions, B's signature and auth checks, persistence, B's /sync
  answers) and whatever the servers did in the background meanwhile.

The pairs are set up first, then the repeats alternate between the kinds, as
every other scenario does (bench/run.py, Runner.run_scenario).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.client import BenchError, Client, User, timeline_bodies
from bench.scenarios import Outcome, Scenario, ServerContext, Sizes, latency_figures, timed
from bench.servers import FederationTls, Server, free_port

#: How long one federated message may take to reach the other server's /sync.
DELIVERY_TIMEOUT_S = 60.0
#: A pause after each ping's delivery, so that the receiver is back in its long-poll.
PING_GAP_S = 0.1
#: A pause before the CPU measurement, for the servers' work of the pings to settle.
CPU_SETTLE_S = 1.0
#: Timeline events per room in one /sync answer, enough that no ping is cut off.
TIMELINE_LIMIT = 50


class FederationCa:
    """A test CA (trustme) and the certificates it issues for loopback listeners."""

    def __init__(self, folder: Path) -> None:
        import trustme  # the [bench] extra; imported here so that the other scenarios need not

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = folder / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def pair(self) -> tuple[FederationTls, FederationTls]:
        """Two TLS listeners on free loopback ports, each naming both as its peers."""
        ports = (free_port(), free_port())
        peers = tuple(f"127.0.0.1:{port}" for port in ports)
        first, second = (self._listener(port, peers) for port in ports)
        return first, second

    def _listener(self, port: int, peers: tuple[str, ...]) -> FederationTls:
        cert = self.ca.issue_cert("127.0.0.1")
        chain = self.folder / f"{port}.chain.pem"
        key = self.folder / f"{port}.key.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        return FederationTls(port, chain, key, self.ca_file, peers)


class FederatedContext(ServerContext):
    """Server A's context (rooms, senders) with the context of its peer B (joiners, receivers)."""

    def __init__(self, server: Server, client: Client, sizes: Sizes, peer: ServerContext) -> None:
        super().__init__(server, client, sizes)
        self.peer = peer

    @property
    def server_name(self) -> str:
        tls = self.server.federation
        assert tls is not None
        return tls.server_name

    def check_peer_alive(self) -> None:
        process = self.peer.server.process
        if process is None or process.poll() is not None:
            raise RuntimeError(f"server B has exited; log:\n{self.peer.server.log_tail()}")


class SyncWatcher:
    """One user's /sync long-poll loop, noting when awaited message bodies arrive."""

    def __init__(self, client: Client, user: User, room_id: str, filter_id: str) -> None:
        self.client = client
        self.user = user
        self.room_id = room_id
        self.filter_id = filter_id
        self._awaited: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        first = await self.client.sync(self.user, filter_id=self.filter_id)
        self._task = asyncio.create_task(self._poll(first["next_batch"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def expect(self, body: str) -> None:
        self._awaited[body] = asyncio.get_running_loop().create_future()

    async def arrival(self, body: str, timeout_s: float = DELIVERY_TIMEOUT_S) -> float:
        """The perf_counter() time at which ``body`` (expected before its send) arrived."""
        future = self._awaited[body]
        assert self._task is not None
        either: set[asyncio.Future[Any]] = {future, self._task}
        await asyncio.wait(either, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()  # the loop's error
        if not future.done():
            raise BenchError(f"a message took over {timeout_s:g} s to reach the other /sync")
        return future.result()

    async def _poll(self, since: str) -> None:
        while True:
            answer = await self.client.sync(
                self.user, since=since, timeout_ms=30_000, filter_id=self.filter_id
            )
            now = time.perf_counter()
            since = answer["next_batch"]
            for body in timeline_bodies(answer, self.room_id):
                future = self._awaited.get(body)
                if future is not None and not future.done():
                    future.set_result(now)


@dataclass
class FederationState:
    sender: User  # on A
    receiver: User  # on B, in the ping room
    joiner: User  # on B, joins A's fresh rooms
    room_id: str  # the ping room, on A, joined by the receiver
    filter_id: str  # the receiver's


class Federation(Scenario):
    key = "federation"
    title = "10 federation"

    async def setup(self, ctx: ServerContext) -> FederationState:
        assert isinstance(ctx, FederatedContext)
        peer = ctx.peer
        sender = await ctx.new_user("fa")
        receiver, joiner = await peer.new_user("fb"), await peer.new_user("fb")
        room_id = await ctx.client.create_room(sender, public=True)
        # The first join between the two also fetches signing keys and opens connections:
        # done here, not measured.
        await peer.client.join(receiver, room_id, via=ctx.server_name)
        filter_id = await peer.client.define_filter(
            receiver, {"room": {"timeline": {"limit": TIMELINE_LIMIT}}}
        )
        return FederationState(sender, receiver, joiner, room_id, filter_id)

    async def measure(self, ctx: ServerContext, state: FederationState, repeat: int) -> Outcome:
        assert isinstance(ctx, FederatedContext)
        ctx.check_peer_alive()
        join_ms = await self.joins(ctx, state)
        watcher = SyncWatcher(ctx.peer.client, state.receiver, state.room_id, state.filter_id)
        await watcher.start()
        try:
            ping_ms = await self.pings(ctx, state, watcher, repeat)
            await asyncio.sleep(CPU_SETTLE_S)
            cpu_ms, rate = await self.cpu_per_message(ctx, state, watcher, repeat)
            sender_ms, receiver_ms = cpu_ms
        finally:
            await watcher.stop()
        sizes = ctx.sizes
        figures: dict[str, float | str] = {}
        figures.update(_p50_p95(latency_figures(f"join ({sizes.fed_joins} rooms)", join_ms)))
        figures.update(_p50_p95(latency_figures("ping: send → other's /sync", ping_ms)))
        figures["CPU per federated message (ms, both servers)"] = sender_ms + receiver_ms
        figures["  of which the sender's server A (ms)"] = sender_ms
        figures["  of which the receiver's server B (ms)"] = receiver_ms
        figures[f"{sizes.fed_cpu_messages} sends → all on other's /sync (msgs/s)"] = rate
        return Outcome(
            figures,
            {"federated join (ms)": join_ms, "federated ping, send → /sync (ms)": ping_ms},
        )

    async def joins(self, ctx: FederatedContext, state: FederationState) -> list[float]:
        """B's joiner joins fresh public rooms of A, one at a time: each join's milliseconds."""
        rooms = [
            await ctx.client.create_room(state.sender, public=True)
            for _ in range(ctx.sizes.fed_joins)
        ]
        join_ms: list[float] = []
        for room_id in rooms:
            _, elapsed = await timed(
                ctx.peer.client.join(state.joiner, room_id, via=ctx.server_name)
            )
            join_ms.append(elapsed)
        return join_ms

    async def pings(
        self, ctx: FederatedContext, state: FederationState, watcher: SyncWatcher, repeat: int
    ) -> list[float]:
        ping_ms: list[float] = []
        for i in range(ctx.sizes.fed_ping_messages):
            body = f"ping {repeat}/{i} {secrets.token_hex(4)}"
            watcher.expect(body)
            await asyncio.sleep(PING_GAP_S)
            sent_at = time.perf_counter()
            await ctx.client.send_text(state.sender, state.room_id, body)
            ping_ms.append((await watcher.arrival(body) - sent_at) * 1000)
        return ping_ms

    async def cpu_per_message(
        self, ctx: FederatedContext, state: FederationState, watcher: SyncWatcher, repeat: int
    ) -> tuple[tuple[float, float], float]:
        """((CPU ms per message of A, of B), messages per second end to end).

        Only the last message is awaited: B's /sync may batch several (or cut a
        long run short with ``limited``), and once the last is there every
        earlier one has been received too (B fetches any it lacks before).
        """
        count = ctx.sizes.fed_cpu_messages
        bodies = [f"cpu {repeat}/{i} {secrets.token_hex(4)}" for i in range(count)]
        watcher.expect(bodies[-1])
        a, b = ctx.server, ctx.peer.server
        a_before, b_before = a.cpu_seconds(), b.cpu_seconds()
        started = time.perf_counter()
        for body in bodies:
            await ctx.client.send_text(state.sender, state.room_id, body)
        arrived = await watcher.arrival(bodies[-1])
        a_ms = (a.cpu_seconds() - a_before) / count * 1000
        b_ms = (b.cpu_seconds() - b_before) / count * 1000
        return (a_ms, b_ms), count / (arrived - started)


def _p50_p95(figures: dict[str, float | str]) -> dict[str, float | str]:
    """The p50 and p95 of latency_figures (a few dozen samples say nothing of a p99)."""
    return {name: value for name, value in figures.items() if " p99 " not in name}


FEDERATION = Federation()
