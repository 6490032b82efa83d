"""EDUs between two in-process homeservers (tests/services/federation_network.py):
typing, receipts, presence, to-device messages, device lists and cross-signing
keys leave one server through its federation sender and arrive at the other's
FederationEdus.on_edu; forged EDUs (a user of another server than the origin,
a user not in the room, a server the room's ACL denies) are dropped; remote
users' keys are queried and claimed across the servers. Both engines."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ranvier.services.requester import Requester
from ranvier.services.room_creation import create_room
from ranvier.services.rooms import EventSpec
from tests.api.e2e_support import CrossSigning, Device
from tests.conftest import ENGINES
from tests.services.federation_network import Network, Server, make_network

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
CAROL = "@carol:c.test"


@pytest.fixture(params=ENGINES)
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    async for network in make_network(request.param, tmp_path):
        await network.servers["a.test"].hs.accounts.register("alice", None, login=False)
        await network.servers["b.test"].hs.accounts.register("bob", None, login=False)
        yield network


async def eventually(read: Callable[[], Awaitable[object]], expected: object) -> None:
    value = None
    for _ in range(300):
        value = await read()
        if value == expected:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{value!r} != {expected!r}")


async def settle() -> None:
    """Let the senders' tasks deliver what is queued."""
    for _ in range(20):
        await asyncio.sleep(0.005)


def servers(network: Network) -> tuple[Server, Server]:
    return network.servers["a.test"], network.servers["b.test"]


async def joined_room(network: Network) -> str:
    a, b = servers(network)
    room_id = await create_room(a.hs.rooms, Requester(ALICE, "A"), {"preset": "public_chat"})
    await b.joins.join_remote_room(BOB, room_id, ["a.test"])
    return room_id


async def login(server: Server, user_id: str, device_id: str) -> Device:
    await server.hs.accounts.login(
        user_id, device_id=device_id, initial_display_name=None, want_refresh=False, ip=None
    )
    return Device(user_id, device_id, "unused")


async def upload_keys(server: Server, device: Device, one_time: int = 0) -> None:
    body: dict[str, Any] = {"device_keys": device.device_keys()}
    if one_time:
        body["one_time_keys"] = {
            f"signed_curve25519:K{n}": device.signed_key(f"otk{n}") for n in range(one_time)
        }
    await server.hs.e2e_keys.upload_keys(Requester(device.user_id, device.device_id), body)


async def send_message(server: Server, room_id: str, body: str) -> str:
    spec = EventSpec("m.room.message", {"body": body})
    return (await server.hs.rooms.send_event(ALICE, room_id, spec)).event.event_id


def edus_of_type(network: Network, edu_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (origin, destination, edu["content"])
        for origin, destination, edu in network.edus
        if edu["edu_type"] == edu_type
    ]


# --- typing ------------------------------------------------------------------------------


async def test_typing_of_a_remote_user_reaches_local_sync(network: Network) -> None:
    a, b = servers(network)
    room_id = await joined_room(network)
    await b.hs.typing.set_typing(room_id, BOB, True, 30_000)
    await eventually(lambda: _typing(a, room_id), [BOB])
    # Alice's /sync provider shows it.
    changes = await a.hs.typing.changes_for_user(ALICE, 0, a.hs.typing.current_position())
    assert changes == {room_id: {"type": "m.typing", "content": {"user_ids": [BOB]}}}
    await b.hs.typing.set_typing(room_id, BOB, False)
    await eventually(lambda: _typing(a, room_id), [])
    # Alice's typing goes the other way.
    await a.hs.typing.set_typing(room_id, ALICE, True, 30_000)
    await eventually(lambda: _typing(b, room_id), [ALICE])


async def _typing(server: Server, room_id: str) -> list[str]:
    return server.hs.typing.typing_user_ids(room_id)


async def test_forged_typing_edus_are_dropped(network: Network) -> None:
    a, _ = servers(network)
    room_id = await joined_room(network)
    edus = a.hs.federation_edus
    # b.test speaking for a user of a.test, c.test for bob, bob in a room he is not in.
    await edus.on_edu("b.test", "m.typing", {"room_id": room_id, "user_id": ALICE, "typing": True})
    await edus.on_edu("c.test", "m.typing", {"room_id": room_id, "user_id": BOB, "typing": True})
    await edus.on_edu(
        "b.test", "m.typing", {"room_id": room_id, "user_id": "@eve:b.test", "typing": True}
    )
    # Malformed ones: no exception, nothing stored.
    for content in ({"room_id": room_id, "user_id": BOB, "typing": "yes"}, [], {"user_id": 5}):
        await edus.on_edu("b.test", "m.typing", content)
    assert a.hs.typing.typing_user_ids(room_id) == []
    # The same EDU, from the right origin about a member, is accepted.
    await edus.on_edu("b.test", "m.typing", {"room_id": room_id, "user_id": BOB, "typing": True})
    assert a.hs.typing.typing_user_ids(room_id) == [BOB]


async def test_the_room_acl_applies_to_typing_and_receipts(network: Network) -> None:
    a, _ = servers(network)
    room_id = await joined_room(network)
    await a.hs.rooms.send_state_event(
        ALICE, room_id, "m.room.server_acl", "", {"allow": ["a.test"], "deny": []}
    )
    message = await send_message(a, room_id, "x")
    edus = a.hs.federation_edus
    await edus.on_edu("b.test", "m.typing", {"room_id": room_id, "user_id": BOB, "typing": True})
    receipt = {room_id: {"m.read": {BOB: {"event_ids": [message], "data": {"ts": 5}}}}}
    await edus.on_edu("b.test", "m.receipt", receipt)
    assert a.hs.typing.typing_user_ids(room_id) == []
    assert await a.hs.receipts.store.get(room_id, "m.read", BOB, None) is None


# --- receipts ------------------------------------------------------------------------------


async def test_a_receipt_of_a_remote_user_is_stored_and_synced(network: Network) -> None:
    a, b = servers(network)
    room_id = await joined_room(network)
    event_id = await send_message(a, room_id, "read me")
    await eventually(lambda: _has_event(b, event_id), True)
    await b.hs.receipts.post_receipt(BOB, room_id, "m.read", event_id)
    await eventually(lambda: _receipt_event(a, room_id, BOB), event_id)
    receipts = await a.hs.receipts.changes_for_user(
        ALICE, 0, await a.hs.receipts.current_position()
    )
    content = receipts[room_id]["content"]
    assert list(content) == [event_id] and list(content[event_id]["m.read"]) == [BOB]
    # A private receipt never leaves its server.
    await b.hs.receipts.post_receipt(BOB, room_id, "m.read.private", event_id)
    await settle()
    assert [c for _, _, c in edus_of_type(network, "m.receipt")] == [
        {room_id: {"m.read": {BOB: {"event_ids": [event_id], "data": {"ts": 1_700_000_000_000}}}}}
    ]


async def _has_event(server: Server, event_id: str) -> bool:
    return await server.hs.rooms.events.get_event(event_id) is not None


async def _receipt_event(server: Server, room_id: str, user_id: str) -> str | None:
    row = await server.hs.receipts.store.get(room_id, "m.read", user_id, None)
    return None if row is None else row.event_id


async def test_forged_receipts_are_dropped(network: Network) -> None:
    a, _ = servers(network)
    room_id = await joined_room(network)
    event_id = await send_message(a, room_id, "x")
    edus = a.hs.federation_edus

    def receipt(user_id: str, event: str = event_id) -> dict[str, Any]:
        return {room_id: {"m.read": {user_id: {"event_ids": [event], "data": {"ts": 1}}}}}

    await edus.on_edu("b.test", "m.receipt", receipt(ALICE))  # not b.test's user
    await edus.on_edu("c.test", "m.receipt", receipt(BOB))  # not c.test's user
    await edus.on_edu("b.test", "m.receipt", receipt("@eve:b.test"))  # not in the room
    await edus.on_edu("b.test", "m.receipt", receipt(BOB, "$unknown"))  # no such event here
    assert await _receipt_event(a, room_id, ALICE) is None
    assert await _receipt_event(a, room_id, BOB) is None
    await edus.on_edu("b.test", "m.receipt", receipt(BOB))
    assert await _receipt_event(a, room_id, BOB) == event_id


# --- presence ----------------------------------------------------------------------------


async def test_presence_of_a_remote_user_is_stored(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    await b.hs.presence.set_presence(BOB, "online", "at lunch")
    await eventually(lambda: _presence(a, BOB), ("online", "at lunch"))
    events = await a.hs.presence.changes_for_user(ALICE, 0, await a.hs.presence.current_position())
    assert [e["sender"] for e in events] == [BOB]
    assert events[0]["content"]["status_msg"] == "at lunch"


async def _presence(server: Server, user_id: str) -> tuple[str, str | None] | None:
    row = await server.hs.presence.store.get(user_id)
    return None if row is None else (row.state, row.status_msg)


async def test_forged_presence_is_dropped(network: Network) -> None:
    a, _ = servers(network)
    await joined_room(network)
    edus = a.hs.federation_edus
    push = [
        {"user_id": ALICE, "presence": "offline", "last_active_ago": 0},  # not b.test's
        {"user_id": "@eve:b.test", "presence": "online", "last_active_ago": 0},  # shares no room
        {"user_id": BOB, "presence": "sleeping", "last_active_ago": 0},  # no such state
        {"user_id": BOB, "presence": "unavailable", "last_active_ago": 1000},
    ]
    await edus.on_edu("b.test", "m.presence", {"push": push})
    assert await _presence(a, ALICE) is None
    assert await _presence(a, "@eve:b.test") is None
    row = await a.hs.presence.store.get(BOB)
    assert row is not None and (row.state, row.last_active_ts) == ("unavailable", a.hs.clock_ms() - 1000)


# --- to-device -----------------------------------------------------------------------------


async def test_to_device_messages_cross_servers_once(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    await login(a, ALICE, "ADEV")
    await login(b, BOB, "BDEV")
    await login(b, BOB, "BDEV2")
    messages = {BOB: {"BDEV": {"body": "to one"}}}
    await a.hs.to_device.send(Requester(ALICE, "ADEV"), "m.test", "t1", messages)
    await a.hs.to_device.send(Requester(ALICE, "ADEV"), "m.test", "t1", messages)  # a retry
    await a.hs.to_device.send(Requester(ALICE, "ADEV"), "m.all", "t2", {BOB: {"*": {"n": 2}}})
    expected_one = [
        {"type": "m.test", "sender": ALICE, "content": {"body": "to one"}},
        {"type": "m.all", "sender": ALICE, "content": {"n": 2}},
    ]
    await eventually(lambda: _inbox(b, BOB, "BDEV"), expected_one)
    assert await _inbox(b, BOB, "BDEV2") == [{"type": "m.all", "sender": ALICE, "content": {"n": 2}}]
    sent = edus_of_type(network, "m.direct_to_device")
    assert len(sent) == 2 and all(dest == "b.test" for _, dest, _ in sent)
    # The sender's server re-sending an EDU (a retried transaction) delivers nothing twice.
    await b.hs.federation_edus.on_edu("a.test", "m.direct_to_device", sent[0][2])
    assert await _inbox(b, BOB, "BDEV") == expected_one


async def test_to_device_for_remote_users_is_queued_with_the_txn_id(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox row and the client's txn ID are one transaction: when writing
    the outbox fails, nothing of the request is kept (not the txn ID, not the
    local messages), so the client's retry delivers everything exactly once."""
    a, b = servers(network)
    await joined_room(network)
    await login(a, ALICE, "ADEV")
    await login(b, BOB, "BDEV")
    store = a.sender.store
    # The logins' device-list updates go out first: the outbox is empty
    # before the failing send, so whatever is in it after came from that send.
    await eventually(store.destinations_with_edus, [])
    real_add_edus = store.add_edus

    async def fail_once(*args: Any) -> None:
        monkeypatch.setattr(store, "add_edus", real_add_edus)
        raise ConnectionError("the database went away")

    monkeypatch.setattr(store, "add_edus", fail_once)
    messages = {BOB: {"BDEV": {"body": "for bob"}}, ALICE: {"ADEV": {"body": "for me"}}}
    with pytest.raises(ConnectionError):
        await a.hs.to_device.send(Requester(ALICE, "ADEV"), "m.test", "t1", messages)
    assert await _inbox(a, ALICE, "ADEV") == []
    assert await a.sender.store.destinations_with_edus() == []

    await a.hs.to_device.send(Requester(ALICE, "ADEV"), "m.test", "t1", messages)  # the retry
    await eventually(
        lambda: _inbox(b, BOB, "BDEV"),
        [{"type": "m.test", "sender": ALICE, "content": {"body": "for bob"}}],
    )
    assert await _inbox(a, ALICE, "ADEV") == [
        {"type": "m.test", "sender": ALICE, "content": {"body": "for me"}}
    ]
    assert len(edus_of_type(network, "m.direct_to_device")) == 1


async def _inbox(server: Server, user_id: str, device_id: str) -> list[dict[str, Any]]:
    position = await server.hs.to_device.current_position()
    events, _ = await server.hs.to_device.to_device_for_device(user_id, device_id, 0, position)
    return events


async def test_to_device_from_an_impersonating_server_is_dropped(network: Network) -> None:
    _, b = servers(network)
    await login(b, BOB, "BDEV")
    content = {
        "sender": ALICE,
        "type": "m.test",
        "message_id": "m1",
        "messages": {BOB: {"BDEV": {"forged": True}}},
    }
    await b.hs.federation_edus.on_edu("c.test", "m.direct_to_device", content)
    assert await _inbox(b, BOB, "BDEV") == []
    await b.hs.federation_edus.on_edu("a.test", "m.direct_to_device", content)
    assert await _inbox(b, BOB, "BDEV") == [
        {"type": "m.test", "sender": ALICE, "content": {"forged": True}}
    ]


# --- device lists and keys -------------------------------------------------------------------


async def test_device_list_updates_resync_then_apply_incrementally(network: Network) -> None:
    a, b = servers(network)
    room_id = await joined_room(network)
    assert room_id
    start = await a.hs.e2e_keys.current_device_list_position()
    bob_phone = await login(b, BOB, "PHONE")
    # The login's update first, alone: had the key upload's update arrived
    # while a's resync was under way, and b answered that resync before the
    # upload committed, a would rightly resync once more (the answer older
    # than an update it saw), and the count below would depend on timing.
    await eventually(lambda: _device_ids(a, BOB), ["PHONE"])
    await a.hs.federation_edus.resyncs_done()
    await upload_keys(b, bob_phone)
    await eventually(lambda: _devices_with_keys(a, BOB), [("PHONE", True)])
    await a.hs.federation_edus.resyncs_done()
    # The first update found no cached list: a resynced with GET /user/devices;
    # the key upload's update followed it and was applied without another.
    device_calls = [c for c in a.client.calls if "/user/devices/" in c[2]]
    assert len(device_calls) == 1
    assert await a.hs.federation_edus.is_fresh(BOB)
    rows = await a.hs.federation_edus.store.devices(BOB)
    assert [(r.device_id, r.key_json is not None) for r in rows] == [("PHONE", True)]
    # Alice's /sync lists bob in device_lists.changed.
    changed, _ = await a.hs.e2e_keys.device_list_changes(
        ALICE, start, await a.hs.e2e_keys.current_device_list_position()
    )
    assert BOB in changed
    # /keys/query for bob now answers from the fresh cache, without asking b.
    answer = await a.hs.e2e_keys.query_keys(Requester(ALICE, "A"), {BOB: []})
    assert list(answer["device_keys"][BOB]) == ["PHONE"]
    assert answer["device_keys"][BOB]["PHONE"]["keys"] == bob_phone.device_keys()["keys"]
    assert not [c for c in a.client.calls if c[2].endswith("/user/keys/query")]
    # The next update follows the one a has: applied without another resync.
    bob_laptop = await login(b, BOB, "LAPTOP")
    await upload_keys(b, bob_laptop)
    await eventually(lambda: _device_ids(a, BOB), ["LAPTOP", "PHONE"])
    await b.hs.devices.delete_devices(BOB, ["PHONE"])
    await eventually(lambda: _device_ids(a, BOB), ["LAPTOP"])
    assert len([c for c in a.client.calls if "/user/devices/" in c[2]]) == 1
    # Every update names the one before it (prev_id), never an empty chain.
    updates = [c for _, _, c in edus_of_type(network, "m.device_list_update") if c["user_id"] == BOB]
    assert [(u["device_id"], u.get("deleted", False)) for u in updates][-1] == ("PHONE", True)
    assert updates[0]["prev_id"] == [] and len(updates) >= 4
    for before, after in itertools.pairwise(updates):
        assert after["prev_id"] == [before["stream_id"]]
    # GET /user/devices reports the stream_id of the last update.
    answer = await b.hs.federation_queries.user_devices(BOB)
    assert answer["stream_id"] == updates[-1]["stream_id"]


async def test_user_devices_never_names_an_update_newer_than_the_devices_it_holds(
    network: Network,
) -> None:
    """A key upload committed while GET /user/devices is being answered: the
    answer's stream_id must not cover that upload's update unless the keys are
    in it, or the asking server takes the update as seen and never learns the
    keys (seen once in the two-server e2e test under load)."""
    _, b = servers(network)
    await joined_room(network)
    phone = await login(b, BOB, "PHONE")
    await settle()
    before = await b.hs.federation_edus.store.latest_announced(BOB)
    assert before > 0
    edus = b.hs.federation_edus
    read_devices = edus.current_devices
    uploaded = False

    async def devices_then_upload(user_id: str) -> Any:
        nonlocal uploaded
        answer = await read_devices(user_id)
        if not uploaded and not edus._announce_locks[user_id].locked():  # not announcing
            uploaded = True
            await upload_keys(b, phone)  # commits and announces a newer update
        return answer

    edus.current_devices = devices_then_upload  # type: ignore[method-assign]
    try:
        answer = await b.hs.federation_queries.user_devices(BOB)
    finally:
        del edus.current_devices
    after = await b.hs.federation_edus.store.latest_announced(BOB)
    assert after > before  # the upload was announced meanwhile
    assert [d["device_id"] for d in answer["devices"]] == ["PHONE"]
    assert "keys" not in answer["devices"][0]  # read before the upload
    assert answer["stream_id"] == before  # so the upload's update stays to apply
    # The next answer holds the keys and names the newer update.
    answer = await b.hs.federation_queries.user_devices(BOB)
    assert answer["stream_id"] == after
    assert answer["devices"][0]["keys"]["keys"] == phone.device_keys()["keys"]


async def _device_ids(server: Server, user_id: str) -> list[str]:
    return [row.device_id for row in await server.hs.federation_edus.store.devices(user_id)]


async def _devices_with_keys(server: Server, user_id: str) -> list[tuple[str, bool]]:
    rows = await server.hs.federation_edus.store.devices(user_id)
    return [(row.device_id, row.key_json is not None) for row in rows]


async def test_a_gap_in_device_list_updates_triggers_a_resync(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    phone = await login(b, BOB, "PHONE")
    await upload_keys(b, phone)
    await settle()
    await a.hs.federation_edus.resyncs_done()
    cached = await a.hs.federation_edus.store.get_device_list(BOB)
    assert cached is not None and not cached.stale
    # An update whose prev_id a never saw (one was lost): resync, not applied blindly.
    await a.hs.federation_edus.on_edu(
        "b.test",
        "m.device_list_update",
        {
            "user_id": BOB,
            "device_id": "GHOST",
            "stream_id": cached.stream_id + 5,
            "prev_id": [cached.stream_id + 4],
        },
    )
    await a.hs.federation_edus.resyncs_done()
    assert len([c for c in a.client.calls if "/user/devices/" in c[2]]) == 2
    assert await _device_ids(a, BOB) == ["PHONE"]  # b's real list: no GHOST


async def test_device_list_updates_are_ignored_unless_from_the_users_server(
    network: Network,
) -> None:
    a, _ = servers(network)
    await joined_room(network)
    update = {"user_id": BOB, "device_id": "X", "stream_id": 1, "prev_id": []}
    await a.hs.federation_edus.on_edu("c.test", "m.device_list_update", update)
    stranger = {**update, "user_id": "@eve:b.test"}  # shares no room with anyone here
    await a.hs.federation_edus.on_edu("b.test", "m.device_list_update", stranger)
    await a.hs.federation_edus.resyncs_done()
    assert a.client.calls == []
    assert await a.hs.federation_edus.store.get_device_list(BOB) is None


async def test_an_unreachable_server_is_resynced_later(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    a.hs.federation_edus.resync_retry_s = 0.01
    b.down = True
    await a.hs.federation_edus.on_edu(
        "b.test", "m.device_list_update", {"user_id": BOB, "device_id": "D", "stream_id": 3}
    )
    await asyncio.sleep(0.05)
    cached = await a.hs.federation_edus.store.get_device_list(BOB)
    assert cached is not None and cached.stale  # durable: survives a restart
    b.down = False
    await a.hs.federation_edus.resyncs_done()
    assert await a.hs.federation_edus.is_fresh(BOB)


async def test_keys_are_queried_and_claimed_across_servers(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    phone = await login(b, BOB, "PHONE")
    await upload_keys(b, phone, one_time=2)
    alice = Requester(ALICE, "ADEV")
    await login(a, ALICE, "ADEV")
    answer = await a.hs.e2e_keys.query_keys(alice, {BOB: [], CAROL: []})
    keys = answer["device_keys"][BOB]["PHONE"]
    assert keys["keys"] == phone.device_keys()["keys"]
    assert keys["signatures"] == phone.device_keys()["signatures"]
    assert list(answer["failures"]) == ["c.test"]  # no such server
    claimed = await a.hs.e2e_keys.claim_keys({BOB: {"PHONE": "signed_curve25519"}})
    assert claimed["failures"] == {}
    ((key_id, key),) = claimed["one_time_keys"][BOB]["PHONE"].items()
    assert key_id.startswith("signed_curve25519:K") and key["key"].startswith("otk")
    # Handed out once: the next claim gets the other key.
    again = await a.hs.e2e_keys.claim_keys({BOB: {"PHONE": "signed_curve25519"}})
    assert list(again["one_time_keys"][BOB]["PHONE"]) != [key_id]


async def test_cross_signing_keys_reach_the_other_server(network: Network) -> None:
    a, b = servers(network)
    await joined_room(network)
    phone = await login(b, BOB, "PHONE")
    await upload_keys(b, phone)
    await settle()
    await a.hs.federation_edus.resyncs_done()
    signing = CrossSigning(BOB)
    body = signing.upload_body()
    keys, _ = await b.hs.e2e_keys.parse_cross_signing_upload(BOB, body)
    await b.hs.e2e_keys.store_cross_signing_keys(BOB, keys)
    await eventually(lambda: _cross_signing(a, BOB), ["master", "self_signing"])
    sent = edus_of_type(network, "m.signing_key_update")
    assert [c for _, _, c in sent] == [
        {"user_id": BOB, "master_key": body["master_key"], "self_signing_key": body["self_signing_key"]}
    ]
    answer = await a.hs.e2e_keys.query_keys(Requester(ALICE, "A"), {BOB: []})
    assert answer["master_keys"][BOB] == body["master_key"]
    assert BOB not in answer["user_signing_keys"]  # never leaves its server


async def _cross_signing(server: Server, user_id: str) -> list[str]:
    return sorted(await server.hs.federation_edus.store.cross_signing_keys(user_id))


# --- profiles and aliases --------------------------------------------------------------------


async def test_remote_profiles_and_aliases_are_asked_of_their_server(network: Network) -> None:
    a, b = servers(network)
    room_id = await joined_room(network)
    await a.hs.rooms.create_alias(ALICE, "#lobby:a.test", room_id)
    await a.hs.profiles.set_field(ALICE, ALICE, "displayname", "Alice A")
    assert await b.hs.profiles.get_profile(ALICE) == {"displayname": "Alice A"}
    assert await b.hs.profiles.get_field(ALICE, "displayname") == "Alice A"
    assert await b.hs.federation_queries.resolve_alias("#lobby:a.test") == (
        room_id,
        ["a.test", "b.test"],
    )
    from ranvier.errors import MatrixError

    with pytest.raises(MatrixError) as missing:
        await b.hs.federation_queries.resolve_alias("#nope:a.test")
    assert (missing.value.status, missing.value.errcode) == (404, "M_NOT_FOUND")
    with pytest.raises(MatrixError) as unknown_user:
        await b.hs.profiles.get_profile("@nobody:a.test")
    assert (unknown_user.value.status, unknown_user.value.errcode) == (404, "M_NOT_FOUND")
    with pytest.raises(MatrixError) as unreachable:
        await b.hs.profiles.get_profile(CAROL)
    assert (unreachable.value.status, unreachable.value.errcode) == (404, "M_NOT_FOUND")


async def test_stale_lists_are_resynced_after_a_restart(network: Network) -> None:
    a, _ = servers(network)
    await joined_room(network)
    await a.hs.federation_edus.store.mark_stale(BOB)  # left by an earlier run
    # The first EDU after a start (whatever it is) resumes the resyncs.
    await a.hs.federation_edus.on_edu("b.test", "m.unknown", {})
    await a.hs.federation_edus.resyncs_done()
    assert await a.hs.federation_edus.is_fresh(BOB)


class RecordingSender:
    """Stands for hs.federation_sender: records what would be sent."""

    def __init__(self) -> None:
        self.ephemeral: list[tuple[str, str, dict[str, Any]]] = []
        self.durable: list[tuple[str, str, dict[str, Any]]] = []

    async def send_edu(self, destination: str, edu_type: str, content: Any) -> None:
        self.ephemeral.append((destination, edu_type, dict(content)))

    async def send_durable_edus(self, edus: Any) -> None:
        self.durable += [(d, t, dict(c)) for d, t, c in edus]

    async def on_local_events(self, events: Any) -> None:
        pass  # PDUs are not what this test is about

    async def close(self) -> None:
        pass


async def test_outbound_edus_go_to_the_servers_sharing_the_room_only(network: Network) -> None:
    a, _ = servers(network)
    room_id = await joined_room(network)
    lonely = await create_room(a.hs.rooms, Requester(ALICE, "A"), {"preset": "private_chat"})
    recorder = RecordingSender()
    a.hs.federation_sender = recorder  # type: ignore[assignment]
    await a.hs.typing.set_typing(room_id, ALICE, True, 10_000)
    await a.hs.typing.set_typing(lonely, ALICE, True, 10_000)  # no other server there
    await a.hs.presence.set_presence(ALICE, "unavailable", "away")
    event_id = await send_message(a, room_id, "hi")
    await a.hs.receipts.post_receipt(ALICE, room_id, "m.read", event_id)
    await a.hs.receipts.post_receipt(ALICE, room_id, "m.read.private", event_id)
    assert recorder.ephemeral == [
        ("b.test", "m.typing", {"room_id": room_id, "user_id": ALICE, "typing": True}),
        (
            "b.test",
            "m.presence",
            {
                "push": [
                    {
                        "user_id": ALICE,
                        "presence": "unavailable",
                        "last_active_ago": 0,
                        "status_msg": "away",
                    }
                ]
            },
        ),
        (
            "b.test",
            "m.receipt",
            {room_id: {"m.read": {ALICE: {"event_ids": [event_id], "data": {"ts": 1_700_000_000_000}}}}},
        ),
    ]
    # A new device of alice's: one durable m.device_list_update for b.test.
    await login(a, ALICE, "NEWDEV")
    assert recorder.durable == [
        (
            "b.test",
            "m.device_list_update",
            {"user_id": ALICE, "device_id": "NEWDEV", "stream_id": 1, "prev_id": []},
        )
    ]
    # Without a sender nothing is sent, and nothing fails.
    a.hs.federation_sender = None
    await a.hs.typing.set_typing(room_id, ALICE, False)
    await a.hs.to_device.send(Requester(ALICE, "NEWDEV"), "m.x", "t", {BOB: {"*": {}}})
    assert len(recorder.ephemeral) == 3 and len(recorder.durable) == 1
