"""Encrypted rooms: ``m.room.encryption`` is ordinary state and
``m.room.encrypted`` events reach the other member exactly as sent, through
/sync, /messages and /event (the server never reads ciphertext)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import MakeClient
from tests.api.rooms_support import ROOMS_CONFIG, V3, call, create_room, make_user, q, send

CIPHERTEXT: dict[str, Any] = {
    "algorithm": "m.megolm.v1.aes-sha2",
    "ciphertext": "AwgAEnAcmZ6Q+/Kx1JLwZ2w4Df5mZc0y3U1A3b5jG8pI9yq8wC/Ph4qPQ==",
    "device_id": "DEVICEA",
    "sender_key": "KQkh0D9Mnb0r3NqT1ccqK5hgQp6ryb7kY0p7xFuuv2I",
    "session_id": "Zp0k8V8jFt9sQK+0F9Bv4Vg7sQ4gP7rS0a9hUS+0e3Q",
    # Anything else a client puts there must survive too.
    "org.example.extra": {"nested": ["ü", "😀", 9007199254740991, None, True]},
}


async def test_encrypted_events_pass_through_untouched(make_client: MakeClient) -> None:
    client = await make_client(ROOMS_CONFIG)
    alice = await make_user(client, "alice")
    bob = await make_user(client, "bob")
    room_id = await create_room(
        client,
        alice,
        preset="public_chat",
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    status, _ = await call(client, "POST", f"/rooms/{q(room_id)}/join", bob, {})
    assert status == 200
    status, encryption = await call(
        client, "GET", f"/rooms/{q(room_id)}/state/m.room.encryption/", bob
    )
    assert (status, encryption) == (200, {"algorithm": "m.megolm.v1.aes-sha2"})

    status, sent = await send(client, alice, room_id, CIPHERTEXT, "txn1", "m.room.encrypted")
    assert status == 200, sent
    event_id = sent["event_id"]

    status, fetched = await call(client, "GET", f"/rooms/{q(room_id)}/event/{q(event_id)}", bob)
    assert status == 200
    assert (fetched["type"], fetched["content"]) == ("m.room.encrypted", CIPHERTEXT)

    status, page = await call(client, "GET", f"/rooms/{q(room_id)}/messages?dir=b&limit=5", bob)
    assert status == 200
    (from_messages,) = [e for e in page["chunk"] if e["event_id"] == event_id]
    assert from_messages["content"] == CIPHERTEXT

    response = await client.get(f"{V3}/sync", headers=bob.headers)
    assert response.status == 200
    timeline = (await response.json())["rooms"]["join"][room_id]["timeline"]["events"]
    (from_sync,) = [e for e in timeline if e["event_id"] == event_id]
    assert from_sync["content"] == CIPHERTEXT
    assert from_sync["type"] == "m.room.encrypted"
