"""Real clients against a real `ranvier serve`: matrix-js-sdk's room tag calls
(``setRoomTag``, which failed against Ranvier before tags were served) and
ignore list, and matrix-nio seeing tags (``TagEvent``) and no longer seeing an
ignored user's messages, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    TagEvent,
)

from tests.e2e.harness import Server, free_port, init_config, postgres_database
from tests.e2e.test_js_sdk import JS_DIR, NODE, _register

pytestmark = pytest.mark.e2e

SYNC_DEADLINE_S = 15


@pytest.fixture(params=["sqlite", "postgresql"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    config = init_config(tmp_path)
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    if request.param == "postgresql":
        async with postgres_database() as dsn:
            env["RANVIER_DATABASE"] = dsn
            async for running in _running(config, env):
                yield running
    else:
        async for running in _running(config, env):
            yield running


async def _running(config: Path, env: dict[str, str]) -> AsyncIterator[Server]:
    server = Server(config, free_port(), **env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
        yield server
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()


async def test_matrix_js_sdk_tags_and_ignores(server: Server) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    await _register(server.base_url, "jsuser", "js-password-1")
    process = await asyncio.create_subprocess_exec(
        str(NODE),
        "tags.mjs",
        server.base_url,
        "jsuser",
        "js-password-1",
        "@spammer:localhost",
        cwd=JS_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    output = stdout.decode()
    assert process.returncode == 0, f"{output}\n{stderr.decode()}\n{server.log()[-3000:]}"
    (line,) = [x for x in output.splitlines() if x.startswith("RESULT ")]
    outcome = json.loads(line.removeprefix("RESULT "))
    assert outcome["syncedTags"] == {"m.favourite": {"order": 0.5}, "u.work": {}}
    assert outcome["fetched"] == {"m.favourite": {"order": 0.5}, "u.work": {}}
    assert outcome["afterDelete"] == {"m.favourite": {"order": 0.5}}
    assert outcome["ignored"] == ["@spammer:localhost"]


async def _registered(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, "")
    response = await client.register(name, f"{name}-password-1", device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    first = await client.sync(timeout=0, full_state=True)
    assert isinstance(first, SyncResponse), first
    return client


async def _sync_until(client: AsyncClient, condition: Any, what: str) -> None:
    deadline = time.monotonic() + SYNC_DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} never saw: {what}")
        response = await client.sync(timeout=3000)
        assert isinstance(response, SyncResponse), response


async def _put(client: AsyncClient, path: str, body: dict[str, Any]) -> None:
    """What nio has no call for: a PUT with its access token."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with aiohttp.ClientSession() as session:
        url = f"{client.homeserver}/_matrix/client/v3{path}"
        async with session.put(url, json=body, headers=headers) as response:
            assert response.status == 200, await response.text()


async def test_matrix_nio_sees_tags_and_stops_seeing_the_ignored(server: Server) -> None:
    alice = await _registered(server.base_url, "alice")
    bob = await _registered(server.base_url, "bob")
    tags: list[dict[str, Any]] = []
    texts: list[str] = []
    alice.add_room_account_data_callback(lambda room, event: tags.append(event.tags), TagEvent)
    alice.add_event_callback(lambda room, event: texts.append(event.body), RoomMessageText)
    try:
        created = await alice.room_create(name="Lobby", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await _sync_until(bob, lambda: room_id in bob.invited_rooms, "the invite")
        assert isinstance(await bob.join(room_id), JoinResponse)

        tag_path = f"/user/{quote(alice.user_id)}/rooms/{quote(room_id)}/tags/u.friends"
        await _put(alice, tag_path, {"order": 0.1})
        await _sync_until(alice, lambda: {"u.friends": {"order": 0.1}} in tags, "the tag")

        sent = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert isinstance(sent, RoomSendResponse), sent
        await _sync_until(alice, lambda: "hi" in texts, "bob's message")

        ignore_path = f"/user/{quote(alice.user_id)}/account_data/m.ignored_user_list"
        await _put(alice, ignore_path, {"ignored_users": {bob.user_id: {}}})
        for body in ("ignored 1", "ignored 2"):
            await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "me"})
        await _sync_until(alice, lambda: "me" in texts, "her own message")
        assert texts == ["hi", "me"]
    finally:
        await alice.close()
        await bob.close()
