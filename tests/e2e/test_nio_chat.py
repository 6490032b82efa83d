"""Two matrix-nio clients chat through a real `ranvier serve`, on SQLite and PostgreSQL.

Register, create a room, invite, join, exchange messages seen through /sync,
typing and receipts, change topic and name, paginate back with /messages,
leave — the whole flow a chat client goes through, over real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from tests.e2e.harness import Server, free_port, init_config, postgres_database

pytestmark = pytest.mark.e2e

SYNC_DEADLINE_S = 15


@pytest.fixture(params=["sqlite", "postgresql"])
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    config = init_config(tmp_path)
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    async with _database(request.param) as dsn:
        if dsn is not None:
            env["RANVIER_DATABASE"] = dsn
        server = Server(config, free_port(), **env)
        try:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session)
            yield server.base_url
        finally:
            server.kill()
        assert "Traceback" not in server.log(), server.log()


def _database(engine: str) -> Any:
    if engine == "postgresql":
        return postgres_database()

    class _NoDatabase:
        async def __aenter__(self) -> None:
            return None

        async def __aexit__(self, *exc: object) -> None:
            return None

    return _NoDatabase()


async def _registered(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, "")
    response = await client.register(name, f"{name}-password-1", device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    assert client.user_id == f"@{name}:localhost"
    first = await client.sync(timeout=0, full_state=True)
    assert isinstance(first, SyncResponse), first
    return client


async def _sync_until(client: AsyncClient, condition: Callable[[], bool], what: str) -> None:
    """Incremental long-poll syncs until ``condition`` holds."""
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} never saw: {what}")
        response = await client.sync(timeout=3000)
        assert isinstance(response, SyncResponse), response


def _members(client: AsyncClient, room_id: str) -> set[str]:
    room = client.rooms.get(room_id)
    return set() if room is None else set(room.users)


async def test_two_nio_clients_chat(server_url: str) -> None:
    alice = await _registered(server_url, "alice")
    bob = await _registered(server_url, "bob")
    received: dict[str, list[Any]] = {"bob": [], "alice_receipts": []}
    bob.add_event_callback(lambda room, event: received["bob"].append(event), RoomMessageText)
    alice.add_ephemeral_callback(
        lambda room, event: received["alice_receipts"].append(event), ReceiptEvent
    )
    try:
        created = await alice.room_create(name="Lunch", topic="Where to eat", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        await _sync_until(bob, lambda: room_id in bob.invited_rooms, "the invite")
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        await _sync_until(bob, lambda: room_id in bob.rooms, "the joined room")
        assert bob.rooms[room_id].name == "Lunch"
        assert bob.rooms[room_id].topic == "Where to eat"
        await _sync_until(alice, lambda: bob.user_id in _members(alice, room_id), "bob joining")

        # Messages, seen by the other side through /sync.
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "noodles?"}
        )
        assert isinstance(sent, RoomSendResponse), sent
        await _sync_until(
            bob, lambda: any(e.event_id == sent.event_id for e in received["bob"]), "noodles?"
        )
        message = next(e for e in received["bob"] if e.event_id == sent.event_id)
        assert message.body == "noodles?"
        assert message.sender == alice.user_id

        # Typing and receipts.
        await bob.room_typing(room_id, typing_state=True, timeout=20000)
        await _sync_until(
            alice, lambda: bob.user_id in alice.rooms[room_id].typing_users, "bob typing"
        )
        await bob.room_read_markers(room_id, fully_read_event=sent.event_id, read_event=sent.event_id)
        await _sync_until(
            alice,
            lambda: any(
                r.user_id == bob.user_id and r.event_id == sent.event_id
                for e in received["alice_receipts"]
                for r in e.receipts
            ),
            "bob's read receipt",
        )

        # Topic and name changes reach the other member.
        await alice.room_put_state(room_id, "m.room.topic", {"topic": "Noodles at noon"})
        await alice.room_put_state(room_id, "m.room.name", {"name": "Noodle lunch"})
        await _sync_until(
            bob,
            lambda: bob.rooms[room_id].topic == "Noodles at noon"
            and bob.rooms[room_id].name == "Noodle lunch",
            "the new topic and name",
        )

        # A burst of messages, then paginate back from the end with /messages.
        bodies = [f"message {n}" for n in range(15)]
        for body in bodies:
            response = await bob.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": body}
            )
            assert isinstance(response, RoomSendResponse), response
        # No `from`: MSC3567 made it optional; backwards from the newest event.
        page = await alice.room_messages(room_id, start=None, limit=10)
        assert isinstance(page, RoomMessagesResponse), page
        newest = [e.body for e in page.chunk if isinstance(e, RoomMessageText)]
        assert newest == list(reversed(bodies))[:10]
        older = await alice.room_messages(room_id, start=page.end, limit=10)
        assert isinstance(older, RoomMessagesResponse), older
        rest = [e.body for e in older.chunk if isinstance(e, RoomMessageText)]
        assert rest[:5] == list(reversed(bodies))[10:]
        assert "noodles?" in rest

        # Bob leaves; Alice sees it.
        await bob.room_leave(room_id)
        await _sync_until(
            alice, lambda: bob.user_id not in _members(alice, room_id), "bob leaving"
        )
    finally:
        await alice.close()
        await bob.close()
        await asyncio.sleep(0)
