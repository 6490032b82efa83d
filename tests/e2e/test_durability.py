"""Nothing acknowledged is lost: kill -9 a server in the middle of a burst of
sends, restart it, and every event whose send returned 200 is there; /sync
resumes from the token issued before the crash (DESIGN.md, principle 5)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Server, free_port, init_config, postgres_database

pytestmark = pytest.mark.e2e

KILL_AFTER_ACKS = 40
SENDERS = 4


@asynccontextmanager
async def _dsn(engine: str) -> AsyncIterator[dict[str, str]]:
    if engine == "sqlite":
        yield {}
    else:
        async with postgres_database() as dsn:
            yield {"RANVIER_DATABASE": dsn}


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_acknowledged_sends_survive_kill_9(engine: str, tmp_path: Path) -> None:
    config = init_config(tmp_path)
    async with _dsn(engine) as db_env, aiohttp.ClientSession() as session:
        env = {
            "RANVIER_REGISTRATION_ENABLED": "true",
            "RANVIER_RATELIMIT_ENABLED": "false",
            **db_env,
        }
        port = free_port()
        server = Server(config, port, **env)
        try:
            await server.wait_ready(session)
            base = server.base_url
            token, room_id, since = await _setup(session, base)
            acknowledged: list[str] = []
            killed = asyncio.Event()

            async def sender(number: int) -> None:
                txn = 0
                while not killed.is_set():
                    txn += 1
                    url = (
                        f"{base}/_matrix/client/v3/rooms/{room_id}/send/m.room.message/"
                        f"s{number}-{txn}"
                    )
                    body = {"msgtype": "m.text", "body": f"burst {number}/{txn}"}
                    try:
                        async with session.put(url, json=body, headers=_auth(token)) as response:
                            # Before the kill every send must succeed: an error status
                            # would otherwise keep the burst going without acks, forever.
                            assert response.status == 200, await response.text()
                            acknowledged.append((await response.json())["event_id"])
                    except (TimeoutError, aiohttp.ClientError):
                        return
                    if len(acknowledged) >= KILL_AFTER_ACKS and not killed.is_set():
                        # Mid-burst: the other senders still have requests in flight.
                        server.process.send_signal(signal.SIGKILL)
                        killed.set()

            await asyncio.gather(*(sender(n) for n in range(SENDERS)))
            server.process.wait(timeout=10)
            assert server.process.returncode == -signal.SIGKILL
        finally:
            server.kill()

        restarted = Server(config, port, **env)
        try:
            await restarted.wait_ready(session)
            for event_id in acknowledged:
                url = f"{restarted.base_url}/_matrix/client/v3/rooms/{room_id}/event/{event_id}"
                async with session.get(url, headers=_auth(token)) as response:
                    assert response.status == 200, (event_id, await response.text())
            synced = await _sync_event_ids(session, restarted.base_url, token, room_id, since)
            assert set(acknowledged) <= synced, set(acknowledged) - synced
            assert len(acknowledged) >= KILL_AFTER_ACKS
        finally:
            restarted.kill()
        assert "Traceback" not in restarted.log(), restarted.log()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _setup(session: aiohttp.ClientSession, base: str) -> tuple[str, str, str]:
    body = {"username": "durable", "password": "durable-pw-1", "auth": {"type": "m.login.dummy"}}
    async with session.post(f"{base}/_matrix/client/v3/register", json=body) as response:
        assert response.status == 200, await response.text()
        token: str = (await response.json())["access_token"]
    async with session.post(
        f"{base}/_matrix/client/v3/createRoom", json={"name": "burst"}, headers=_auth(token)
    ) as response:
        assert response.status == 200, await response.text()
        room_id: str = (await response.json())["room_id"]
    async with session.get(
        f"{base}/_matrix/client/v3/sync", params={"timeout": "0"}, headers=_auth(token)
    ) as response:
        assert response.status == 200, await response.text()
        since: str = (await response.json())["next_batch"]
    return token, room_id, since


async def _sync_event_ids(
    session: aiohttp.ClientSession, base: str, token: str, room_id: str, since: str
) -> set[str]:
    """Every timeline event ID of the room from ``since`` on, following /sync."""
    seen: set[str] = set()
    big_timeline = json.dumps({"room": {"timeline": {"limit": 1000}}})
    params: dict[str, Any] = {"since": since, "timeout": "0", "filter": big_timeline}
    async with session.get(f"{base}/_matrix/client/v3/sync", params=params, headers=_auth(token)) as response:
        assert response.status == 200, await response.text()
        payload = await response.json()
    room = payload["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is False
    seen.update(event["event_id"] for event in room["timeline"]["events"])
    return seen
