"""Room upgrade through a real `ranvier serve` with matrix-nio clients (on
SQLite and PostgreSQL) and matrix-js-sdk (Client-Server API, "Room Upgrades").

Alice upgrades a public room with POST /rooms/{roomId}/upgrade (nio's own
``room_upgrade`` emulates it client-side, so the request is sent raw through
nio's transport); Bob sees the tombstone through /sync, follows it to the new
room and joins it; the alias resolves to the new room; the old room is closed
to ordinary members.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomResolveAliasResponse,
    RoomSendError,
    RoomSendResponse,
    RoomUpgradeEvent,
    RoomVisibility,
)

from tests.e2e.harness import Server, free_port, init_config
from tests.e2e.test_js_sdk import JS_DIR, NODE, _register
from tests.e2e.test_nio_chat import _registered, _sync_until, server_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


async def _upgrade(client: AsyncClient, room_id: str, version: str) -> str:
    response = await client.send(
        "POST",
        f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/upgrade",
        json.dumps({"new_version": version}),
        headers={"Authorization": f"Bearer {client.access_token}"},
    )
    body = await response.json()
    assert response.status == 200, body
    replacement: str = body["replacement_room"]
    return replacement


async def test_nio_members_follow_the_tombstone_to_the_new_room(server_url: str) -> None:  # noqa: F811
    alice = await _registered(server_url, "alice")
    bob = await _registered(server_url, "bob")
    tombstones: list[RoomUpgradeEvent] = []
    bob.add_event_callback(lambda room, event: tombstones.append(event), RoomUpgradeEvent)
    received: list[Any] = []
    alice.add_event_callback(lambda room, event: received.append(event), RoomMessageText)
    try:
        created = await alice.room_create(
            visibility=RoomVisibility.public,
            alias="townhall",
            name="Town hall",
            topic="Everyone welcome",
            room_version="10",
        )
        assert isinstance(created, RoomCreateResponse), created
        old = created.room_id
        joined = await bob.join(old)
        assert isinstance(joined, JoinResponse), joined
        await _sync_until(bob, lambda: old in bob.rooms, "the old room")

        new = await _upgrade(alice, old, "12")
        assert new != old

        # Bob's client learns of the upgrade from the old room's timeline.
        await _sync_until(bob, lambda: bob.rooms[old].replacement_room == new, "the tombstone")
        assert [event.replacement_room for event in tombstones] == [new]
        assert tombstones[0].sender == alice.user_id

        # The alias moved with the room.
        resolved = await bob.room_resolve_alias("#townhall:localhost")
        assert isinstance(resolved, RoomResolveAliasResponse), resolved
        assert resolved.room_id == new

        # Bob follows it: the join rule (public) came along, so he may join.
        joined = await bob.join(new)
        assert isinstance(joined, JoinResponse), joined
        await _sync_until(bob, lambda: new in bob.rooms, "the new room")
        assert bob.rooms[new].name == "Town hall"
        assert bob.rooms[new].topic == "Everyone welcome"
        assert bob.rooms[new].room_version == "12"

        sent = await bob.room_send(new, "m.room.message", {"msgtype": "m.text", "body": "moved"})
        assert isinstance(sent, RoomSendResponse), sent
        await _sync_until(
            alice, lambda: any(e.event_id == sent.event_id for e in received), "bob's message"
        )

        # The old room is for moderators only now.
        refused = await bob.room_send(old, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert isinstance(refused, RoomSendError), refused
        assert refused.status_code == "M_FORBIDDEN"
    finally:
        await alice.close()
        await bob.close()


def test_js_sdk_upgrade_room_and_follow_the_tombstone(tmp_path: Path) -> None:
    """matrix-js-sdk (Element's SDK): ``client.upgradeRoom``, then a second
    member follows the tombstone and the SDK links both rooms in its upgrade
    history (it checks the predecessor against the tombstone)."""
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    server = Server(
        init_config(tmp_path),
        free_port(),
        RANVIER_REGISTRATION_ENABLED="true",
        RANVIER_RATELIMIT_ENABLED="false",
    )
    try:

        async def prepare() -> None:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session)
            for name in ("jsalice", "jsbob"):
                await _register(server.base_url, name, "js-password-1")

        asyncio.run(prepare())
        result = subprocess.run(
            [str(NODE), "upgrade.mjs", server.base_url, "jsalice", "jsbob", "js-password-1"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()[-3000:]}"
        (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
        outcome = json.loads(line.removeprefix("RESULT "))
        old, new = outcome["old_room"], outcome["new_room"]
        assert new != old
        assert outcome["tombstone_target"] == new
        assert outcome["predecessor_room"] == old
        assert outcome["history"] == [old, new]
        assert outcome["new_room_version"] == "12"
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()
