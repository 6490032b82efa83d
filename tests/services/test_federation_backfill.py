"""Backfill: a server that joined a remote room pages its history through
/backfill (Server-Server API, "Backfilling and retrieving missing events"),
with two in-process servers on both engines (tests/services/federation_network.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.filters import RoomEventFilter
from ranvier.services.federation import backfill as backfill_module
from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from ranvier.services.sync import parse_pagination_token
from tests.conftest import ENGINES
from tests.services.federation_network import NOW, Network, Server, make_network

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
#: What A's public_chat room starts with, oldest first (room_creation.py).
ROOM_START = [
    ("m.room.create", ""),
    ("m.room.member", ALICE),
    ("m.room.power_levels", ""),
    ("m.room.join_rules", ""),
    ("m.room.history_visibility", ""),
    ("m.room.guest_access", ""),
]


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


async def room_with_history(network: Network, messages: int) -> str:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await create_room(
        a.hs.rooms, Requester(ALICE, "A"), {"preset": "public_chat", "room_version": "10"}
    )
    for n in range(messages):
        await a.hs.rooms.send_event(
            ALICE, room_id, EventSpec("m.room.message", {"msgtype": "m.text", "body": f"m{n}"})
        )
    await b.joins.join_remote_room(BOB, room_id, ["a.test"])
    return room_id


async def page(
    server: Server, room_id: str, from_token: str | None, limit: int
) -> dict[str, Any]:
    return await server.hs.pagination.messages(
        BOB,
        None,
        room_id,
        from_token=from_token,
        to_token=None,
        direction="b",
        limit=limit,
        event_filter=RoomEventFilter(),
    )


async def all_pages(server: Server, room_id: str, limit: int) -> list[dict[str, Any]]:
    """Every event /messages gives going backwards from the end, newest first."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(50):
        answer = await page(server, room_id, token, limit)
        events.extend(answer["chunk"])
        if "end" not in answer:
            return events
        token = answer["end"]
    raise AssertionError("pagination did not end")


def described(events: list[dict[str, Any]]) -> list[Any]:
    return [
        e["content"]["body"] if e["type"] == "m.room.message" else (e["type"], e.get("state_key"))
        for e in events
    ]


async def test_messages_backwards_pulls_the_history_before_the_join(network: Network) -> None:
    b = network.servers["b.test"]
    room_id = await room_with_history(network, 30)
    assert await b.hs.rooms.events.backward_extremities(room_id, 10) != []

    events = await all_pages(b, room_id, 10)

    expected_oldest_first = [
        *ROOM_START,
        *(f"m{n}" for n in range(30)),
        ("m.room.member", BOB),
    ]
    assert described(events) == list(reversed(expected_oldest_first))
    # All of A's history is held now: no backward extremity is left, and the
    # same pages are served again without asking A.
    assert await b.hs.rooms.events.backward_extremities(room_id, 10) == []
    # One request was enough (A answers up to 100 events, the whole room).
    assert [(o, d) for o, d, _ in network.backfills] == [("b.test", "a.test")]
    assert described(await all_pages(b, room_id, 10)) == described(events)
    assert len(network.backfills) == 1


async def test_backfill_changes_no_current_state_extremity_or_sync_position(
    network: Network,
) -> None:
    b = network.servers["b.test"]
    room_id = await room_with_history(network, 5)
    store = b.hs.rooms.events
    state = await store.current_state_ids(room_id)
    extremities = await store.forward_extremities(room_id)
    position = await store.current_position()

    answer = await page(b, room_id, None, 50)

    assert len(answer["chunk"]) == 1 + 5 + len(ROOM_START)
    assert "end" not in answer
    assert await store.current_state_ids(room_id) == state
    assert await store.forward_extremities(room_id) == extremities
    # Backfilled events take no position of the events stream: /sync sees nothing new.
    assert await store.current_position() == position
    oldest = answer["chunk"][-1]
    stored = await store.get_event(oldest["event_id"])
    assert stored is not None and stored.stream_ordering < 0 and not stored.outlier


async def test_pagination_tokens_inside_backfilled_history_continue_there(
    network: Network,
) -> None:
    b = network.servers["b.test"]
    room_id = await room_with_history(network, 12)

    first = await page(b, room_id, None, 5)
    second = await page(b, room_id, first["end"], 5)

    assert described(first["chunk"]) == [("m.room.member", BOB), "m11", "m10", "m9", "m8"]
    assert described(second["chunk"]) == ["m7", "m6", "m5", "m4", "m3"]
    assert parse_pagination_token(second["end"]) < 0


@pytest.mark.parametrize(
    "answer",
    [[{"garbage": True}], ["not an event"], [], None],
    ids=["bad-pdu", "not-objects", "empty", "unreachable"],
)
async def test_a_server_that_answers_garbage_does_not_break_messages(
    network: Network, answer: Any
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await room_with_history(network, 3)
    if answer is None:
        a.down = True
    else:
        a.backfill_answer = answer

    result = await page(b, room_id, None, 10)

    # Only what B holds: its own join; nothing pulled, nothing stored.
    assert described(result["chunk"]) == [("m.room.member", BOB)]
    assert "end" not in result
    # One server to ask, asked once (a down one is not reached at all).
    assert len(network.backfills) == (0 if answer is None else 1)
    assert await b.hs.rooms.events.backward_extremities(room_id, 10) != []


async def test_a_backfilled_event_that_fails_the_auth_rules_is_not_shown(
    network: Network,
) -> None:
    a, b = network.servers["a.test"], network.servers["b.test"]
    room_id = await room_with_history(network, 3)
    store_a = a.hs.rooms.events
    last = (await store_a.room_events_in_stream_range(room_id, 10**9, 0, 1, "b"))[0]
    assert last.event.type == "m.room.member"  # Bob's join; the message before it:
    newest_message = await store_a.get_event(last.event.prev_event_ids[0])
    assert newest_message is not None
    # Signed by a.test, so it passes verification, but its sender never joined.
    version = newest_message.event.room_version
    forged = hash_and_sign_event(
        version,
        {
            "type": "m.room.message",
            "room_id": room_id,
            "sender": "@mallory:a.test",
            "content": {"msgtype": "m.text", "body": "forged"},
            "origin_server_ts": NOW,
            "depth": newest_message.event.depth + 1,
            "prev_events": [newest_message.event_id],
            "auth_events": list(newest_message.event.auth_event_ids),
        },
        "a.test",
        network.keys["a.test"],
    )
    real = await a.reads.backfill("b.test", room_id, [newest_message.event_id], 100)
    a.backfill_answer = [forged, *real["pdus"]]

    answer = await page(b, room_id, None, 50)

    assert described(answer["chunk"]) == [
        ("m.room.member", BOB),
        "m2",
        "m1",
        "m0",
        *reversed(ROOM_START),
    ]
    forged_id = Event.from_pdu(version, forged).event_id
    stored = await b.hs.rooms.events.get_event(forged_id)
    assert stored is not None and stored.rejected


class _SilentServer:
    """A /backfill that never answers."""

    def __init__(self) -> None:
        self.asked = 0

    async def backfill(self, *args: Any) -> list[Any]:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_server_that_never_answers_is_given_up_after_the_timeout(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = network.servers["b.test"]
    room_id = await room_with_history(network, 3)
    silent = _SilentServer()
    monkeypatch.setattr(b.hs.federation_backfill, "remote", silent)
    monkeypatch.setattr(backfill_module, "BACKFILL_TIMEOUT_S", 0.05)

    result = await asyncio.wait_for(page(b, room_id, None, 10), 5)

    assert described(result["chunk"]) == [("m.room.member", BOB)]
    assert silent.asked == 1
