"""PUT /_matrix/federation/v1/send/{txnId} through the real HTTP stack, from a
fake remote server that signs its requests and its PDUs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.signing import SigningKey
from tests.api.conftest import MakeClient
from tests.api.federation_api_support import (
    FED,
    REMOTE,
    Client,
    client_in_remote_room,
    hs_of,
    signed_request,
    transaction,
    trust,
)
from tests.federation_dag import CREATOR, ROOM, VERSION, Dag, Room
from tests.federation_support import FakeServer

EVIL = FakeServer("evil.test")


@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, Room]:
    return await client_in_remote_room(make_client)


def message(room: Room, text: str, prev: Event | None = None) -> Event:
    return room.dag.event(
        "m.room.message",
        CREATOR,
        {"msgtype": "m.text", "body": text},
        [prev or room.alice_join],
        [room.create, room.creator_join, room.power],
    )


async def send_txn(client: Client, txn_id: str, body: Any, server: FakeServer = REMOTE) -> Any:
    return await signed_request(client, "PUT", f"{FED}/v1/send/{txn_id}", body, server)


async def test_a_pdu_is_received_into_the_room(setup: tuple[Client, Room]) -> None:
    client, room = setup
    hello = message(room, "hello")
    assert await send_txn(client, "t1", transaction(dict(hello.pdu))) == (
        200,
        {"pdus": {hello.event_id: {}}},
    )
    events = hs_of(client).rooms.events
    stored = await events.get_event(hello.event_id)
    assert stored is not None and not stored.rejected and not stored.outlier
    assert [e for e, _ in await events.forward_extremities(ROOM)] == [hello.event_id]


async def test_an_unsigned_request_is_401(setup: tuple[Client, Room]) -> None:
    client, _ = setup
    forger = FakeServer("remote.test", SigningKey.generate("r1"))
    status, body = await send_txn(client, "t1", transaction(), forger)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_the_body_origin_must_be_the_signing_server(setup: tuple[Client, Room]) -> None:
    client, room = setup
    hello = message(room, "hello")
    status, body = await send_txn(client, "t1", transaction(dict(hello.pdu), origin="other.test"))
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert await hs_of(client).rooms.events.get_event(hello.event_id) is None


@pytest.mark.parametrize(("pdus", "edus"), [(51, 0), (0, 101)])
async def test_too_many_pdus_or_edus_is_400(
    setup: tuple[Client, Room], pdus: int, edus: int
) -> None:
    client, _ = setup
    body = transaction(
        *({"room_id": ROOM} for _ in range(pdus)),
        edus=[{"edu_type": "m.typing", "content": {}}] * edus,
    )
    status, answer = await send_txn(client, "t1", body)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


@pytest.mark.parametrize("body", [{"origin": "remote.test"}, {"origin": "remote.test", "pdus": {}}])
async def test_malformed_transactions_are_400(setup: tuple[Client, Room], body: Any) -> None:
    client, _ = setup
    status, answer = await send_txn(client, "t1", body)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


async def test_a_replayed_transaction_gets_the_first_answer(setup: tuple[Client, Room]) -> None:
    client, room = setup
    first = message(room, "first")
    answer = await send_txn(client, "t1", transaction(dict(first.pdu)))
    assert answer == (200, {"pdus": {first.event_id: {}}})
    # Same txn ID, other content: the completed transaction's answer, nothing processed.
    second = message(room, "second", first)
    assert await send_txn(client, "t1", transaction(dict(second.pdu))) == answer
    assert await hs_of(client).rooms.events.get_event(second.event_id) is None
    # A new txn ID is processed.
    assert await send_txn(client, "t2", transaction(dict(second.pdu))) == (
        200,
        {"pdus": {second.event_id: {}}},
    )


async def test_a_pdu_with_a_forged_signature_is_dropped(setup: tuple[Client, Room]) -> None:
    client, room = setup
    genuine = message(room, "forged")
    unsigned = {k: v for k, v in genuine.pdu.items() if k not in ("hashes", "signatures")}
    # Same server and key ID, another key: what an impersonator can produce.
    forged_pdu = hash_and_sign_event(VERSION, unsigned, "remote.test", SigningKey.generate("r1"))
    forged = Event.from_pdu(VERSION, forged_pdu)
    status, answer = await send_txn(client, "t1", transaction(forged_pdu))
    assert status == 200
    assert set(answer["pdus"]) == {forged.event_id}
    assert "signature" in answer["pdus"][forged.event_id]["error"].lower()
    assert await hs_of(client).rooms.events.get_event(forged.event_id) is None


async def test_a_pdu_the_auth_rules_refuse_is_rejected(setup: tuple[Client, Room]) -> None:
    client, room = setup
    intruder = room.dag.event(
        "m.room.message",
        "@intruder:remote.test",  # never joined the room
        {"body": "let me in"},
        [room.alice_join],
        [room.create, room.power],
    )
    status, answer = await send_txn(client, "t1", transaction(dict(intruder.pdu)))
    assert status == 200
    assert "not allowed" in answer["pdus"][intruder.event_id]["error"]
    stored = await hs_of(client).rooms.events.get_event(intruder.event_id)
    assert stored is not None and stored.rejected
    events = hs_of(client).rooms.events
    assert [e for e, _ in await events.forward_extremities(ROOM)] == [room.alice_join.event_id]


async def test_a_pdu_for_an_unknown_room_gets_an_error(setup: tuple[Client, Room]) -> None:
    client, _ = setup
    other = Dag(room_id="!other:remote.test")
    create = other.event("m.room.create", CREATOR, {"room_version": "10"}, [], [], "")
    status, answer = await send_txn(client, "t1", transaction(dict(create.pdu)))
    assert status == 200
    assert answer["pdus"][create.event_id]["error"].startswith("this server is not in room")
    assert await hs_of(client).rooms.events.get_event(create.event_id) is None


async def test_a_server_denied_by_the_room_acl_gets_an_error(setup: tuple[Client, Room]) -> None:
    client, room = setup
    acl = room.dag.event(
        "m.room.server_acl",
        CREATOR,
        {"allow": ["*"], "deny": ["evil.test"]},
        [room.alice_join],
        [room.create, room.creator_join, room.power],
        "",
    )
    assert await send_txn(client, "t1", transaction(dict(acl.pdu))) == (
        200,
        {"pdus": {acl.event_id: {}}},
    )
    await trust(client, EVIL)
    hello = message(room, "from a denied server", acl)
    status, answer = await send_txn(
        client, "t1", transaction(dict(hello.pdu), origin="evil.test"), EVIL
    )
    assert status == 200
    assert "acl" in answer["pdus"][hello.event_id]["error"].lower()
    assert await hs_of(client).rooms.events.get_event(hello.event_id) is None


async def test_one_transaction_per_origin_at_a_time(
    setup: tuple[Client, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, room = setup
    handler = hs_of(client).federation_events
    gate, entered = asyncio.Event(), asyncio.Event()
    original = handler.on_receive_pdu

    async def held(origin: str, event: Event) -> Any:
        entered.set()
        await gate.wait()
        return await original(origin, event)

    monkeypatch.setattr(handler, "on_receive_pdu", held)
    hello = message(room, "hello")
    first = asyncio.create_task(send_txn(client, "t1", transaction(dict(hello.pdu))))
    await asyncio.wait_for(entered.wait(), 10)
    status, answer = await send_txn(client, "t2", transaction())
    assert (status, answer["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    retry = asyncio.create_task(send_txn(client, "t1", transaction(dict(hello.pdu))))
    await asyncio.sleep(0.1)
    gate.set()
    expected = (200, {"pdus": {hello.event_id: {}}})
    assert await first == expected
    assert await retry == expected


class RecordingEdus:
    def __init__(self) -> None:
        self.received: list[tuple[str, str, dict[str, Any]]] = []

    async def on_edu(self, origin: str, edu_type: str, content: dict[str, Any]) -> None:
        if edu_type == "m.broken":
            raise RuntimeError("boom")
        self.received.append((origin, edu_type, content))

    async def close(self) -> None:
        """The Homeserver closes its EDU service on shutdown."""


async def test_edus_go_to_the_edu_service_and_a_failure_fails_nothing(
    setup: tuple[Client, Room],
) -> None:
    client, room = setup
    edus = RecordingEdus()
    hs_of(client).federation_edus = edus
    hello = message(room, "hello")
    body = transaction(
        dict(hello.pdu),
        edus=[
            {"edu_type": "m.broken", "content": {}},
            {"edu_type": "m.typing", "content": {"room_id": ROOM}},
            "not an EDU",
        ],
    )
    assert await send_txn(client, "t1", body) == (200, {"pdus": {hello.event_id: {}}})
    assert edus.received == [("remote.test", "m.typing", {"room_id": ROOM})]


async def test_an_authenticated_request_wakes_the_origins_queue(
    setup: tuple[Client, Room], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = setup
    woken: list[str] = []

    async def on_inbound_request(origin: str) -> None:
        woken.append(origin)

    sender = hs_of(client).federation_sender
    assert sender is not None
    monkeypatch.setattr(sender, "on_inbound_request", on_inbound_request)
    assert (await send_txn(client, "t1", transaction()))[0] == 200
    forger = FakeServer("remote.test", SigningKey.generate("r1"))
    assert (await send_txn(client, "t2", transaction(), forger))[0] == 401
    assert woken == ["remote.test"]
