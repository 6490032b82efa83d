"""End-to-end encryption across two real Ranvier servers, with matrix-nio.

Two `ranvier serve` processes federate over TLS on loopback (test CA,
server names ``127.0.0.1:<TLS port>``; the set-up of
tests/e2e/test_federation_two_ranvier.py). A nio client with olm/megolm
talks to each server's plain client listener. Alice (on A) creates an
encrypted room and invites Bob (on B), who joins through A. For the messages
to decrypt, everything E2EE needs has to cross the servers: Bob's device
list (m.device_list_update, /sync device_lists for a remote user),
/user/keys/query, /user/keys/claim for one-time keys, and the megolm room
keys as m.direct_to_device. Then Bob logs in on a second device: Alice's
client hears of it through device_lists.changed, queries the new device's
keys through A, and shares a new session the new device decrypts; the new
device's own message decrypts on A. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    LogoutResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.e2e.harness import postgres_database
from tests.e2e.test_federation_two_ranvier import Node, _node

pytestmark = pytest.mark.e2e

#: How long one thing may take to reach the other side (well inside the
#: whole test's ~60 s budget; each wait normally ends in under a second).
E2EE_SYNC_DEADLINE_S = 15
PASSWORD = "correct-horse-1"
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def e2ee_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Node]]:
    """Two configured servers sharing a test CA, each on its own database of
    the engine; killed at the end whatever happens."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    nodes = [_node(tmp_path / "a", ca, ca_file), _node(tmp_path / "b", ca, ca_file)]
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "postgresql":
            for node in nodes:
                node.env["RANVIER_DATABASE"] = await stack.enter_async_context(postgres_database())
        try:
            yield nodes
        finally:
            for node in nodes:
                if node.server is not None:
                    node.server.kill()


class E2eePeer:
    """A nio client with encryption and the plaintext messages it decrypted."""

    def __init__(self, node: Node, store: Path, user: str = "") -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.client = AsyncClient(node.base_url, user, store_path=str(store), config=config)
        self.decrypted: list[RoomMessageText] = []
        self.undecryptable: list[MegolmEvent] = []
        self.device_list_changes: set[str] = set()
        self.client.add_event_callback(self._on_text, RoomMessageText)
        self.client.add_event_callback(self._on_megolm, MegolmEvent)

    async def _on_text(self, room: Any, event: RoomMessageText) -> None:
        if event.decrypted:
            self.decrypted.append(event)

    async def _on_megolm(self, room: Any, event: MegolmEvent) -> None:
        self.undecryptable.append(event)

    def bodies(self) -> list[str]:
        return [event.body for event in self.decrypted]

    async def sync(self, timeout: int = 0) -> None:
        """One sync, then what a client does after it: upload, query and claim keys."""
        response = await self.client.sync(
            timeout=timeout, full_state=self.client.next_batch is None
        )
        assert isinstance(response, SyncResponse), response
        self.device_list_changes.update(response.device_list.changed)
        await self.keep_keys_fresh()

    async def keep_keys_fresh(self) -> None:
        client = self.client
        if client.should_upload_keys:
            assert not hasattr(await client.keys_upload(), "status_code")
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        await client.send_to_device_messages()

    async def sync_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + E2EE_SYNC_DEADLINE_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.client.user_id}/{self.client.device_id} never saw: {what}; "
                    f"undecryptable: {len(self.undecryptable)}"
                )
            await self.sync(timeout=500)

    async def send(self, room_id: str, body: str) -> str:
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": body},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, RoomSendResponse), response
        event_id: str = response.event_id
        return event_id


async def _registered(node: Node, tmp_path: Path, name: str) -> E2eePeer:
    peer = E2eePeer(node, tmp_path / f"{name}-store")
    response = await peer.client.register(name, PASSWORD, device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    await peer.sync()
    assert peer.client.olm is not None and not peer.client.should_upload_keys
    return peer


async def _start(nodes: list[Node]) -> None:
    async with aiohttp.ClientSession() as session:
        for node in nodes:
            await node.start().wait_ready(session)


async def test_encrypted_chat_across_two_servers_and_a_new_remote_device(
    tmp_path: Path, e2ee_nodes: list[Node]
) -> None:
    a, b = e2ee_nodes
    await _start(e2ee_nodes)
    alice = await _registered(a, tmp_path, "alice")
    bob = await _registered(b, tmp_path, "bob")
    bob2: E2eePeer | None = None
    try:
        # createRoom's invite list names Bob: the invite crosses to B (PUT
        # /invite); accepting it joins through A.
        created = await alice.client.room_create(
            name="Secrets", invite=[bob.client.user_id], initial_state=[ENCRYPTION]
        )
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await bob.sync_until(lambda: room_id in bob.client.invited_rooms, "the invite")
        assert isinstance(await bob.client.join(room_id), JoinResponse)
        await bob.sync_until(lambda: room_id in bob.client.rooms, "the joined room")
        assert bob.client.rooms[room_id].encrypted
        await alice.sync_until(
            lambda: (
                room_id in alice.client.rooms
                and bob.client.user_id in alice.client.rooms[room_id].users
            ),
            "bob joining",
        )
        # E2EE, "Tracking the device list for a user": a user newly sharing a
        # room appears in device_lists.changed, on both sides.
        assert bob.client.user_id in alice.device_list_changes
        await bob.sync_until(
            lambda: alice.client.user_id in bob.device_list_changes, "alice in device_lists"
        )
        # Each client learns the other's device through its own server.
        await alice.sync_until(
            lambda: bob.client.device_id in alice.client.device_store[bob.client.user_id],
            "bob's device",
        )
        await bob.sync_until(
            lambda: alice.client.device_id in bob.client.device_store[alice.client.user_id],
            "alice's device",
        )

        # Alice → Bob: Bob's one-time key is claimed through A, the megolm
        # key travels as m.direct_to_device.
        before_laptop = {await alice.send(room_id, "the eagle lands at noon")}
        await bob.sync_until(lambda: "the eagle lands at noon" in bob.bodies(), "alice's message")
        # Bob → Alice.
        before_laptop.add(await bob.send(room_id, "understood"))
        await alice.sync_until(lambda: "understood" in alice.bodies(), "bob's reply")
        assert alice.undecryptable == [] and bob.undecryptable == []
        received = next(e for e in bob.decrypted if e.body == "the eagle lands at noon")
        assert received.sender == alice.client.user_id
        # Keys were queried both ways across the servers, and A claimed Bob's
        # one-time key from B (Bob answers over the Olm session Alice opened).
        assert a.server is not None and b.server is not None
        for log in (a.server.log(), b.server.log()):
            assert '"POST /_matrix/federation/v1/user/keys/query" 200' in log
        assert '"POST /_matrix/federation/v1/user/keys/claim" 200' in b.server.log()
        alice.device_list_changes.clear()

        # Bob logs in on a second device, on B.
        bob2 = E2eePeer(b, tmp_path / "bob2-store", bob.client.user_id)
        login = await bob2.client.login(PASSWORD, device_name="bob's laptop")
        assert isinstance(login, LoginResponse), login
        await bob2.sync()
        assert bob2.client.device_id != bob.client.device_id
        # A hears of it over federation; Alice's /sync names Bob in
        # device_lists.changed, and /keys/query through A returns the device.
        await alice.sync_until(
            lambda: (
                bob.client.user_id in alice.device_list_changes
                and bob2.client.device_id in alice.client.device_store[bob.client.user_id]
            ),
            "bob's new device",
        )
        # nio shares a megolm session only with the devices it first shared it
        # with; a new session includes the new device.
        alice.client.invalidate_outbound_session(room_id)
        await alice.send(room_id, "welcome, laptop")
        await bob2.sync_until(
            lambda: "welcome, laptop" in bob2.bodies(), "alice's message on the laptop"
        )
        await bob.sync_until(
            lambda: "welcome, laptop" in bob.bodies(), "alice's message on the phone"
        )
        # The laptop writes too: its new session reaches Alice over federation.
        await bob2.keep_keys_fresh()
        await bob2.send(room_id, "typed on the laptop")
        await alice.sync_until(
            lambda: "typed on the laptop" in alice.bodies(), "the laptop's message"
        )
        assert alice.undecryptable == [] and bob.undecryptable == []
        # The laptop cannot read what was said before it existed, and only that.
        assert {event.event_id for event in bob2.undecryptable} <= before_laptop

        # Bob logs the laptop out: A hears of it, and /keys/query through A no
        # longer lists the device.
        laptop = bob2.client.device_id
        alice.device_list_changes.clear()
        assert isinstance(await bob2.client.logout(), LogoutResponse)
        await alice.sync_until(
            lambda: (
                bob.client.user_id in alice.device_list_changes
                and laptop
                not in {
                    d.id for d in alice.client.device_store.active_user_devices(bob.client.user_id)
                }
            ),
            "the laptop gone",
        )
    finally:
        for peer in (alice, bob, bob2):
            if peer is not None:
                await peer.client.close()

    for node in e2ee_nodes:
        assert node.server is not None
        assert node.server.terminate() == 0, node.server.log()
        assert "Traceback" not in node.server.log(), node.server.log()
