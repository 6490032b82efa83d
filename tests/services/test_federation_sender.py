"""Sending to other servers (services/federation/sender.py), both engines.

A local room of ``localhost`` has a member on ``remote.test`` (their join is
stored as a send_join would store it). ``FakeTransport`` stands for the
network: it records every transaction and fails or refuses on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from ranvier.homeserver import Homeserver
from ranvier.services.federation.sender import FederationSender, TransactionFailed
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from ranvier.storage import Database
from ranvier.storage.events import FederatedEvent
from ranvier.storage.federation import FederationStore
from tests.federation_dag import Dag

NOW = 1_700_000_000_000
ALICE = "@alice:localhost"
BOB = "@bob:remote.test"


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Mapping[str, Any]]] = []
        self.failure: TransactionFailed | None = None
        self.attempts = 0
        self.gate: asyncio.Event | None = None

    async def send_transaction(
        self, destination: str, txn_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        self.sent.append((destination, txn_id, body))
        return {"pdus": {}}

    def bodies(self) -> list[str]:
        return [pdu["content"].get("body") for _, _, body in self.sent for pdu in body["pdus"]]


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def eventually(read: Callable[[], Awaitable[object]], expected: object) -> None:
    """Wait until ``read()`` gives ``expected`` (the sender writes after the remote answered)."""
    value = None
    for _ in range(500):
        value = await read()
        if value == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{value!r} != {expected!r}")


@pytest.fixture
async def hs(database: Database, tmp_path: Path) -> AsyncIterator[Homeserver]:
    config = parse_config({}, tmp_path, env={})
    homeserver = Homeserver(config, database, SigningKey.generate("t"), lambda: NOW)
    await homeserver.accounts.register("alice", None, login=False)
    yield homeserver
    await homeserver.close()


@pytest.fixture
async def room_id(hs: Homeserver) -> str:
    """A local public room that ``@bob:remote.test`` has joined."""
    room_id = await create_room(
        hs.rooms, Requester(ALICE, "DEV"), {"preset": "public_chat", "room_version": "10"}
    )
    events = hs.rooms.events
    state = await events.current_state_ids(room_id)
    loaded = await events.get_events(state.values())
    by_key = {key: loaded[eid].event for key, eid in state.items()}
    [(extremity, _)] = await events.forward_extremities(room_id)
    prev = (await events.get_events([extremity]))[extremity].event
    auth = [by_key[("m.room.create", "")], by_key[("m.room.power_levels", "")]]
    auth.append(by_key[("m.room.join_rules", "")])
    join = Dag(room_id).event("m.room.member", BOB, {"membership": "join"}, [prev], auth, BOB)
    await events.persist_federated_events(
        room_id,
        [FederatedEvent(join, state)],
        current_state={**state, join.state_tuple: join.event_id},
    )
    return room_id


def sender_for(hs: Homeserver, transport: FakeTransport) -> FederationSender:
    sender = FederationSender(hs, transport, initial_retry_ms=60_000, jitter=lambda: 1.0)
    hs.federation_sender = sender
    return sender


async def send(hs: Homeserver, room_id: str, body: str) -> int:
    stored = await hs.rooms.send_event(ALICE, room_id, EventSpec("m.room.message", {"body": body}))
    return stored.stream_ordering


async def last_sent(hs: Homeserver) -> int | None:
    row = await FederationStore(hs.database).get_destination("remote.test")
    return None if row is None else row.last_sent_position


async def test_a_local_message_reaches_the_remote_member_server(
    hs: Homeserver, room_id: str
) -> None:
    transport = FakeTransport()
    sender_for(hs, transport)
    position = await send(hs, room_id, "hello")
    await until(lambda: transport.bodies() == ["hello"])
    [(destination, _, body)] = transport.sent
    assert destination == "remote.test"
    assert body["origin"] == "localhost"
    assert body["edus"] == []
    assert body["pdus"][0]["sender"] == ALICE
    await eventually(lambda: last_sent(hs), position)


async def test_an_unreachable_server_backs_off_then_catches_up_with_the_newest_event(
    hs: Homeserver, room_id: str
) -> None:
    transport = FakeTransport()
    sender = sender_for(hs, transport)
    transport.failure = TransactionFailed(None, "connection refused")
    first = await send(hs, room_id, "one")
    await until(lambda: transport.attempts == 1)
    for body in ("two", "three"):
        await send(hs, room_id, body)
    await asyncio.sleep(0.1)
    assert transport.attempts == 1  # backing off: nothing tried meanwhile
    row = await FederationStore(hs.database).get_destination("remote.test")
    assert row is not None and row.retry_interval_ms == 60_000
    assert row.last_sent_position == first - 1

    transport.failure = None
    await sender.on_inbound_request("remote.test")  # it is back
    await until(lambda: transport.bodies() == ["three"])
    # Only the newest event of the room: the remote pulls "one" and "two" with
    # /get_missing_events (catch-up).
    await eventually(lambda: last_sent(hs), await hs.rooms.events.current_position())
    row = await FederationStore(hs.database).get_destination("remote.test")
    assert row is not None and row.retry_interval_ms == 0


async def test_after_a_restart_what_was_not_acknowledged_is_sent(
    hs: Homeserver, room_id: str
) -> None:
    transport = FakeTransport()
    sender = sender_for(hs, transport)
    transport.failure = TransactionFailed(503, "down")
    await send(hs, room_id, "before the crash")
    await sender.send_durable_edus(
        [("remote.test", "m.direct_to_device", {"sender": ALICE, "message_id": "m1"})]
    )
    await until(lambda: transport.attempts >= 1)
    await sender.close()

    # A new process: its sender resumes from the database alone.
    transport = FakeTransport()
    sender = sender_for(hs, transport)
    await FederationStore(hs.database).set_backoff("remote.test", 0, 0)
    await sender.start()
    await until(lambda: bool(transport.sent))
    [(_, _, body)] = transport.sent
    assert [pdu["content"]["body"] for pdu in body["pdus"]] == ["before the crash"]
    assert body["edus"] == [
        {"edu_type": "m.direct_to_device", "content": {"sender": ALICE, "message_id": "m1"}}
    ]
    await eventually(lambda: FederationStore(hs.database).pending_edus("remote.test", 10), [])


async def test_a_refused_transaction_does_not_block_the_queue(hs: Homeserver, room_id: str) -> None:
    transport = FakeTransport()
    sender_for(hs, transport)
    transport.failure = TransactionFailed(400, "M_BAD_JSON")
    await send(hs, room_id, "refused")
    await until(lambda: transport.attempts == 1)
    transport.failure = None
    position = await send(hs, room_id, "next")
    await until(lambda: transport.bodies() == ["next"])
    await eventually(lambda: last_sent(hs), position)


async def test_transactions_carry_at_most_50_pdus_one_at_a_time(
    hs: Homeserver, room_id: str
) -> None:
    transport = FakeTransport()
    sender_for(hs, transport)
    transport.gate = asyncio.Event()
    await send(hs, room_id, "0")
    await until(lambda: transport.attempts == 1)
    for n in range(1, 121):
        await send(hs, room_id, str(n))
    transport.gate.set()
    await until(lambda: len(transport.bodies()) == 121)
    sizes = [len(body["pdus"]) for _, _, body in transport.sent]
    assert sizes == [1, 50, 50, 20]
    assert transport.bodies() == [str(n) for n in range(121)]
    assert len({txn_id for _, txn_id, _ in transport.sent}) == 4


async def test_local_users_only_rooms_send_nothing(hs: Homeserver) -> None:
    transport = FakeTransport()
    sender_for(hs, transport)
    room_id = await create_room(hs.rooms, Requester(ALICE, "DEV"), {"preset": "public_chat"})
    await send(hs, room_id, "private")
    await asyncio.sleep(0.05)
    assert transport.attempts == 0
    assert await FederationStore(hs.database).all_destinations() == []


async def test_an_event_sent_while_the_catch_up_is_in_flight_is_sent_after_it(
    hs: Homeserver, room_id: str
) -> None:
    """The catch-up sends what existed when it began; an event created while
    its transaction is in flight must still go out afterwards (found by
    tests/e2e/test_federation_flows.py: it was never sent)."""
    transport = FakeTransport()
    sender = sender_for(hs, transport)
    transport.failure = TransactionFailed(None, "connection refused")
    await send(hs, room_id, "while down")
    await until(lambda: transport.attempts == 1)

    transport.failure = None
    transport.gate = asyncio.Event()
    await sender.on_inbound_request("remote.test")
    await until(lambda: transport.attempts == 2)  # the catch-up transaction, held
    position = await send(hs, room_id, "during the catch-up")
    transport.gate.set()
    await until(lambda: transport.bodies() == ["while down", "during the catch-up"])
    await eventually(lambda: last_sent(hs), position)
