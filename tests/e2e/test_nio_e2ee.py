"""End-to-end encryption with real clients: matrix-nio (olm/megolm) through a
real `ranvier serve`, on SQLite and PostgreSQL.

Alice and Bob upload device and one-time keys, talk in an encrypted room and
both decrypt what the other wrote: keys/upload, keys/query, keys/claim,
sendToDevice and /sync's to_device, device_lists and one-time key counts all
have to work for that. Then Alice logs in on a second device; Bob learns of it
through device_lists, claims its one-time key and sends it the new room key by
to-device, and the new device decrypts Bob's next message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.e2e.harness import Server, free_port, init_config, postgres_database

pytestmark = pytest.mark.e2e

SYNC_DEADLINE_S = 20
PASSWORD = "correct-horse-1"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


@pytest.fixture(params=["sqlite", "postgresql"])
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    config = init_config(tmp_path)
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    if request.param == "postgresql":
        async with postgres_database() as dsn:
            env["RANVIER_DATABASE"] = dsn
            async for url in _serve(config, env):
                yield url
    else:
        async for url in _serve(config, env):
            yield url


async def _serve(config: Path, env: dict[str, str]) -> AsyncIterator[str]:
    server = Server(config, free_port(), **env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
        yield server.base_url
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()


class Peer:
    """A nio client with encryption and a log of the plaintext messages it decrypted."""

    def __init__(self, url: str, store: Path, user: str = "") -> None:
        store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
        self.client = AsyncClient(url, user, store_path=str(store), config=config)
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

    async def sync(self, timeout: int = 0) -> SyncResponse:
        """One sync, then what a client does after it: upload, query and claim keys."""
        response = await self.client.sync(timeout=timeout, full_state=self.client.next_batch is None)
        assert isinstance(response, SyncResponse), response
        self.device_list_changes.update(response.device_list.changed)
        await self.keep_keys_fresh()
        return response

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
        deadline = time.monotonic() + SYNC_DEADLINE_S
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.client.user_id}/{self.client.device_id} never saw: {what}; "
                    f"undecryptable: {len(self.undecryptable)}"
                )
            await self.sync(timeout=1000)

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


async def _registered(url: str, tmp_path: Path, name: str) -> Peer:
    peer = Peer(url, tmp_path / f"{name}-store")
    response = await peer.client.register(name, PASSWORD, device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    await peer.sync()
    assert peer.client.olm is not None and not peer.client.should_upload_keys
    return peer


async def test_encrypted_chat_and_a_device_joining_later(server_url: str, tmp_path: Path) -> None:
    alice = await _registered(server_url, tmp_path, "alice")
    bob = await _registered(server_url, tmp_path, "bob")
    alice2: Peer | None = None
    try:
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
            lambda: room_id in alice.client.rooms
            and bob.client.user_id in alice.client.rooms[room_id].users,
            "bob joining",
        )
        await alice.keep_keys_fresh()

        # Alice → Bob: Bob's one-time key is claimed, the megolm key goes by to-device.
        await alice.send(room_id, "the eagle lands at noon")
        await bob.sync_until(lambda: "the eagle lands at noon" in bob.bodies(), "alice's message")
        # Bob → Alice.
        await bob.send(room_id, "understood")
        await alice.sync_until(lambda: "understood" in alice.bodies(), "bob's reply")
        assert alice.undecryptable == [] and bob.undecryptable == []
        # What the server saw of it: ciphertext only.
        event = next(e for e in bob.decrypted if e.body == "the eagle lands at noon")
        assert event.decrypted and event.sender == alice.client.user_id

        # Alice logs in on a second device.
        alice2 = Peer(server_url, tmp_path / "alice2-store", alice.client.user_id)
        login = await alice2.client.login(PASSWORD, device_name="alice's laptop")
        assert isinstance(login, LoginResponse), login
        await alice2.sync()
        assert alice2.client.device_id != alice.client.device_id
        # Bob hears of the new device through /sync device_lists.changed.
        await bob.sync_until(
            lambda: alice.client.user_id in bob.device_list_changes
            and alice2.client.device_id in bob.client.device_store[alice.client.user_id],
            "alice's new device",
        )
        # nio shares an existing megolm session only with the devices it had
        # when it first shared it; start a new one so the new device is included.
        bob.client.invalidate_outbound_session(room_id)
        await bob.send(room_id, "welcome, laptop")
        await alice2.sync_until(lambda: "welcome, laptop" in alice2.bodies(), "bob's message on the new device")
        await alice.sync_until(lambda: "welcome, laptop" in alice.bodies(), "bob's message on the first device")
        # The new device can write too, and both others decrypt it.
        await alice2.keep_keys_fresh()
        await alice2.send(room_id, "typed on the laptop")
        await bob.sync_until(lambda: "typed on the laptop" in bob.bodies(), "the laptop's message")
        await alice.sync_until(lambda: "typed on the laptop" in alice.bodies(), "own other device's message")
    finally:
        for peer in (alice, bob, alice2):
            if peer is not None:
                await peer.client.close()
