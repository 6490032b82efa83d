"""Everyday flows between two real Ranvier servers, driven as a client would.

Two `ranvier serve` processes (A and B) federate over TLS with a trustme test
CA (the set-up of tests/e2e/test_federation_two_ranvier.py); each flow acts
through one server's client API and asserts what the other server's user sees
in /sync, /messages, /state or /profile (issue 10, "Done when"). The servers
are shared by the flows of this module (each flow registers its own users and
rooms); the partition flow, which stops and restarts B, runs last.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme

from ranvier.config import read_signing_key
from ranvier.core.events import Event, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
from ranvier.core.x_matrix import authorization_header
from tests.e2e.test_federation_two_ranvier import Node, _node

pytestmark = pytest.mark.e2e

#: How long anything may take to reach the other server.
FLOW_TIMEOUT_S = 15


@pytest.fixture(scope="module")
def flow_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """Servers A and B, started once for the module and checked for tracebacks."""
    folder = tmp_path_factory.mktemp("flows")
    ca = trustme.CA()
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    a, b = _node(folder / "a", ca, ca_file), _node(folder / "b", ca, ca_file)

    async def start_both() -> None:
        async with aiohttp.ClientSession() as session:
            for node in (a, b):
                await node.start().wait_ready(session)

    try:
        asyncio.run(start_both())
        yield a, b
        for node in (a, b):
            assert node.server is not None
            assert node.server.terminate() == 0, node.server.log()
            assert "Traceback" not in node.server.log(), node.server.log()
    finally:
        for node in (a, b):
            if node.server is not None:
                node.server.kill()


@dataclass
class FlowUser:
    node: Node
    user_id: str
    token: str
    since: str | None = None
    txn: int = field(default=0)


class FlowClient:
    """Raw client-server API calls (aiohttp) against either server."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def request(
        self, node: Node, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        url = f"{node.base_url}/_matrix/client/v3{path}"
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def call(self, user: FlowUser, method: str, path: str, body: Any = None) -> Any:
        status, payload = await self.request(user.node, method, path, user.token, body)
        assert status == 200, (user.user_id, method, path, status, payload)
        return payload

    async def register(self, node: Node, name: str) -> FlowUser:
        body = {"username": name, "password": f"{name}-pw-1", "auth": {"type": "m.login.dummy"}}
        status, answer = await self.request(node, "POST", "/register", body=body)
        assert status == 200, answer
        return FlowUser(node, answer["user_id"], answer["access_token"])

    async def send(self, user: FlowUser, room_id: str, event_type: str, content: Any) -> str:
        user.txn += 1
        path = f"/rooms/{q(room_id)}/send/{event_type}/flow{user.txn}"
        return str((await self.call(user, "PUT", path, content))["event_id"])

    async def say(self, user: FlowUser, room_id: str, text: str) -> str:
        return await self.send(user, room_id, "m.room.message", {"msgtype": "m.text", "body": text})

    async def join(self, user: FlowUser, room: str, via: Node) -> str:
        path = f"/join/{q(room)}?via={q(via.server_name)}"
        return str((await self.call(user, "POST", path, {}))["room_id"])

    async def state(self, user: FlowUser, room_id: str) -> dict[tuple[str, str], str]:
        events = await self.call(user, "GET", f"/rooms/{q(room_id)}/state")
        return {(e["type"], e["state_key"]): e["event_id"] for e in events}

    async def sync_until(
        self, user: FlowUser, found: Callable[[dict[str, Any]], Any], what: str
    ) -> Any:
        """Sync (incrementally after the first time) until ``found`` returns
        something truthy for one sync answer; that value."""
        deadline = asyncio.get_running_loop().time() + FLOW_TIMEOUT_S
        while True:
            query = "?timeout=500" + (f"&since={q(user.since)}" if user.since else "")
            answer = await self.call(user, "GET", f"/sync{query}")
            user.since = answer["next_batch"]
            result = found(answer)
            if result:
                return result
            assert asyncio.get_running_loop().time() < deadline, f"{user.user_id}: no {what}"

    async def eventually(self, check: Callable[[], Awaitable[Any]], what: str) -> Any:
        deadline = asyncio.get_running_loop().time() + FLOW_TIMEOUT_S
        while not (result := await check()):
            assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
            await asyncio.sleep(0.2)
        return result


def q(value: str) -> str:
    return quote(value, safe="")


def timeline(answer: dict[str, Any], room_id: str, section: str = "join") -> list[dict[str, Any]]:
    room = answer.get("rooms", {}).get(section, {}).get(room_id, {})
    return list(room.get("timeline", {}).get("events", []))


def ephemeral(answer: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
    return list(room.get("ephemeral", {}).get("events", []))


def event_with_id(event_id: str, room_id: str) -> Callable[[dict[str, Any]], Any]:
    def found(answer: dict[str, Any]) -> Any:
        return next((e for e in timeline(answer, room_id) if e["event_id"] == event_id), None)

    return found


def member_event(
    room_id: str, user_id: str, membership: str, section: str = "join"
) -> Callable[[dict[str, Any]], Any]:
    def found(answer: dict[str, Any]) -> Any:
        return next(
            (
                e
                for e in timeline(answer, room_id, section)
                if e["type"] == "m.room.member"
                and e["state_key"] == user_id
                and e["content"].get("membership") == membership
            ),
            None,
        )

    return found


@pytest.fixture
async def flows(flow_nodes: tuple[Node, Node]) -> Any:
    async with aiohttp.ClientSession() as session:
        yield FlowClient(session)


async def shared_room(client: FlowClient, owner: FlowUser, guest: FlowUser, **create: Any) -> str:
    """A public room of ``owner`` that ``guest`` (of the other server) joined
    by ID, once both have seen the join."""
    created = await client.call(owner, "POST", "/createRoom", {"preset": "public_chat", **create})
    room_id = str(created["room_id"])
    assert await client.join(guest, room_id, owner.node) == room_id
    await client.sync_until(owner, member_event(room_id, guest.user_id, "join"), "join")
    await client.sync_until(guest, lambda a: room_id in a.get("rooms", {}).get("join", {}), "room")
    return room_id


@pytest.mark.parametrize("by", ["alias", "id"])
@pytest.mark.parametrize("owner_side", ["A", "B"])
async def test_join_a_room_of_the_other_server(
    flows: FlowClient, flow_nodes: tuple[Node, Node], owner_side: str, by: str
) -> None:
    """A user joins a room of the other server by its alias (resolved through
    that server's /query/directory: no via given) or by its ID (via that
    server); then messages go both ways."""
    a, b = flow_nodes
    owner_node, guest_node = (a, b) if owner_side == "A" else (b, a)
    owner = await flows.register(owner_node, f"join_{by}_{owner_side.lower()}_owner")
    guest = await flows.register(guest_node, f"join_{by}_{owner_side.lower()}_guest")
    alias_name = f"flows-{by}-{owner_side}".lower()
    created = await flows.call(
        owner, "POST", "/createRoom", {"preset": "public_chat", "room_alias_name": alias_name}
    )
    room_id = created["room_id"]
    if by == "alias":
        alias = f"#{alias_name}:{owner_node.server_name}"
        status, resolved = await flows.request(guest_node, "GET", f"/directory/room/{q(alias)}")
        assert status == 200, resolved
        assert resolved["room_id"] == room_id
        assert owner_node.server_name in resolved["servers"]
        assert (await flows.call(guest, "POST", f"/join/{q(alias)}", {}))["room_id"] == room_id
    else:
        assert await flows.join(guest, room_id, owner_node) == room_id

    await flows.sync_until(owner, member_event(room_id, guest.user_id, "join"), "join")
    members = await flows.call(guest, "GET", f"/rooms/{q(room_id)}/joined_members")
    assert set(members["joined"]) == {owner.user_id, guest.user_id}
    for sender, reader in ((owner, guest), (guest, owner)):
        event_id = await flows.say(sender, room_id, f"hi from {sender.user_id}")
        seen = await flows.sync_until(reader, event_with_id(event_id, room_id), "message")
        assert seen["sender"] == sender.user_id
        assert seen["content"]["body"] == f"hi from {sender.user_id}"


async def test_edit_and_reaction_arrive_as_events(
    flows: FlowClient, flow_nodes: tuple[Node, Node]
) -> None:
    a, b = flow_nodes
    alice = await flows.register(a, "rel_alice")
    bob = await flows.register(b, "rel_bob")
    room_id = await shared_room(flows, alice, bob)
    original = await flows.say(alice, room_id, "teh original")
    await flows.sync_until(bob, event_with_id(original, room_id), "original")

    edit = await flows.send(
        alice,
        room_id,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* the original",
            "m.new_content": {"msgtype": "m.text", "body": "the original"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    reaction = await flows.send(
        bob,
        room_id,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": original, "key": "👍"}},
    )
    seen_edit = await flows.sync_until(bob, event_with_id(edit, room_id), "edit")
    assert seen_edit["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": original}
    assert seen_edit["content"]["m.new_content"]["body"] == "the original"
    seen_reaction = await flows.sync_until(alice, event_with_id(reaction, room_id), "reaction")
    assert seen_reaction["type"] == "m.reaction"
    assert seen_reaction["sender"] == bob.user_id
    assert seen_reaction["content"]["m.relates_to"] == {
        "rel_type": "m.annotation",
        "event_id": original,
        "key": "👍",
    }


async def test_typing_receipt_and_presence_reach_the_other_side(
    flows: FlowClient, flow_nodes: tuple[Node, Node]
) -> None:
    a, b = flow_nodes
    alice = await flows.register(a, "edu_alice")
    bob = await flows.register(b, "edu_bob")
    room_id = await shared_room(flows, alice, bob)

    await flows.call(
        bob,
        "PUT",
        f"/rooms/{q(room_id)}/typing/{q(bob.user_id)}",
        {"typing": True, "timeout": 20000},
    )

    def bob_typing(answer: dict[str, Any]) -> Any:
        return any(
            e["type"] == "m.typing" and bob.user_id in e["content"]["user_ids"]
            for e in ephemeral(answer, room_id)
        )

    await flows.sync_until(alice, bob_typing, "typing")

    message = await flows.say(alice, room_id, "read me")
    await flows.sync_until(bob, event_with_id(message, room_id), "message")
    await flows.call(bob, "POST", f"/rooms/{q(room_id)}/receipt/m.read/{q(message)}", {})

    def bob_read_it(answer: dict[str, Any]) -> Any:
        return any(
            e["type"] == "m.receipt"
            and bob.user_id in e["content"].get(message, {}).get("m.read", {})
            for e in ephemeral(answer, room_id)
        )

    await flows.sync_until(alice, bob_read_it, "receipt")

    await flows.call(
        bob,
        "PUT",
        f"/presence/{q(bob.user_id)}/status",
        {"presence": "unavailable", "status_msg": "in a meeting"},
    )

    def bob_away(answer: dict[str, Any]) -> Any:
        return any(
            e["sender"] == bob.user_id
            and e["content"].get("presence") == "unavailable"
            and e["content"].get("status_msg") == "in a meeting"
            for e in answer.get("presence", {}).get("events", [])
        )

    await flows.sync_until(alice, bob_away, "presence")
    status, seen = await flows.request(a, "GET", f"/presence/{q(bob.user_id)}/status", alice.token)
    assert status == 200, seen
    assert seen["presence"] == "unavailable"
    assert seen["status_msg"] == "in a meeting"


async def test_displayname_change_reaches_members_and_profile(
    flows: FlowClient, flow_nodes: tuple[Node, Node]
) -> None:
    a, b = flow_nodes
    alice = await flows.register(a, "prof_alice")
    bob = await flows.register(b, "prof_bob")
    room_id = await shared_room(flows, alice, bob)

    await flows.call(bob, "PUT", f"/profile/{q(bob.user_id)}/displayname", {"displayname": "Bobby"})

    def renamed(answer: dict[str, Any]) -> Any:
        event = member_event(room_id, bob.user_id, "join")(answer)
        return event if event and event["content"].get("displayname") == "Bobby" else None

    await flows.sync_until(alice, renamed, "member update")
    status, profile = await flows.request(a, "GET", f"/profile/{q(bob.user_id)}", alice.token)
    assert status == 200, profile
    assert profile["displayname"] == "Bobby"
    status, name = await flows.request(
        a, "GET", f"/profile/{q(bob.user_id)}/displayname", alice.token
    )
    assert (status, name) == (200, {"displayname": "Bobby"})
    members = await flows.call(alice, "GET", f"/rooms/{q(room_id)}/joined_members")
    assert members["joined"][bob.user_id]["display_name"] == "Bobby"


async def test_invite_of_a_remote_user_and_its_rejection(
    flows: FlowClient, flow_nodes: tuple[Node, Node]
) -> None:
    a, b = flow_nodes
    alice = await flows.register(a, "inv_alice")
    carol = await flows.register(b, "inv_carol")
    created = await flows.call(alice, "POST", "/createRoom", {"preset": "private_chat"})
    room_id = created["room_id"]

    await flows.call(alice, "POST", f"/rooms/{q(room_id)}/invite", {"user_id": carol.user_id})

    def invited(answer: dict[str, Any]) -> Any:
        return answer.get("rooms", {}).get("invite", {}).get(room_id)

    invite = await flows.sync_until(carol, invited, "invite")
    own = [
        e
        for e in invite["invite_state"]["events"]
        if e["type"] == "m.room.member" and e["state_key"] == carol.user_id
    ]
    assert [e["content"]["membership"] for e in own] == ["invite"]
    assert own[0]["sender"] == alice.user_id

    await flows.call(carol, "POST", f"/rooms/{q(room_id)}/leave", {})
    await flows.sync_until(alice, member_event(room_id, carol.user_id, "leave"), "rejection")
    state = await flows.call(
        alice, "GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(carol.user_id)}"
    )
    assert state["membership"] == "leave"
    await flows.sync_until(
        carol, lambda a: room_id in a.get("rooms", {}).get("leave", {}), "rejected room"
    )


async def test_kick_ban_and_leave(flows: FlowClient, flow_nodes: tuple[Node, Node]) -> None:
    a, b = flow_nodes
    alice = await flows.register(a, "mod_alice")
    kicked, banned, leaver = [await flows.register(b, f"mod_{name}") for name in ("k", "b", "l")]
    room_id = await shared_room(flows, alice, kicked)
    for user in (banned, leaver):
        assert await flows.join(user, room_id, a) == room_id
        await flows.sync_until(alice, member_event(room_id, user.user_id, "join"), "join")
        # A first sync before the ban: an initial sync leaves out left rooms.
        await flows.sync_until(
            user, lambda a: room_id in a.get("rooms", {}).get("join", {}), "room"
        )

    # Kick: the kicked user sees it in rooms.leave; both servers agree.
    path = f"/rooms/{q(room_id)}/kick"
    await flows.call(alice, "POST", path, {"user_id": kicked.user_id, "reason": "out"})
    kick = await flows.sync_until(
        kicked, member_event(room_id, kicked.user_id, "leave", "leave"), "kick"
    )
    assert kick["sender"] == alice.user_id
    assert kick["content"]["reason"] == "out"

    # Ban: B learns it, and the banned user can no longer send nor rejoin.
    await flows.call(alice, "POST", f"/rooms/{q(room_id)}/ban", {"user_id": banned.user_id})
    await flows.sync_until(banned, member_event(room_id, banned.user_id, "ban", "leave"), "ban")
    status, refused = await flows.request(
        b,
        "PUT",
        f"/rooms/{q(room_id)}/send/m.room.message/after-ban",
        banned.token,
        {"msgtype": "m.text", "body": "still here?"},
    )
    assert (status, refused["errcode"]) == (403, "M_FORBIDDEN"), refused
    status, refused = await flows.request(
        b, "POST", f"/join/{q(room_id)}?via={q(a.server_name)}", banned.token, {}
    )
    assert status == 403, refused
    # Even if B's server itself sends an event of the banned user, A rejects it
    # (auth rules: the sender must be joined), and A's users never see it.
    ban = await flows.call(
        alice, "GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(banned.user_id)}?format=event"
    )
    answer, forged_id = await send_pdu_as(b, a, banned.user_id, room_id, alice, flows, ban)
    # Rejected for the ban, not for a flaw of the forged PDU itself.
    assert "not joined" in answer["pdus"][forged_id]["error"], answer
    status, missing = await flows.request(
        a, "GET", f"/rooms/{q(room_id)}/event/{q(forged_id)}", alice.token
    )
    assert (status, missing.get("errcode")) == (404, "M_NOT_FOUND"), missing

    # Leave: A sees the member event.
    await flows.call(leaver, "POST", f"/rooms/{q(room_id)}/leave", {})
    await flows.sync_until(alice, member_event(room_id, leaver.user_id, "leave"), "leave")

    # Both servers now hold the same room state.
    expected = await flows.state(alice, room_id)
    memberships = {
        user.user_id: (
            await flows.call(
                alice, "GET", f"/rooms/{q(room_id)}/state/m.room.member/{q(user.user_id)}"
            )
        )["membership"]
        for user in (kicked, banned, leaver)
    }
    assert memberships == {kicked.user_id: "leave", banned.user_id: "ban", leaver.user_id: "leave"}
    probe = await flows.register(b, "mod_probe")
    assert await flows.join(probe, room_id, a) == room_id
    await flows.sync_until(alice, member_event(room_id, probe.user_id, "join"), "probe join")
    expected = await flows.state(alice, room_id)
    assert await flows.eventually(
        lambda: _same_state(flows, probe, room_id, expected), "B's state matches A's"
    )


async def send_pdu_as(
    origin: Node,
    destination: Node,
    sender: str,
    room_id: str,
    reader: FlowUser,
    client: FlowClient,
    prev: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Have ``origin``'s server (its own signing key, X-Matrix) send a message
    of ``sender`` after ``prev`` to ``destination`` with PUT /send (Server-Server
    API, "Transactions"); the answer and the event's ID."""
    state = await client.call(reader, "GET", f"/rooms/{q(room_id)}/state")
    by_key = {(e["type"], e["state_key"]): e for e in state}
    version = get_room_version(by_key[("m.room.create", "")]["content"].get("room_version", "1"))
    auth = [by_key[("m.room.power_levels", "")]["event_id"], prev["event_id"]]
    if not version.room_id_from_create_event:
        auth.append(by_key[("m.room.create", "")]["event_id"])
    pdu = {
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "content": {"msgtype": "m.text", "body": "sent by the server anyway"},
        "origin_server_ts": prev["origin_server_ts"] + 1,
        "depth": 1_000,
        "prev_events": [prev["event_id"]],
        "auth_events": auth,
    }
    [key_file] = origin.folder.glob("*.signing.key")
    key = read_signing_key(key_file)
    pdu = hash_and_sign_event(version, pdu, origin.server_name, key)
    event_id = Event.from_pdu(version, pdu).event_id
    path = f"/_matrix/federation/v1/send/forged-{event_id[1:9]}"
    body = {
        "origin": origin.server_name,
        "origin_server_ts": pdu["origin_server_ts"],
        "pdus": [pdu],
    }
    header = authorization_header(
        key, origin.server_name, destination.server_name, "PUT", path, body
    )
    tls = ssl.create_default_context(cafile=str(origin.folder.parent / "ca.pem"))
    url = f"https://{destination.server_name}{path}"
    async with client.session.put(
        url, json=body, headers={"Authorization": header}, ssl=tls
    ) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return answer, event_id


async def pdu_as_seen_by(
    origin: Node, destination: Node, client: FlowClient, event_id: str
) -> dict[str, Any]:
    """The PDU of ``event_id`` as ``destination`` serves it to ``origin``'s server
    (GET /_matrix/federation/v1/event, signed with ``origin``'s key)."""
    [key_file] = origin.folder.glob("*.signing.key")
    key = read_signing_key(key_file)
    path = f"/_matrix/federation/v1/event/{event_id}"  # $ and URL-safe base64: as sent
    header = authorization_header(key, origin.server_name, destination.server_name, "GET", path)
    tls = ssl.create_default_context(cafile=str(origin.folder.parent / "ca.pem"))
    url = f"https://{destination.server_name}{path}"
    async with client.session.get(url, headers={"Authorization": header}, ssl=tls) as response:
        answer = await response.json()
        assert response.status == 200, answer
        pdu: dict[str, Any] = answer["pdus"][0]
        return pdu


async def _same_state(
    client: FlowClient, user: FlowUser, room_id: str, expected: dict[tuple[str, str], str]
) -> bool:
    return await client.state(user, room_id) == expected


async def test_partition_catch_up_and_state_changed_on_both_sides(
    flows: FlowClient, flow_nodes: tuple[Node, Node]
) -> None:
    """B is stopped; A changes power levels and the topic and talks; B comes
    back and, before it has caught up, its user changes the topic too. Both
    servers end with the same state (state resolution v2 on each side) and
    B's /messages shows what it missed. Runs last: it restarts B."""
    a, b = flow_nodes
    alice = await flows.register(a, "part_alice")
    bob = await flows.register(b, "part_bob")
    levels = {"users": {bob.user_id: 50}}  # the creator needs no entry (room v12)
    room_id = await shared_room(flows, alice, bob, power_level_content_override=levels)
    before = await flows.say(alice, room_id, "before the split")
    await flows.sync_until(bob, event_with_id(before, room_id), "message")

    assert b.server is not None
    assert b.server.terminate() == 0, b.server.log()
    assert "Traceback" not in b.server.log(), b.server.log()

    power_path = f"/rooms/{q(room_id)}/state/m.room.power_levels/"
    new_levels = await flows.call(alice, "GET", power_path)
    new_levels["events"] = {**new_levels.get("events", {}), "m.room.name": 100}
    new_levels["users"][f"@someone:{b.server_name}"] = 20
    new_levels_id = (await flows.call(alice, "PUT", power_path, new_levels))["event_id"]
    await flows.call(alice, "PUT", f"/rooms/{q(room_id)}/state/m.room.topic/", {"topic": "from A"})
    missed = [f"while B was down {n}" for n in range(3)]
    for text in missed:
        await flows.say(alice, room_id, text)
    await asyncio.sleep(0.5)  # A's attempt to reach B fails: B is now in backoff

    async with aiohttp.ClientSession() as session:
        await b.start().wait_ready(session)
    # Before catching up: B's user acts on B's stale view of the room.
    topic_b = await flows.call(
        bob, "PUT", f"/rooms/{q(room_id)}/state/m.room.topic/", {"topic": "from B"}
    )
    after = await flows.say(alice, room_id, "after the split")

    async def bob_has_history() -> bool:
        path = f"/rooms/{q(room_id)}/messages?dir=b&limit=50"
        chunk = (await flows.call(bob, "GET", path))["chunk"]
        bodies = {e["content"].get("body") for e in chunk if e["type"] == "m.room.message"}
        return {*missed, "after the split"} <= bodies

    await flows.eventually(bob_has_history, "B's /messages shows what it missed")
    await flows.sync_until(bob, event_with_id(after, room_id), "message after the split")

    async def states_agree() -> Any:
        on_a, on_b = await flows.state(alice, room_id), await flows.state(bob, room_id)
        return on_a if on_a == on_b else None

    await flows.eventually(states_agree, "both servers answer /state identically")
    for user in (alice, bob):
        levels_now = await flows.call(user, "GET", power_path)
        assert levels_now["events"]["m.room.name"] == 100
        assert levels_now["users"][f"@someone:{b.server_name}"] == 20
    topics = [
        (await flows.call(user, "GET", f"/rooms/{q(room_id)}/state/m.room.topic/"))["topic"]
        for user in (alice, bob)
    ]
    # Whether B's topic forked depends on timing: B, restarted, may have been
    # caught up by A before its user's topic (any request of B's ends A's
    # backoff). Forked (authorised by the old power levels): state resolution
    # v2's mainline ordering puts A's topic, authorised by the newer power
    # levels, last, and it wins on both servers. Not forked: B's topic simply
    # came after A's.
    pdu_b = await pdu_as_seen_by(a, b, flows, topic_b["event_id"])
    forked = new_levels_id not in pdu_b["auth_events"]
    assert topics == (["from A", "from A"] if forked else ["from B", "from B"]), pdu_b
