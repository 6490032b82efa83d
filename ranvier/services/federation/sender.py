"""Sending to other servers: one queue per destination, transactions, backoff, catch-up.

Server-Server API, "Transactions": PDUs and EDUs travel in transactions of at
most 50 PDUs and 100 EDUs, one transaction in flight per destination. A local
send never waits on a remote server: it only appends to in-memory queues and
wakes the destination's task.

Durability without a copy per destination (Synapse's catch-up, #8096): the
events table is the queue. Each destination keeps the stream position of the
last of our events it acknowledged (``federation_destinations``). After a
failure or a restart a destination is *catching up*: it is sent the newest
of our events in each room it shares with us after that position, and pulls
anything older it lacks with /get_missing_events. EDUs that must not be lost
(to-device messages, device-list updates) wait in ``federation_outbox`` until
acknowledged; typing, presence and receipts are sent from memory.

Backoff: connection errors, 401, 429 and 5xx answers back off (30 s, then
about ×2 per failure, with jitter, up to a day); any request from that server
to us ends its backoff (``on_inbound_request``). Other 4xx answers are final:
that transaction is dropped, the queue moves on (a rejected transaction must
never block the queue: Synapse #11160).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ranvier.core.ids import server_name_of
from ranvier.storage.events import StoredEvent
from ranvier.storage.federation import FederationStore

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.storage import Transaction

logger = logging.getLogger(__name__)

MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100
INITIAL_RETRY_MS = 30_000
MAX_RETRY_MS = 24 * 3600 * 1000
#: Ephemeral EDUs kept per destination while it is unreachable (oldest dropped).
MAX_EPHEMERAL_EDUS = 1000


class TransactionFailed(Exception):
    """A transaction was not acknowledged. ``status`` None: no HTTP answer at all."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retriable(self) -> bool:
        return self.status is None or self.status in (401, 408, 429) or self.status >= 500


class Transport(Protocol):
    """PUT /_matrix/federation/v1/send/{txnId} on ``destination``; raises
    :class:`TransactionFailed` unless answered 200."""

    async def send_transaction(
        self, destination: str, txn_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]: ...


@dataclass
class _Queue:
    name: str
    last_sent: int
    retry_interval_ms: int = 0
    #: time.monotonic() before which nothing is sent (backoff).
    retry_deadline: float = 0.0
    catching_up: bool = True
    #: While catching up: our events still to send, and the position reached once sent.
    backlog: list[str] | None = None
    backlog_position: int = 0
    pdus: list[StoredEvent] = field(default_factory=list)
    edus: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class SenderQueueSizes:
    destinations: int
    #: Events queued in memory or still to catch up on, and EDUs queued in memory.
    pdus: int
    edus: int
    #: Destinations waiting out a backoff after failed transactions.
    backing_off: int


class FederationSender:
    def __init__(
        self,
        hs: Homeserver,
        transport: Transport,
        *,
        initial_retry_ms: int = INITIAL_RETRY_MS,
        max_retry_ms: int = MAX_RETRY_MS,
        jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.4),
    ) -> None:
        self.hs = hs
        self.server_name = hs.server_name
        self.transport = transport
        self.store = FederationStore(hs.database)
        self.initial_retry_ms = initial_retry_ms
        self.max_retry_ms = max_retry_ms
        self.jitter = jitter
        self._queues: dict[str, _Queue] = {}
        self._txn_prefix = str(hs.clock_ms())
        self._txn_counter = 0
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every destination that may be owed something (after a restart)."""
        position = await self.hs.rooms.events.current_position()
        owed = {
            d.name for d in await self.store.all_destinations() if d.last_sent_position < position
        }
        owed.update(await self.store.destinations_with_edus())
        for name in sorted(owed):
            (await self._queue(name, position)).wake.set()

    async def close(self) -> None:
        self._closed = True
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def queue_sizes(self) -> SenderQueueSizes:
        """What waits to be sent, over all destinations (read at each /metrics scrape)."""
        now = time.monotonic()
        sizes = SenderQueueSizes(len(self._queues), 0, 0, 0)
        for queue in self._queues.values():
            sizes.pdus += len(queue.pdus) + len(queue.backlog or ())
            sizes.edus += len(queue.edus)
            if queue.retry_deadline > now:
                sizes.backing_off += 1
        return sizes

    # --- what the rest of the server calls -------------------------------------------------

    async def on_local_events(self, events: Sequence[StoredEvent]) -> None:
        """Queue events this server created for every other server in their rooms."""
        for stored in events:
            await self.send_pdu(stored)

    async def send_pdu(self, stored: StoredEvent, *, exclude: Iterable[str] = ()) -> None:
        """Queue one event for the servers in its room (but ``exclude``): ours,
        or one we pass on (a join received through send_join)."""
        for name in await self._destinations_for(stored) - set(exclude):
            queue = await self._queue(name, stored.stream_ordering - 1)
            if not queue.catching_up or self._after_backlog(queue, stored):
                queue.pdus.append(stored)
            queue.wake.set()

    async def send_edu(self, destination: str, edu_type: str, content: Mapping[str, Any]) -> None:
        """An ephemeral EDU (typing, receipts, presence): best effort, from memory."""
        if destination == self.server_name:
            return
        queue = await self._queue(destination, await self.hs.rooms.events.current_position())
        queue.edus.append({"edu_type": edu_type, "content": dict(content)})
        del queue.edus[:-MAX_EPHEMERAL_EDUS]
        queue.wake.set()

    async def send_durable_edus(self, edus: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """``(destination, edu_type, content)`` EDUs that must arrive (to-device
        messages, device-list updates): stored before this returns."""
        rows = [row for row in edus if row[0] != self.server_name]
        if rows:
            await self.store.add_edus(rows)
            await self.wake_destinations({row[0] for row in rows})

    async def add_durable_edus(
        self, txn: Transaction, edus: Iterable[tuple[str, str, Mapping[str, Any]]]
    ) -> set[str]:
        """Like :meth:`send_durable_edus`, but written in the caller's
        transaction (atomic with what caused them); the destinations to pass to
        :meth:`wake_destinations` once it has committed."""
        rows = [row for row in edus if row[0] != self.server_name]
        await self.store.add_edus(rows, txn)
        return {row[0] for row in rows}

    async def wake_destinations(self, names: Iterable[str]) -> None:
        """Send what waits in the outbox for ``names``."""
        position = await self.hs.rooms.events.current_position()
        for name in sorted(names):
            (await self._queue(name, position)).wake.set()

    async def on_inbound_request(self, origin: str) -> None:
        """``origin`` is up (it just reached us): end its backoff, send what waits."""
        queue = self._queues.get(origin)
        if queue is not None and queue.retry_interval_ms:
            await self._end_backoff(queue)
            queue.wake.set()

    @staticmethod
    def _after_backlog(queue: _Queue, stored: StoredEvent) -> bool:
        """Whether a catch-up already under way cannot include ``stored``: its
        backlog was found up to ``backlog_position``, so a newer event waits in
        memory and goes out once the catch-up is done."""
        return queue.backlog is not None and stored.stream_ordering > queue.backlog_position

    # --- destinations -----------------------------------------------------------------------

    async def _destinations_for(self, stored: StoredEvent) -> set[str]:
        event = stored.event
        servers = set(await self.hs.rooms.joined_servers(event.room_id))
        if event.type == "m.room.member" and event.state_key is not None:
            # A kicked or banned user's server hears of it too.
            servers.add(server_name_of(event.state_key) or "")
        servers.discard(self.server_name)
        servers.discard("")
        return servers

    async def _queue(self, name: str, position_if_new: int) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            row = await self.store.get_destination(name)
            if row is None:
                await self.store.add_destination(name, position_if_new)
                queue = _Queue(name, position_if_new, catching_up=False)
            else:
                remaining_ms = row.retry_last_ts + row.retry_interval_ms - self.hs.clock_ms()
                queue = _Queue(
                    name,
                    row.last_sent_position,
                    retry_interval_ms=row.retry_interval_ms,
                    retry_deadline=time.monotonic() + max(0, remaining_ms) / 1000,
                )
            self._queues[name] = queue
        if queue.task is None and not self._closed:
            queue.task = asyncio.create_task(self._run(queue), name=f"federation-sender:{name}")
        return queue

    # --- one destination's task -------------------------------------------------------------

    async def _run(self, queue: _Queue) -> None:
        while not self._closed:
            await queue.wake.wait()
            queue.wake.clear()
            wait_s = queue.retry_deadline - time.monotonic()
            if queue.retry_interval_ms and wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queue.wake.wait(), wait_s)
                queue.wake.set()  # try again now (or sooner, if the backoff ended)
                continue
            try:
                more = await self._send_once(queue)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one destination's bug stop its queue for good
                logger.exception("Federation sender for %s failed", queue.name)
                more = False
                await self._back_off(queue)
            if more:
                queue.wake.set()

    async def _send_once(self, queue: _Queue) -> bool:
        """Send one transaction; True when more waits."""
        if queue.catching_up:
            pdus = await self._catch_up_batch(queue)
            up_to = queue.backlog_position if not queue.backlog else queue.last_sent
        else:
            queue.pdus.sort(key=lambda s: s.stream_ordering)
            pdus = queue.pdus[:MAX_PDUS_PER_TRANSACTION]
            up_to = pdus[-1].stream_ordering if pdus else queue.last_sent
        durable = await self.store.pending_edus(queue.name, MAX_EDUS_PER_TRANSACTION)
        ephemeral = queue.edus[: MAX_EDUS_PER_TRANSACTION - len(durable)]
        if pdus or durable or ephemeral:
            body = {
                "origin": self.server_name,
                "origin_server_ts": self.hs.clock_ms(),
                "pdus": [dict(s.event.pdu) for s in pdus],
                "edus": [
                    *({"edu_type": e.edu_type, "content": dict(e.content)} for e in durable),
                    *ephemeral,
                ],
            }
            self._txn_counter += 1
            txn_id = f"{self._txn_prefix}.{self._txn_counter}"
            try:
                await self.transport.send_transaction(queue.name, txn_id, body)
            except TransactionFailed as exc:
                if exc.retriable:
                    logger.info("Transaction %s to %s failed: %s", txn_id, queue.name, exc)
                    queue.catching_up = True
                    queue.backlog = None
                    queue.pdus.clear()
                    await self._back_off(queue)
                    return False
                logger.warning("%s refused transaction %s: %s; dropped", queue.name, txn_id, exc)
            del queue.edus[: len(ephemeral)]
        if queue.catching_up:
            if queue.backlog:
                return True
            queue.catching_up = False
            queue.backlog = None
        else:
            del queue.pdus[: len(pdus)]
            # Never past an event still waiting in memory (they can be queued out of order).
            if queue.pdus:
                up_to = min(up_to, queue.pdus[0].stream_ordering - 1)
        await self._acknowledged(queue, up_to, durable[-1].id if durable else 0)
        return bool(queue.pdus or queue.edus) or len(durable) == MAX_EDUS_PER_TRANSACTION

    async def _acknowledged(self, queue: _Queue, position: int, edus_up_to: int) -> None:
        if position > queue.last_sent:
            queue.last_sent = position
            await self.store.set_last_sent(queue.name, position)
        if edus_up_to:
            await self.store.delete_edus(queue.name, edus_up_to)
        if queue.retry_interval_ms:
            await self._end_backoff(queue)

    async def _end_backoff(self, queue: _Queue) -> None:
        queue.retry_interval_ms = 0
        queue.retry_deadline = 0.0
        await self.store.set_backoff(queue.name, 0, 0)

    async def _catch_up_batch(self, queue: _Queue) -> list[StoredEvent]:
        """The next events of the catch-up: the newest of our events in each room
        shared with the destination since its last acknowledged position (found
        once, then sent 50 at a time). The destination pulls older ones itself."""
        events = self.hs.rooms.events
        if queue.backlog is None:
            queue.backlog_position = await events.current_position()
            rooms = await self.store.rooms_with_members_on(queue.name)
            queue.backlog = await self.store.newest_events_from(
                self.server_name, rooms, queue.last_sent, queue.backlog_position
            )
        batch = queue.backlog[:MAX_PDUS_PER_TRANSACTION]
        del queue.backlog[:MAX_PDUS_PER_TRANSACTION]
        return await events.get_events_ordered(batch)

    async def _back_off(self, queue: _Queue) -> None:
        interval = (
            self.initial_retry_ms
            if not queue.retry_interval_ms
            else int(queue.retry_interval_ms * 2 * self.jitter())
        )
        queue.retry_interval_ms = min(interval, self.max_retry_ms)
        queue.retry_deadline = time.monotonic() + queue.retry_interval_ms / 1000
        await self.store.set_backoff(queue.name, self.hs.clock_ms(), queue.retry_interval_ms)
        queue.wake.set()
