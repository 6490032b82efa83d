"""Joining a room of version 1 or 2 over federation: the join's event ID is the
joining server's (``$opaque:joining.server``), not the one in the resident
server's template.

In v1/v2 rooms the event ID names the server that made the event, and the
signature checks require that server's signature (Server-Server API,
"Validating hashes and signatures on received events"). The joining server
signs the join, so the ID must be of its own name: Synapse, as the resident
server, refused Ranvier's joins to its v1 rooms ("unable to verify signature
for event domain ...: Not signed by ..."), because Ranvier kept the ID of
Synapse's template. Synapse, as the joining server, replaces it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ranvier.core.federation_checks import required_signing_keys
from ranvier.core.ids import server_name_of
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from tests.conftest import ENGINES
from tests.services.federation_network import Network, make_network
from tests.services.test_federation_two_servers import bodies, eventually, say

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_join_to_a_v1_or_v2_room_has_an_event_id_of_the_joining_server(
    network: Network, version: str
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await create_room(
        a.hs.rooms, Requester(ALICE, "A"), {"preset": "public_chat", "room_version": version}
    )
    await b.joins.join_remote_room(BOB, room_id, ["a.test"])

    for server in (a, b):
        state = await server.hs.rooms.events.current_state_ids(room_id)
        join_id = state[("m.room.member", BOB)]
        assert server_name_of(join_id) == "b.test"
        stored = await server.hs.rooms.events.get_event(join_id)
        assert stored is not None
        # Only b.test's signature is required, and b.test signed it.
        assert set(required_signing_keys(stored.event)) == {"b.test"}
        assert set(stored.event.pdu["signatures"]) == {"b.test"}
    assert await a.hs.rooms.get_membership(room_id, BOB) == "join"

    await say(a, ALICE, room_id, "hello from a")
    await eventually(lambda: bodies(b, room_id), ["hello from a"])
    await say(b, BOB, room_id, "hello from b")
    await eventually(lambda: bodies(a, room_id), ["hello from a", "hello from b"])
