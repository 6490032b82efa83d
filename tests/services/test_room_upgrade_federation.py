"""A room upgrade with a member on another server (both engines): the tombstone
and the restricted power levels reach the other server through the ordinary
federation sender, and its user follows the tombstone into the new room
(joining over federation through the tombstone sender's server, as the spec's
client behaviour advises). tests/services/federation_network.py is the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.core.auth_rules import CREATE_KEY
from ranvier.core.ids import server_name_of
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from tests.conftest import ENGINES
from tests.services.federation_network import Network, Server, make_network
from tests.services.test_federation_two_servers import ALICE, BOB, eventually

TOMBSTONE = ("m.room.tombstone", "")
POWER_LEVELS = ("m.room.power_levels", "")


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


async def state_content(server: Server, room_id: str, key: tuple[str, str]) -> Any:
    ids = await server.hs.rooms.events.current_state_ids(room_id, [key])
    stored = await server.hs.rooms.events.get_event(ids[key]) if key in ids else None
    return None if stored is None else dict(stored.event.content)


async def test_a_remote_member_sees_the_tombstone_and_joins_the_new_room(
    network: Network,
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    old = await create_room(
        a.hs.rooms,
        Requester(ALICE, "A"),
        {"preset": "public_chat", "room_version": "10", "name": "Across"},
    )
    await b.joins.join_remote_room(BOB, old, ["a.test"])

    new = await a.hs.room_upgrades.upgrade(Requester(ALICE, "A"), old, {"new_version": "12"})

    tombstone = {"body": "This room has been replaced", "replacement_room": new}
    await eventually(lambda: state_content(b, old, TOMBSTONE), tombstone)
    restricted = await state_content(a, old, POWER_LEVELS)
    assert (restricted["events_default"], restricted["invite"]) == (50, 50)
    await eventually(lambda: state_content(b, old, POWER_LEVELS), restricted)
    assert await b.hs.rooms.events.current_state_ids(old) == (
        await a.hs.rooms.events.current_state_ids(old)
    )

    # Bob's server learns of the new room only by joining it, via the tombstone
    # sender's server.
    assert not await b.hs.rooms.room_exists(new)
    tombstone_event = await b.hs.rooms.events.get_event(
        (await b.hs.rooms.events.current_state_ids(old, [TOMBSTONE]))[TOMBSTONE]
    )
    assert tombstone_event is not None
    via = server_name_of(tombstone_event.event.sender)
    assert via == "a.test"
    await b.joins.join_remote_room(BOB, new, [via])
    assert await a.hs.rooms.get_membership(new, BOB) == "join"
    create = await state_content(b, new, CREATE_KEY)
    assert create["predecessor"]["room_id"] == old
    assert await state_content(b, new, ("m.room.name", "")) == {"name": "Across"}
