"""Ranvier and Synapse (from PyPI): EDUs, bans and an encrypted room made on Synapse.

The same two real processes as tests/e2e/test_federation_synapse.py (TLS on
loopback, one test CA, Synapse from ``bench/.synapse-venv``). In one room of
each server, each way:

- typing notifications (``m.typing`` EDUs) reach the other server's /sync
  ephemeral events, and stopping typing clears them;
- read receipts (``m.receipt`` EDUs) reach the other side's /sync, naming
  the event read and the reader;
- presence (``m.presence`` EDUs) set on one server is seen on the other;
- an edit (``m.replace``) and a reaction (``m.annotation``) reach the other
  side with their relation intact;
- a ban of a user of the other server is seen there (the banned user's
  membership becomes ``ban``) and a re-join is refused on both sides;

and an encrypted room created by a matrix-nio client on Synapse, joined by a
nio client on Ranvier, in which messages decrypt both ways.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme
from nio import JoinResponse, RoomCreateResponse

from ranvier.core.ids import server_name_of
from tests.e2e import test_federation_synapse as synapse_e2e
from tests.e2e.test_federation_e2ee import ENCRYPTION, E2eePeer
from tests.e2e.test_federation_synapse import (
    SynapseNode,
    _create_room,
    _join_through,
    _joined,
    _nio_peer,
    _require_synapse,
    _room_path,
    _state,
    _stop_ranvier,
    _stop_synapse,
)
from tests.e2e.test_federation_two_ranvier import (
    DELIVERY_TIMEOUT_S,
    Node,
    User,
    _call,
    _register,
    _say,
    _sync_until,
)

pytestmark = pytest.mark.e2e

# The Synapse module's fixtures, used here by name.
test_ca = synapse_e2e.test_ca
network = synapse_e2e.network
session = synapse_e2e.session

Room = dict[str, Any]


async def _sync_room_until(
    session: aiohttp.ClientSession, user: User, room_id: str, what: str, done: Callable[[Room], bool]
) -> None:
    """Incremental /syncs of ``user`` until one answer's joined-room section for
    ``room_id`` satisfies ``done``."""
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_S
    while True:
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        query = "?timeout=1000" + (f"&since={quote(user.since)}" if user.since else "")
        answer = await _call(session, user.node, "GET", f"/sync{query}", user.token)
        user.since = answer["next_batch"]
        room = answer.get("rooms", {}).get("join", {}).get(room_id)
        if room is not None and done(room):
            return


def _ephemeral(room: Room, event_type: str) -> list[dict[str, Any]]:
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


def _typing_users(room: Room) -> set[str] | None:
    """The typing users of the room's last m.typing in this answer, None without one."""
    typing = _ephemeral(room, "m.typing")
    return set(typing[-1]["content"]["user_ids"]) if typing else None


async def _typing(
    session: aiohttp.ClientSession, typist: User, watcher: User, room_id: str
) -> None:
    """The typist starts typing (the watcher's server shows it), then stops (it clears)."""
    path = _room_path(room_id, f"/typing/{quote(typist.user_id, safe='')}")
    await _call(session, typist.node, "PUT", path, typist.token, {"typing": True, "timeout": 30000})
    await _sync_room_until(
        session, watcher, room_id, f"{typist.user_id} typing at {watcher.user_id}",
        lambda room: typist.user_id in (_typing_users(room) or set()),
    )  # fmt: skip
    await _call(session, typist.node, "PUT", path, typist.token, {"typing": False})
    await _sync_room_until(
        session, watcher, room_id, f"{typist.user_id} no longer typing at {watcher.user_id}",
        lambda room: _typing_users(room) == set(),
    )  # fmt: skip


async def _receipt(
    session: aiohttp.ClientSession, reader: User, writer: User, room_id: str, text: str
) -> None:
    """The writer says something, the reader marks it read; the writer's server
    shows the receipt (event, reader, ``m.read``, a timestamp)."""
    event_id = await _say(session, writer, room_id, text)
    await _sync_until(session, reader, room_id, {text})
    path = _room_path(room_id, f"/receipt/m.read/{quote(event_id, safe='')}")
    await _call(session, reader.node, "POST", path, reader.token, {})

    def read(room: Room) -> bool:
        for receipt in _ephemeral(room, "m.receipt"):
            entry = receipt["content"].get(event_id, {}).get("m.read", {}).get(reader.user_id)
            if entry is not None:
                assert isinstance(entry.get("ts"), int), entry
                return True
        return False

    await _sync_room_until(
        session, writer, room_id, f"{reader.user_id}'s receipt at {writer.user_id}", read
    )


async def _presence(
    session: aiohttp.ClientSession, user: User, watcher: User, status_msg: str
) -> None:
    """The user sets a status message; the watcher's server reports it, in
    /sync's presence and in GET /presence/{userId}/status."""
    path = f"/presence/{quote(user.user_id, safe='')}/status"
    body = {"presence": "online", "status_msg": status_msg}
    await _call(session, user.node, "PUT", path, user.token, body)

    async def seen() -> bool:
        query = "?timeout=1000" + (f"&since={quote(watcher.since)}" if watcher.since else "")
        answer = await _call(session, watcher.node, "GET", f"/sync{query}", watcher.token)
        watcher.since = answer["next_batch"]
        return any(
            e["type"] == "m.presence"
            and e["sender"] == user.user_id
            and e["content"].get("status_msg") == status_msg
            and e["content"].get("presence") == "online"
            for e in answer.get("presence", {}).get("events", [])
        )

    await _eventually(f"{user.user_id}'s presence at {watcher.user_id}", seen)
    status = await _call(session, watcher.node, "GET", path, watcher.token)
    assert status["presence"] == "online" and status["status_msg"] == status_msg, status


async def _eventually(what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _edit_and_reaction(
    session: aiohttp.ClientSession, author: User, reader: User, room_id: str
) -> None:
    """The author says something, edits it (``m.replace``) and the reader
    reacts (``m.annotation``): each side's /sync shows the other's relation
    event with its ``m.relates_to`` intact."""
    text = f"to be edited, in {room_id}"
    original = await _say(session, author, room_id, text)
    await _sync_until(session, reader, room_id, {text})
    edit = {
        "msgtype": "m.text",
        "body": f"* edited, in {room_id}",
        "m.new_content": {"msgtype": "m.text", "body": f"edited, in {room_id}"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    }
    path = _room_path(room_id, f"/send/m.room.message/edit-{quote(original, safe='')}")
    edit_id = (await _call(session, author.node, "PUT", path, author.token, edit))["event_id"]
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}}
    path = _room_path(room_id, f"/send/m.reaction/react-{quote(original, safe='')}")
    reaction_id = (await _call(session, reader.node, "PUT", path, reader.token, reaction))[
        "event_id"
    ]

    def has(event_id: str, relation: dict[str, Any]) -> Callable[[Room], bool]:
        def check(room: Room) -> bool:
            for event in room.get("timeline", {}).get("events", []):
                if event["event_id"] == event_id:
                    assert event["content"]["m.relates_to"] == relation, event
                    return True
            return False

        return check

    await _sync_room_until(
        session, reader, room_id, "the edit", has(edit_id, edit["m.relates_to"])
    )
    await _sync_room_until(
        session, author, room_id, "the reaction", has(reaction_id, reaction["m.relates_to"])
    )


async def _banned(
    session: aiohttp.ClientSession, moderator: User, target: User, room_id: str
) -> None:
    """The moderator bans a member of the other server: both servers record the
    ban, the target's /sync shows the room left, and its re-join is refused
    (403) on its own server."""
    path = _room_path(room_id, "/ban")
    body = {"user_id": target.user_id, "reason": "testing bans across servers"}
    await _call(session, moderator.node, "POST", path, moderator.token, body)
    member = await _state(session, moderator, room_id, "m.room.member", target.user_id)
    assert member["membership"] == "ban", member

    async def left_at_target() -> bool:
        query = "?timeout=1000" + (f"&since={quote(target.since)}" if target.since else "")
        answer = await _call(session, target.node, "GET", f"/sync{query}", target.token)
        target.since = answer["next_batch"]
        leave = answer.get("rooms", {}).get("leave", {}).get(room_id)
        if leave is None:
            return False
        events = leave.get("timeline", {}).get("events", [])
        return any(
            e["type"] == "m.room.member"
            and e["state_key"] == target.user_id
            and e["content"]["membership"] == "ban"
            for e in events
        )

    await _eventually(f"the ban in {target.user_id}'s /sync", left_at_target)
    assert await _joined(session, moderator, room_id) == {moderator.user_id}
    server = quote(server_name_of(moderator.user_id), safe="")
    async with session.post(
        f"{target.node.base_url}/_matrix/client/v3/join/{quote(room_id, safe='')}?via={server}",
        json={},
        headers={"Authorization": f"Bearer {target.token}"},
    ) as response:
        answer = await response.json()
        assert response.status == 403, (response.status, answer)
        assert answer["errcode"] == "M_FORBIDDEN", answer


async def _encrypted_room_on_synapse(alice: E2eePeer, sam: E2eePeer) -> None:
    """Sam (nio on Synapse) creates an encrypted room and invites Alice (nio on
    Ranvier): she joins through Synapse, learns his device, and messages
    decrypt both ways."""
    created = await sam.client.room_create(
        name="Secrets made on Synapse", invite=[alice.client.user_id], initial_state=[ENCRYPTION]
    )
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await alice.sync_until(lambda: room_id in alice.client.invited_rooms, "the invite")
    assert isinstance(await alice.client.join(room_id), JoinResponse)
    await alice.sync_until(lambda: room_id in alice.client.rooms, "the joined room")
    assert alice.client.rooms[room_id].encrypted
    await sam.sync_until(
        lambda: (
            room_id in sam.client.rooms and alice.client.user_id in sam.client.rooms[room_id].users
        ),
        "alice joining",
    )
    await sam.sync_until(
        lambda: alice.client.device_id in sam.client.device_store[alice.client.user_id],
        "alice's device",
    )
    await alice.sync_until(
        lambda: sam.client.device_id in alice.client.device_store[sam.client.user_id],
        "sam's device",
    )
    await sam.send(room_id, "from Synapse's room, encrypted")
    await alice.sync_until(
        lambda: "from Synapse's room, encrypted" in alice.bodies(), "sam's message"
    )
    await alice.send(room_id, "from Ranvier into Synapse's room, encrypted")
    await sam.sync_until(
        lambda: "from Ranvier into Synapse's room, encrypted" in sam.bodies(), "alice's message"
    )
    assert alice.undecryptable == [] and sam.undecryptable == []


async def _started(
    network: tuple[Node, SynapseNode], session: aiohttp.ClientSession
) -> tuple[Node, SynapseNode]:
    _require_synapse()
    ranvier, synapse = network
    ranvier.start()
    synapse.start()
    assert ranvier.server is not None
    await ranvier.server.wait_ready(session)
    await synapse.wait_ready(session)
    return ranvier, synapse


async def test_edus_and_bans_between_ranvier_and_synapse(
    network: tuple[Node, SynapseNode],
    session: aiohttp.ClientSession,
) -> None:
    ranvier, synapse = await _started(network, session)
    alice = await _register(session, ranvier, "alice")
    sam = await _register(session, synapse, "sam")
    ranvier_room = await _create_room(session, alice, "12", "EDUs in a Ranvier room")
    await _join_through(session, sam, ranvier_room, server_name_of(alice.user_id))
    synapse_room = await _create_room(session, sam, "10", "EDUs in a Synapse room")
    await _join_through(session, alice, synapse_room, server_name_of(sam.user_id))
    for room_id in (ranvier_room, synapse_room):
        assert await _joined(session, alice, room_id) == {alice.user_id, sam.user_id}
        assert await _joined(session, sam, room_id) == {alice.user_id, sam.user_id}

    for room_id in (ranvier_room, synapse_room):
        await _typing(session, alice, sam, room_id)
        await _typing(session, sam, alice, room_id)
        await _receipt(session, alice, sam, room_id, f"read me, Alice ({room_id})")
        await _receipt(session, sam, alice, room_id, f"read me, Sam ({room_id})")
        await _edit_and_reaction(session, alice, sam, room_id)
        await _edit_and_reaction(session, sam, alice, room_id)
    await _presence(session, alice, sam, "on Ranvier")
    await _presence(session, sam, alice, "on Synapse")

    await _banned(session, alice, sam, ranvier_room)
    await _banned(session, sam, alice, synapse_room)

    _stop_synapse(synapse)
    _stop_ranvier(ranvier)


async def test_encrypted_room_created_on_synapse(
    network: tuple[Node, SynapseNode],
    session: aiohttp.ClientSession,
    test_ca: tuple[trustme.CA, Path],
    tmp_path: Path,
) -> None:
    ranvier, synapse = await _started(network, session)
    alice = await _nio_peer(ranvier, tmp_path, "alice", test_ca[1])
    sam = await _nio_peer(synapse, tmp_path, "sam", test_ca[1])
    try:
        await _encrypted_room_on_synapse(alice, sam)
    finally:
        await alice.client.close()
        await sam.client.close()
    _stop_synapse(synapse)
    _stop_ranvier(ranvier)
