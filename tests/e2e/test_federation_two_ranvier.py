"""Two real `ranvier serve` processes federating over TLS on loopback.

Each server has a federation TLS listener with a certificate from a test CA
(trustme), trusts that CA and may connect to loopback addresses; server names
are ``127.0.0.1:<TLS port>``, so no DNS is involved (the set-up of
tests/e2e/test_federation_tls.py). A user of A creates a public room, a user
of B joins it by room ID through A, messages go both ways and reach the other
server's /sync; then B is stopped while A sends, and catches up once it is
back (A's queue wakes when B contacts it; B pulls what it missed with
/get_missing_events).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import trustme

from tests.e2e.harness import Server, free_port, init_config

pytestmark = pytest.mark.e2e

#: How long a message may take to reach the other server's /sync.
DELIVERY_TIMEOUT_S = 15


@dataclass
class Node:
    folder: Path
    config_path: Path
    port: int
    env: dict[str, str]
    server_name: str
    server: Server | None = None

    def start(self) -> Server:
        self.server = Server(self.config_path, self.port, **self.env)
        return self.server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _node(folder: Path, ca: trustme.CA, ca_file: Path) -> Node:
    folder.mkdir()
    config_path = init_config(folder)
    cert = ca.issue_cert("127.0.0.1")
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    tls_port = free_port()
    server_name = f"127.0.0.1:{tls_port}"
    env = {
        "RANVIER_SERVER_NAME": server_name,
        "RANVIER_FEDERATION_TLS_LISTEN_HOST": "127.0.0.1",
        "RANVIER_FEDERATION_TLS_LISTEN_PORT": str(tls_port),
        "RANVIER_FEDERATION_TLS_LISTEN_CERTIFICATE_PATH": str(chain),
        "RANVIER_FEDERATION_TLS_LISTEN_PRIVATE_KEY_PATH": str(key),
        "RANVIER_FEDERATION_TRUSTED_CA_FILE": str(ca_file),
        "RANVIER_FEDERATION_ALLOW_PRIVATE_ADDRESSES": "true",
        "RANVIER_FEDERATION_REQUEST_TIMEOUT": "5s",
        "RANVIER_REGISTRATION_ENABLED": "true",
        "RANVIER_RATELIMIT_ENABLED": "false",
        "RANVIER_PASSWORD_HASHING_TIME_COST": "1",
        "RANVIER_PASSWORD_HASHING_MEMORY_COST": "32",
    }
    return Node(folder, config_path, free_port(), env, server_name)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        if node.server is not None:
            node.server.kill()


@dataclass
class User:
    node: Node
    user_id: str
    token: str
    since: str | None = None


async def _call(
    session: aiohttp.ClientSession,
    node: Node,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
) -> Any:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with session.request(
        method, f"{node.base_url}/_matrix/client/v3{path}", json=body, headers=headers
    ) as response:
        payload = await response.json()
        assert response.status == 200, (method, path, response.status, payload)
        return payload


def _pair(tmp_path: Path, nodes: list[Node]) -> tuple[Node, Node]:
    """Two servers A and B (not started) with certificates of one test CA; added
    to ``nodes`` so that the fixture stops them whatever happens."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    a = _node(tmp_path / "a", ca, ca_file)
    b = _node(tmp_path / "b", ca, ca_file)
    nodes.extend([a, b])
    return a, b


async def _register(session: aiohttp.ClientSession, node: Node, name: str) -> User:
    body = {"username": name, "password": f"{name}-password-1", "auth": {"type": "m.login.dummy"}}
    answer = await _call(session, node, "POST", "/register", body=body)
    return User(node, answer["user_id"], answer["access_token"])


async def _say(session: aiohttp.ClientSession, user: User, room_id: str, text: str) -> str:
    path = f"/rooms/{quote(room_id, safe='')}/send/m.room.message/{quote(text, safe='')}"
    answer = await _call(
        session, user.node, "PUT", path, user.token, {"msgtype": "m.text", "body": text}
    )
    return str(answer["event_id"])


async def _sync_until(
    session: aiohttp.ClientSession, user: User, room_id: str, wanted: set[str]
) -> list[str]:
    """Sync (incrementally after the first time) until the room's timeline has
    shown every body in ``wanted``; the bodies seen, in order."""
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_S
    while not wanted <= set(seen):
        assert asyncio.get_running_loop().time() < deadline, (wanted, seen)
        query = "?timeout=1000" + (f"&since={quote(user.since)}" if user.since else "")
        answer = await _call(session, user.node, "GET", f"/sync{query}", user.token)
        user.since = answer["next_batch"]
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        for event in room.get("timeline", {}).get("events", []):
            if event["type"] == "m.room.message":
                seen.append(event["content"]["body"])
    return seen


async def _history(session: aiohttp.ClientSession, user: User, room_id: str) -> list[str]:
    path = f"/rooms/{quote(room_id, safe='')}/messages?dir=b&limit=50"
    answer = await _call(session, user.node, "GET", path, user.token)
    return [e["content"]["body"] for e in answer["chunk"] if e["type"] == "m.room.message"][::-1]


async def test_two_servers_share_a_room_and_catch_up_after_downtime(
    tmp_path: Path, nodes: list[Node]
) -> None:
    a, b = _pair(tmp_path, nodes)
    async with aiohttp.ClientSession() as session:
        for node in (a, b):
            await node.start().wait_ready(session)
        alice = await _register(session, a, "alice")
        bob = await _register(session, b, "bob")
        created = await _call(
            session, a, "POST", "/createRoom", alice.token, {"preset": "public_chat"}
        )
        room_id = created["room_id"]

        # B joins A's room by ID, through A.
        path = f"/join/{quote(room_id, safe='')}?via={quote(a.server_name, safe='')}"
        assert await _call(session, b, "POST", path, bob.token, {}) == {"room_id": room_id}
        members = await _call(
            session, a, "GET", f"/rooms/{quote(room_id, safe='')}/joined_members", alice.token
        )
        assert set(members["joined"]) == {alice.user_id, bob.user_id}
        await _sync_until(session, alice, room_id, set())
        await _sync_until(session, bob, room_id, set())

        # Messages both ways.
        await _say(session, alice, room_id, "hello from A")
        assert "hello from A" in await _sync_until(session, bob, room_id, {"hello from A"})
        await _say(session, bob, room_id, "hello from B")
        assert "hello from B" in await _sync_until(session, alice, room_id, {"hello from B"})

        # B goes away; A goes on talking.
        assert b.server is not None
        assert b.server.terminate() == 0, b.server.log()
        missed = [f"while B was down {n}" for n in range(3)]
        for text in missed:
            await _say(session, alice, room_id, text)
        await asyncio.sleep(0.5)  # A's attempt to reach B fails: B is now in backoff

        # B is back; its next message reaches A, which ends B's backoff and
        # catches B up; B pulls the messages in between.
        await b.start().wait_ready(session)
        await _say(session, bob, room_id, "back again")
        assert "back again" in await _sync_until(session, alice, room_id, {"back again"})
        deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_S
        while not set(missed) <= set(await _history(session, bob, room_id)):
            assert asyncio.get_running_loop().time() < deadline, await _history(
                session, bob, room_id
            )
            await asyncio.sleep(0.2)
        history = await _history(session, bob, room_id)
        assert history[:2] == ["hello from A", "hello from B"]
        assert set(history[2:]) == {*missed, "back again"}

    for node in (a, b):
        assert node.server is not None
        assert node.server.terminate() == 0, node.server.log()
        assert "Traceback" not in node.server.log(), node.server.log()
