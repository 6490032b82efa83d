"""A redaction that reaches a server before the event it redacts, which comes
later through /backfill (Server-Server API, "Backfilling and retrieving
missing events"; room versions' "Handling redactions"): the event is stored
and served redacted and never counts in relations. Two in-process servers,
both engines (tests/services/federation_network.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.services.client_events import serialize_events
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from tests.conftest import ENGINES
from tests.services.federation_network import Network, Server, make_network
from tests.services.test_federation_backfill import all_pages

ALICE = "@alice:a.test"
BOB = "@bob:b.test"


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


async def send(server: Server, room_id: str, content: dict[str, Any]) -> str:
    stored = await server.hs.rooms.send_event(
        ALICE, room_id, EventSpec("m.room.message", {"msgtype": "m.text", **content})
    )
    return stored.event_id


async def held_by(server: Server, event_id: str) -> None:
    for _ in range(500):
        if await server.hs.rooms.events.get_event(event_id) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{event_id} never arrived")


async def test_an_event_backfilled_after_its_redaction_is_served_redacted(
    network: Network,
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await create_room(
        a.hs.rooms, Requester(ALICE, "A"), {"preset": "public_chat", "room_version": "10"}
    )
    root = await send(a, room_id, {"body": "root"})
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    secret = await send(a, room_id, {"body": "secret", **thread})
    kept = await send(a, room_id, {"body": "kept", **thread})
    await b.joins.join_remote_room(BOB, room_id, ["a.test"])
    assert await b.hs.rooms.events.get_event(secret) is None  # history, not held yet

    redaction = await a.hs.rooms.redact(ALICE, room_id, secret, reason="oops", txn=None)
    await held_by(b, redaction)
    events = {e["event_id"]: e for e in await all_pages(b, room_id, 10)}

    assert network.backfills, "the history came through /backfill"
    assert events[secret]["content"] == {}
    assert events[secret]["unsigned"]["redacted_because"]["event_id"] == redaction
    assert events[kept]["content"]["body"] == "kept"
    stored = await b.hs.rooms.events.get_event(secret)
    assert stored is not None and stored.redacted_by == redaction
    body = await b.hs.relations.relations(
        BOB,
        None,
        room_id,
        root,
        rel_type=None,
        event_type=None,
        from_token=None,
        to_token=None,
        direction="b",
        limit=10,
        recurse=None,
    )
    assert [e["event_id"] for e in body["chunk"]] == [kept]
    root_stored = await b.hs.rooms.events.get_event(root)
    assert root_stored is not None
    [served] = await serialize_events(b.hs, [root_stored], user_id=BOB, device_id=None)
    summary = served["unsigned"]["m.relations"]["m.thread"]
    assert summary["count"] == 1 and summary["latest_event"]["event_id"] == kept
