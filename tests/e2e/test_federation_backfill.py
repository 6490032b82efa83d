"""Backfill between two real `ranvier serve` processes over TLS (the set-up
of tests/e2e/test_federation_two_ranvier.py): B joins a room of A that has
history; B's client pages /messages backwards through the 30 messages before
the join to the room's creation, B pulling them with GET /v1/backfill."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.e2e.test_federation_two_ranvier import Node, User, _call, _pair, _register, _say

pytestmark = pytest.mark.e2e


@pytest.fixture
def backfill_nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        if node.server is not None:
            node.server.kill()


async def _all_history(
    session: aiohttp.ClientSession, user: User, room_id: str, limit: int
) -> list[dict[str, Any]]:
    """Every event of /messages backwards from the end, following ``end``, newest first."""
    events: list[dict[str, Any]] = []
    query = f"dir=b&limit={limit}"
    for _ in range(20):
        path = f"/rooms/{quote(room_id, safe='')}/messages?{query}"
        answer = await _call(session, user.node, "GET", path, user.token)
        events.extend(answer["chunk"])
        if "end" not in answer:
            return events
        query = f"dir=b&limit={limit}&from={quote(answer['end'], safe='')}"
    raise AssertionError("pagination did not end")


async def test_a_joining_server_pages_the_history_before_its_join(
    tmp_path: Path, backfill_nodes: list[Node]
) -> None:
    a, b = _pair(tmp_path, backfill_nodes)
    async with aiohttp.ClientSession() as session:
        for node in (a, b):
            await node.start().wait_ready(session)
        alice = await _register(session, a, "alice")
        bob = await _register(session, b, "bob")
        created = await _call(
            session, a, "POST", "/createRoom", alice.token, {"preset": "public_chat"}
        )
        room_id = created["room_id"]
        sent = [f"before the join {n}" for n in range(30)]
        for text in sent:
            await _say(session, alice, room_id, text)
        path = f"/join/{quote(room_id, safe='')}?via={quote(a.server_name, safe='')}"
        assert await _call(session, b, "POST", path, bob.token, {}) == {"room_id": room_id}

        events = await _all_history(session, bob, room_id, 12)
        messages = [e["content"]["body"] for e in events if e["type"] == "m.room.message"]
        assert messages == list(reversed(sent))
        # Bob's join is the newest; the room's creation the oldest.
        assert (events[0]["type"], events[0]["state_key"]) == ("m.room.member", bob.user_id)
        assert events[-1]["type"] == "m.room.create"
        assert len({e["event_id"] for e in events}) == len(events)

        # Backfill changed no state: B's current state of the room equals A's.
        state_path = f"/rooms/{quote(room_id, safe='')}/state"
        state_b = await _call(session, b, "GET", state_path, bob.token)
        state_a = await _call(session, a, "GET", state_path, alice.token)
        assert sorted(e["event_id"] for e in state_b) == sorted(e["event_id"] for e in state_a)

    for node in (a, b):
        assert node.server is not None
        assert node.server.terminate() == 0, node.server.log()
        assert "Traceback" not in node.server.log(), node.server.log()
