"""POST /rooms/{roomId}/receipt/{receiptType}/{eventId}, POST /rooms/{roomId}/read_markers
and the receipts /sync provider."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import NOW_MS, MakeClient
from tests.api.user_data_fakes import auth, user
from tests.api.user_data_fakes import fake_client as _fake_client

ROOM = "!room:localhost"
ALICE, BOB = user("alice"), user("bob")
EVENT = "$event1:localhost"
EVENT2 = "$event2:localhost"


def receipt_url(receipt_type: str, event_id: str = EVENT, room: str = ROOM) -> str:
    return f"/_matrix/client/v3/rooms/{room}/receipt/{receipt_type}/{event_id}"


MARKERS = f"/_matrix/client/v3/rooms/{ROOM}/read_markers"
OTHER = "!other:localhost"
OTHER_EVENT = "$in-other:localhost"
SLASH_EVENT = "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk"


async def fake_client(make_client: MakeClient) -> tuple[Any, Any, Any]:
    """The fakes, with events in ROOM (in this order) and one in OTHER."""
    client, rooms, hs = await _fake_client(make_client)
    rooms.events.add(ROOM, EVENT, EVENT2, SLASH_EVENT)
    rooms.events.add(OTHER, OTHER_EVENT)
    return client, rooms, hs


async def test_read_receipt_visible_to_room(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    bob_version = hs.notifier.version(BOB)
    response = await client.post(receipt_url("m.read"), json={}, headers=auth("alice"))
    assert response.status == 200
    assert await response.json() == {}
    assert hs.notifier.version(BOB) == bob_version + 1
    position = await hs.receipts.current_position()
    assert position == 1
    expected = {
        ROOM: {"type": "m.receipt", "content": {EVENT: {"m.read": {ALICE: {"ts": NOW_MS}}}}}
    }
    assert await hs.receipts.changes_for_user(BOB, 0, position) == expected
    assert await hs.receipts.changes_for_user(ALICE, 0, position) == expected
    assert await hs.receipts.changes_for_user(BOB, position, position) == {}


async def test_private_receipt_only_for_owner(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    bob_version = hs.notifier.version(BOB)
    response = await client.post(receipt_url("m.read.private"), json={}, headers=auth("alice"))
    assert response.status == 200
    assert hs.notifier.version(BOB) == bob_version  # nothing for Bob to see
    assert await hs.receipts.changes_for_user(BOB, 0, 1) == {}
    assert await hs.receipts.changes_for_user(ALICE, 0, 1) == {
        ROOM: {
            "type": "m.receipt",
            "content": {EVENT: {"m.read.private": {ALICE: {"ts": NOW_MS}}}},
        }
    }


async def test_threaded_receipts(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    await client.post(receipt_url("m.read"), json={"thread_id": "main"}, headers=auth("alice"))
    await client.post(
        receipt_url("m.read", EVENT2), json={"thread_id": "$root:localhost"}, headers=auth("alice")
    )
    await client.post(receipt_url("m.read", EVENT2), json={}, headers=auth("alice"))
    changes = await hs.receipts.changes_for_user(ALICE, 0, 3)
    assert changes[ROOM]["content"][EVENT] == {
        "m.read": {ALICE: {"ts": NOW_MS, "thread_id": "main"}}
    }
    # The unthreaded receipt and the one in thread $root are separate markers; both point
    # at EVENT2 and the batch keeps one entry per user and type.
    assert ALICE in changes[ROOM]["content"][EVENT2]["m.read"]
    # A later receipt in the same thread replaces the earlier one.
    await client.post(
        receipt_url("m.read", EVENT2), json={"thread_id": "main"}, headers=auth("alice")
    )
    changes = await hs.receipts.changes_for_user(ALICE, 0, 4)
    assert EVENT not in changes[ROOM]["content"]


async def test_same_receipt_twice_is_not_a_change(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    await client.post(receipt_url("m.read"), json={}, headers=auth("alice"))
    await client.post(receipt_url("m.read"), json={}, headers=auth("alice"))
    assert await hs.receipts.current_position() == 1


async def test_fully_read_via_receipt_endpoint(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    bob_version = hs.notifier.version(BOB)
    response = await client.post(receipt_url("m.fully_read"), json={}, headers=auth("alice"))
    assert response.status == 200
    assert await hs.account_data.get_account_data(ALICE, ROOM, "m.fully_read") == {
        "event_id": EVENT
    }
    assert await hs.receipts.current_position() == 0  # not a receipt
    assert hs.notifier.version(BOB) == bob_version
    response = await client.get(
        f"/_matrix/client/v3/user/{ALICE}/rooms/{ROOM}/account_data/m.fully_read",
        headers=auth("alice"),
    )
    assert await response.json() == {"event_id": EVENT}


async def test_read_markers(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE, BOB)
    response = await client.post(
        MARKERS,
        json={"m.fully_read": EVENT, "m.read": EVENT2, "m.read.private": EVENT2},
        headers=auth("alice"),
    )
    assert response.status == 200
    assert await response.json() == {}
    assert await hs.account_data.get_account_data(ALICE, ROOM, "m.fully_read") == {
        "event_id": EVENT
    }
    alice_view = await hs.receipts.changes_for_user(ALICE, 0, 2)
    assert alice_view[ROOM]["content"][EVENT2] == {
        "m.read": {ALICE: {"ts": NOW_MS}},
        "m.read.private": {ALICE: {"ts": NOW_MS}},
    }
    bob_view = await hs.receipts.changes_for_user(BOB, 0, 2)
    assert bob_view[ROOM]["content"][EVENT2] == {"m.read": {ALICE: {"ts": NOW_MS}}}
    account = await hs.account_data.changes_for_user(
        ALICE, 0, await hs.account_data.current_position()
    )
    assert account.room_events == {ROOM: [{"type": "m.fully_read", "content": {"event_id": EVENT}}]}
    # An empty body is valid (m.fully_read is optional since v1.4) and changes nothing.
    response = await client.post(MARKERS, json={}, headers=auth("alice"))
    assert response.status == 200


RECEIPT_BAD_INPUT = [
    ("m.read", EVENT, b"nope", "M_NOT_JSON"),
    ("m.read", EVENT, b"[]", "M_BAD_JSON"),
    ("m.unknown", EVENT, b"{}", "M_INVALID_PARAM"),
    ("m.read", "not-an-event", b"{}", "M_INVALID_PARAM"),
    ("m.read", EVENT, b'{"thread_id": ""}', "M_INVALID_PARAM"),
    ("m.read", EVENT, b'{"thread_id": 5}', "M_INVALID_PARAM"),
    ("m.read", EVENT, b'{"thread_id": "thread"}', "M_INVALID_PARAM"),
    ("m.fully_read", EVENT, b'{"thread_id": "main"}', "M_INVALID_PARAM"),
]
MARKERS_BAD_INPUT = [
    (b"{", "M_NOT_JSON"),
    (b"[]", "M_BAD_JSON"),
    (b'{"m.fully_read": 1}', "M_BAD_JSON"),
    (b'{"m.read": "x"}', "M_INVALID_PARAM"),
    (b'{"m.fully_read": "$event1:localhost", "m.read.private": ["$x:y"]}', "M_BAD_JSON"),
]


async def test_bad_input_writes_nothing(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    for receipt_type, event_id, body, errcode in RECEIPT_BAD_INPUT:
        response = await client.post(
            receipt_url(receipt_type, event_id), data=body, headers=auth("alice")
        )
        assert response.status == 400, body
        assert (await response.json())["errcode"] == errcode, body
    for body, errcode in MARKERS_BAD_INPUT:
        response = await client.post(MARKERS, data=body, headers=auth("alice"))
        assert response.status == 400, body
        assert (await response.json())["errcode"] == errcode, body
    assert await hs.account_data.current_position() == 0
    assert await hs.receipts.current_position() == 0


async def test_must_be_joined(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, BOB)
    response = await client.post(receipt_url("m.read"), json={}, headers=auth("alice"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    response = await client.post(MARKERS, json={"m.read": EVENT}, headers=auth("alice"))
    assert response.status == 403
    assert (await response.json())["errcode"] == "M_FORBIDDEN"
    assert await hs.receipts.current_position() == 0


async def test_invalid_room_and_auth(make_client: MakeClient) -> None:
    client, _, _ = await fake_client(make_client)
    response = await client.post(receipt_url("m.read", room="room"), json={}, headers=auth("alice"))
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_INVALID_PARAM"
    response = await client.post(
        "/_matrix/client/v3/rooms/room/read_markers", json={}, headers=auth("alice")
    )
    assert response.status == 400
    response = await client.post(receipt_url("m.read"), json={})
    assert response.status == 401
    response = await client.post(MARKERS, json={})
    assert response.status == 401


async def test_event_id_with_slash(make_client: MakeClient) -> None:
    """Room v3 event IDs may contain '/', sent percent-encoded."""
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    event_id = SLASH_EVENT
    response = await client.post(
        receipt_url("m.read", event_id.replace("/", "%2F")), json={}, headers=auth("alice")
    )
    assert response.status == 200
    changes = await hs.receipts.changes_for_user(ALICE, 0, 1)
    assert event_id in changes[ROOM]["content"]


async def test_provider_rooms(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    other = OTHER
    rooms.join(ROOM, ALICE, BOB)
    rooms.join(other, ALICE)
    await client.post(receipt_url("m.read"), json={}, headers=auth("alice"))
    await client.post(
        receipt_url("m.read", OTHER_EVENT, room=other), json={}, headers=auth("alice")
    )
    assert set(await hs.receipts.changes_for_user(BOB, 0, 2)) == {ROOM}
    assert set(await hs.receipts.changes_for_user(ALICE, 0, 2)) == {ROOM, other}
    assert set(await hs.receipts.changes_for_user(ALICE, 1, 2)) == {other}
    assert set(await hs.receipts.changes_for_user(ALICE, 0, 1)) == {ROOM}
    assert await hs.receipts.changes_for_user(ALICE, 0, 2, []) == {}


async def test_event_must_be_in_the_room(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    for event_id in ("$unknown:localhost", OTHER_EVENT):
        for receipt_type in ("m.read", "m.read.private", "m.fully_read"):
            response = await client.post(
                receipt_url(receipt_type, event_id), json={}, headers=auth("alice")
            )
            assert response.status == 404
            assert (await response.json())["errcode"] == "M_NOT_FOUND"
        response = await client.post(
            MARKERS, json={"m.fully_read": EVENT, "m.read": event_id}, headers=auth("alice")
        )
        assert response.status == 404
    # Nothing was written, not even the valid marker.
    assert await hs.account_data.current_position() == 0
    assert await hs.receipts.current_position() == 0


async def test_markers_only_move_forward(make_client: MakeClient) -> None:
    client, rooms, hs = await fake_client(make_client)
    rooms.join(ROOM, ALICE)
    await client.post(
        MARKERS, json={"m.fully_read": EVENT2, "m.read": EVENT2}, headers=auth("alice")
    )
    positions = await hs.account_data.current_position(), await hs.receipts.current_position()
    response = await client.post(
        MARKERS, json={"m.fully_read": EVENT, "m.read": EVENT}, headers=auth("alice")
    )
    assert response.status == 200
    assert (
        await hs.account_data.current_position(),
        await hs.receipts.current_position(),
    ) == positions
    assert await hs.account_data.get_account_data(ALICE, ROOM, "m.fully_read") == {
        "event_id": EVENT2
    }
    # A receipt in another thread is a marker of its own.
    await client.post(receipt_url("m.read"), json={"thread_id": "main"}, headers=auth("alice"))
    assert await hs.receipts.current_position() == positions[1] + 1
    # Forward again.
    forward = receipt_url("m.read", SLASH_EVENT.replace("/", "%2F"))
    assert (await client.post(forward, json={}, headers=auth("alice"))).status == 200
    changes = await hs.receipts.changes_for_user(ALICE, positions[1] + 1, positions[1] + 2)
    assert list(changes[ROOM]["content"]) == [SLASH_EVENT]
