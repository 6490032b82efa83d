"""Two homeservers in one process: a remote join, messages both ways, an outage
with catch-up, and a partition whose concurrent state changes resolve the same
on both sides (tests/services/federation_network.py is the wire)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from tests.conftest import ENGINES
from tests.services.federation_network import Network, Server, make_network

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


async def eventually(read: Callable[[], Awaitable[object]], expected: object) -> None:
    value = None
    for _ in range(500):
        value = await read()
        if value == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{value!r} != {expected!r}")


async def bodies(server: Server, room_id: str) -> list[str]:
    events = server.hs.rooms.events
    timeline = await events.room_events_in_stream_range(
        room_id, 0, await events.current_position(), 1000
    )
    return [str(e.event.content["body"]) for e in timeline if e.event.type == "m.room.message"]


async def say(server: Server, user_id: str, room_id: str, body: str) -> None:
    await server.hs.rooms.send_event(user_id, room_id, EventSpec("m.room.message", {"body": body}))


async def joined_room(network: Network, version: str = "10") -> str:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await create_room(
        a.hs.rooms, Requester(ALICE, "A"), {"preset": "public_chat", "room_version": version}
    )
    await b.joins.join_remote_room(BOB, room_id, ["a.test"])
    return room_id


@pytest.mark.parametrize("version", ["10", "12"])
async def test_a_user_joins_a_room_of_another_server_and_both_talk(
    network: Network, version: str
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await joined_room(network, version)

    assert await b.hs.rooms.get_membership(room_id, BOB) == "join"
    assert await a.hs.rooms.get_membership(room_id, BOB) == "join"
    assert await b.hs.rooms.get_membership(room_id, ALICE) == "join"
    # Both servers hold the same room state.
    state_a = await a.hs.rooms.events.current_state_ids(room_id)
    assert await b.hs.rooms.events.current_state_ids(room_id) == state_a

    await say(a, ALICE, room_id, "hello from a")
    await eventually(lambda: bodies(b, room_id), ["hello from a"])
    await say(b, BOB, room_id, "hello from b")
    await eventually(lambda: bodies(a, room_id), ["hello from a", "hello from b"])
    await eventually(lambda: bodies(b, room_id), ["hello from a", "hello from b"])


async def test_a_server_that_was_down_catches_up_and_fills_the_gap(network: Network) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await joined_room(network)
    b.down = True
    for n in range(3):
        await say(a, ALICE, room_id, f"while down {n}")
    await asyncio.sleep(0.05)
    assert await bodies(b, room_id) == []
    b.down = False
    await a.sender.on_inbound_request("b.test")  # b is back: it reached a
    # a sends only its newest event; b pulls the two before it (get_missing_events).
    await eventually(lambda: bodies(b, room_id), ["while down 0", "while down 1", "while down 2"])


async def test_state_changed_on_both_sides_of_a_partition_resolves_identically(
    network: Network,
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await joined_room(network)
    levels = await a.hs.rooms.events.current_state_ids(room_id, [("m.room.power_levels", "")])
    stored = await a.hs.rooms.events.get_event(levels[("m.room.power_levels", "")])
    assert stored is not None
    content = dict(stored.event.content)
    content["users"] = {**content.get("users", {}), BOB: 100}
    await a.hs.rooms.send_state_event(ALICE, room_id, "m.room.power_levels", "", content)
    await eventually(
        lambda: b.hs.rooms.events.current_state_ids(room_id),
        await a.hs.rooms.events.current_state_ids(room_id),
    )

    a.down = b.down = True  # a partition: neither reaches the other
    await a.hs.rooms.send_state_event(ALICE, room_id, "m.room.topic", "", {"topic": "from a"})
    await b.hs.rooms.send_state_event(BOB, room_id, "m.room.topic", "", {"topic": "from b"})
    topic_a = (await a.hs.rooms.events.current_state_ids(room_id))[("m.room.topic", "")]
    topic_b = (await b.hs.rooms.events.current_state_ids(room_id))[("m.room.topic", "")]
    a.down = b.down = False
    await a.sender.on_inbound_request("b.test")
    await b.sender.on_inbound_request("a.test")

    async def both() -> tuple[object, object]:
        return (
            await a.hs.rooms.events.current_state_ids(room_id),
            await b.hs.rooms.events.current_state_ids(room_id),
        )

    for _ in range(500):
        state_a, state_b = await both()
        if state_a == state_b and len(await a.hs.rooms.events.forward_extremities(room_id)) == 2:
            break
        await asyncio.sleep(0.01)
    state_a, state_b = await both()
    assert state_a == state_b
    # State resolution v2: equal power, same mainline position and (this test's
    # clock) the same origin_server_ts, so the greater event ID is applied last.
    assert state_a[("m.room.topic", "")] == max(topic_a, topic_b)  # type: ignore[index]


async def test_a_long_outage_is_caught_up_whole_and_in_order(network: Network) -> None:
    """More missed events than one /get_missing_events answers (10): the gap is
    walked back request after request, so the timeline holds every message, in
    order, and no backward extremity is left in the middle of it (only the one
    before b's join, where its history of the room starts)."""
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await joined_room(network)
    before_the_outage = await b.hs.rooms.events.backward_extremities(room_id, 10)
    b.down = True
    missed = [f"missed {n}" for n in range(35)]
    for body in missed:
        await say(a, ALICE, room_id, body)
    b.down = False
    await a.sender.on_inbound_request("b.test")
    await eventually(lambda: bodies(b, room_id), missed)
    assert await b.hs.rooms.events.backward_extremities(room_id, 10) == before_the_outage
    assert await b.hs.rooms.events.forward_extremities(room_id) == (
        await a.hs.rooms.events.forward_extremities(room_id)
    )
