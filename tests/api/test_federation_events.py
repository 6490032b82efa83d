"""Reading a room's events over federation through the real HTTP stack: a fake
remote with a user in a room of this server asks for events, state, auth
chains, missing events, backfill and timestamp_to_event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import NOW_MS, MakeClient
from tests.api.federation_api_support import (
    FED,
    REMOTE,
    US,
    Client,
    hs_of,
    q,
    remote_user_joins,
    signed_request,
    trust,
)
from tests.api.rooms_support import ROOMS_CONFIG, User, create_room, make_user, put_state, send
from tests.federation_support import FakeServer

BOB = "@bob:remote.test"
STRANGER = FakeServer("stranger.test")


@dataclass
class Setup:
    client: Client
    alice: User
    room_id: str
    messages: list[str]
    join_id: str


@pytest.fixture
async def setup(make_client: MakeClient) -> Setup:
    client = await make_client({**ROOMS_CONFIG, "server_name": US})
    await trust(client, REMOTE, STRANGER)
    alice = await make_user(client, "alice")
    room_id = await create_room(client, alice, preset="public_chat", room_version="10")
    join = await remote_user_joins(client, room_id, BOB)
    messages = []
    for n in range(3):
        status, body = await send(
            client, alice, room_id, {"msgtype": "m.text", "body": f"{n}"}, f"t{n}"
        )
        assert status == 200
        messages.append(body["event_id"])
    return Setup(client, alice, room_id, messages, join.event_id)


async def get(setup: Setup, uri: str, server: FakeServer = REMOTE) -> tuple[int, Any]:
    return await signed_request(setup.client, "GET", uri, None, server)


async def test_event_answers_a_transaction_with_the_pdu(setup: Setup) -> None:
    status, answer = await get(setup, f"{FED}/v1/event/{q(setup.messages[0])}")
    assert status == 200
    assert answer["origin"] == US
    [pdu] = answer["pdus"]
    assert (pdu["type"], pdu["content"]["body"], pdu["room_id"]) == (
        "m.room.message",
        "0",
        setup.room_id,
    )


async def test_event_unknown_is_404(setup: Setup) -> None:
    status, answer = await get(setup, f"{FED}/v1/event/{q('$nothing')}")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_a_server_not_in_the_room_may_not_read_it(setup: Setup) -> None:
    for uri in (
        f"{FED}/v1/event/{q(setup.messages[0])}",
        f"{FED}/v1/state_ids/{q(setup.room_id)}?event_id={q(setup.messages[0])}",
        f"{FED}/v1/backfill/{q(setup.room_id)}?v={q(setup.messages[0])}&limit=5",
    ):
        status, answer = await get(setup, uri, STRANGER)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), uri


async def test_state_ids_and_state_at_an_event(setup: Setup) -> None:
    room = q(setup.room_id)
    at = q(setup.messages[0])
    status, ids = await get(setup, f"{FED}/v1/state_ids/{room}?event_id={at}")
    assert status == 200
    status, full = await get(setup, f"{FED}/v1/state/{room}?event_id={at}")
    assert status == 200
    state_ids = hs_of(setup.client).rooms.events
    expected = await state_ids.state_at_event(setup.messages[0])
    assert expected is not None
    assert set(ids["pdu_ids"]) == set(expected.values())
    assert setup.join_id in ids["pdu_ids"]
    assert len(full["pdus"]) == len(ids["pdu_ids"])
    assert len(full["auth_chain"]) == len(ids["auth_chain_ids"])
    # The auth chain completes the state: every auth event is in one or the other.
    known = set(ids["pdu_ids"]) | set(ids["auth_chain_ids"])
    assert all(set(p["auth_events"]) <= known for p in full["pdus"] + full["auth_chain"])


async def test_state_ids_without_event_id_is_400(setup: Setup) -> None:
    status, answer = await get(setup, f"{FED}/v1/state_ids/{q(setup.room_id)}")
    assert (status, answer["errcode"]) == (400, "M_MISSING_PARAM")


async def test_event_auth_is_the_events_auth_chain(setup: Setup) -> None:
    uri = f"{FED}/v1/event_auth/{q(setup.room_id)}/{q(setup.messages[0])}"
    status, answer = await get(setup, uri)
    assert status == 200
    types = [p["type"] for p in answer["auth_chain"]]
    assert "m.room.create" in types and "m.room.message" not in types


async def test_get_missing_events_walks_back_from_latest(setup: Setup) -> None:
    uri = f"{FED}/v1/get_missing_events/{q(setup.room_id)}"
    body = {
        "earliest_events": [setup.messages[0]],
        "latest_events": [setup.messages[2]],
        "limit": 10,
    }
    status, answer = await signed_request(setup.client, "POST", uri, body)
    assert status == 200
    assert [p["content"]["body"] for p in answer["events"]] == ["1"]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"earliest_events": []}, "M_MISSING_PARAM"),
        ({"latest_events": "x"}, "M_BAD_JSON"),
        ({"latest_events": [], "limit": -1}, "M_BAD_JSON"),
        ({"latest_events": [], "min_depth": "3"}, "M_BAD_JSON"),
    ],
)
async def test_get_missing_events_bad_bodies(setup: Setup, body: Any, errcode: str) -> None:
    uri = f"{FED}/v1/get_missing_events/{q(setup.room_id)}"
    status, answer = await signed_request(setup.client, "POST", uri, body)
    assert (status, answer["errcode"]) == (400, errcode)


async def test_backfill_returns_events_newest_first(setup: Setup) -> None:
    uri = f"{FED}/v1/backfill/{q(setup.room_id)}?v={q(setup.messages[2])}&limit=3"
    status, answer = await get(setup, uri)
    assert status == 200
    assert [p["content"].get("body") for p in answer["pdus"]] == ["2", "1", "0"]


@pytest.mark.parametrize(
    ("query", "errcode"),
    [
        ("limit=3", "M_MISSING_PARAM"),
        ("v=%24x", "M_MISSING_PARAM"),
        ("v=%24x&limit=z", "M_INVALID_PARAM"),
    ],
)
async def test_backfill_parameters(setup: Setup, query: str, errcode: str) -> None:
    status, answer = await get(setup, f"{FED}/v1/backfill/{q(setup.room_id)}?{query}")
    assert (status, answer["errcode"]) == (400, errcode)


async def test_timestamp_to_event(setup: Setup) -> None:
    base = f"{FED}/v1/timestamp_to_event/{q(setup.room_id)}"
    status, answer = await get(setup, f"{base}?ts={NOW_MS}&dir=b")
    assert status == 200
    # Every event has the fixed clock's timestamp; the last one at or before it.
    assert answer == {"event_id": setup.messages[2], "origin_server_ts": NOW_MS}
    status, answer = await get(setup, f"{base}?ts={NOW_MS + 1}&dir=f")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    status, answer = await get(setup, f"{base}?ts={NOW_MS}&dir=x")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = await get(setup, f"{base}?dir=f")
    assert (status, answer["errcode"]) == (400, "M_MISSING_PARAM")


async def test_a_server_denied_by_the_acl_may_not_read(setup: Setup) -> None:
    alice = setup.alice
    status, _ = await put_state(
        setup.client,
        alice,
        setup.room_id,
        "m.room.server_acl",
        "",
        {"allow": ["*"], "deny": ["remote.test"]},
    )
    assert status == 200
    for uri in (
        f"{FED}/v1/state_ids/{q(setup.room_id)}?event_id={q(setup.messages[0])}",
        f"{FED}/v1/event/{q(setup.messages[0])}",
        f"{FED}/v1/timestamp_to_event/{q(setup.room_id)}?ts=0&dir=f",
    ):
        status, answer = await get(setup, uri)
        assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), uri
