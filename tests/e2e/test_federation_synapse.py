"""Ranvier and Synapse (from PyPI) federating, as real processes over TLS on loopback.

Synapse runs from its own virtualenv (``bench/.synapse-venv``, made by the
Makefile's SYNAPSE_VENV rule, on which ``make test`` depends); without it
this test fails, as the suite promises interoperability with Synapse.

Both servers are named ``127.0.0.1:<TLS port>`` (no DNS) and hold
certificates from one test CA (trustme) that both trust. Synapse's side of
that set-up, measured for Synapse 1.163: a TLS listener serving the client
and federation resources, ``federation_custom_ca_list`` (else "certificate
verify failed"), ``ip_range_blacklist`` without loopback (for an IP-literal
server name the whitelist is not consulted), no notary
(``trusted_key_servers: []``) and a ``federation_domain_whitelist`` of the
two servers. Ranvier's side is tests/e2e/test_federation_two_ranvier.py's.

Scenarios, in rooms of versions 12, 10 and 1: a Synapse user joins a Ranvier
room and a Ranvier user joins a Synapse room (by room ID through the
resident server; by a Synapse alias), messages go both ways and reach each
side's /sync; a Synapse user's /messages reaches what was said in the Ranvier
room before it joined (Synapse backfills from Ranvier's /backfill).
Then, each way: power levels, a topic and a redaction; concurrent messages
and topics (a forked DAG, resolved alike); a displayname change; a join to a
restricted room, authorised and counter-signed by the resident server;
catch-up after the other server was down; leaving.

A second test: a Ranvier user joining a Synapse room with history (versions
12, 10 and 1) gets it by /messages (Ranvier backfills from Synapse's
/backfill); invites both ways, accepted (a join through the inviting server)
and rejected (the inviting server sees the leave). A third: E2EE with matrix-nio clients, one on each server, in an
encrypted room: device keys queried and one-time keys claimed across,
megolm messages decrypting both ways.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import signedjson.key
import trustme
import yaml
from nio import JoinResponse, RegisterResponse, RoomCreateResponse

from bench.servers import (
    SYNAPSE_IP_RANGE_BLOCKLIST_BUT_LOOPBACK,
    SYNAPSE_RATE_LIMITS,
    SYNAPSE_VENV,
    clean_env,
    synapse_python,
)
from ranvier.core.ids import server_name_of
from tests.e2e.harness import free_port
from tests.e2e.test_federation_e2ee import ENCRYPTION, PASSWORD, E2eePeer
from tests.e2e.test_federation_two_ranvier import (
    DELIVERY_TIMEOUT_S,
    Node,
    User,
    _call,
    _node,
    _register,
    _say,
    _sync_until,
)

pytestmark = pytest.mark.e2e

SYNAPSE_STARTUP_TIMEOUT_S = 60
SYNAPSE_SHUTDOWN_TIMEOUT_S = 15
#: Both servers' default (12: room IDs without a server name, the create event
#: implied in auth events), 10 (the Synapse default before it) and 1 (event
#: IDs chosen by the server that makes the event, which must sign it).
ROOM_VERSIONS = ("12", "10", "1")
#: Characters canonical JSON escapes (", \\, control characters) or keeps as
#: UTF-8 (everything else, U+2028 and U+2029 included).
UNUSUAL_TEXTS = (
    "héllo wörld, 😀🎉, \U0010ffff",
    'quote " backslash \\ slash / tab \t newline \n',
    "separators \u2028 \u2029, BOM \ufeff, controls \u0001 \u001f \u007f",
    "e\u0301 combining, NUL \u0000",
)
#: Said in a Ranvier room before Synapse joins: more than Synapse's 100 a /backfill.
BACKFILLED_MESSAGES = 120
#: Said while the other server is down: more than Synapse's 10 a /get_missing_events.
MISSED_MESSAGES = 15



@dataclass
class SynapseNode:
    """One Synapse process; the client API is on its TLS listener too."""

    folder: Path
    port: int
    server_name: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "synapse.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> None:
        python = synapse_python(SYNAPSE_VENV)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(python),
                    "-m",
                    "synapse.app.homeserver",
                    "--config-path",
                    str(self.folder / "homeserver.yaml"),
                ],
                env=clean_env(),
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        assert self.process is not None
        deadline = asyncio.get_running_loop().time() + SYNAPSE_STARTUP_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"Synapse exited at startup:\n{self.log()[-5000:]}")
            try:
                async with session.get(f"{self.base_url}/_matrix/client/versions") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"Synapse did not answer in time:\n{self.log()[-5000:]}")

    def terminate(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; the exit status."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SYNAPSE_SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode


def _require_synapse() -> Path:
    python = synapse_python(SYNAPSE_VENV)
    if not python.exists():
        pytest.fail(
            f"Synapse is not installed ({python} is missing): `make test` installs it "
            "(the Makefile's bench/.synapse-venv/.installed rule); run "
            "`make bench/.synapse-venv/.installed` before running this test alone.",
            pytrace=False,
        )
    return python


def test_a_missing_synapse_fails_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a skip: the suite promises interoperability with Synapse."""
    monkeypatch.setattr(sys.modules[__name__], "SYNAPSE_VENV", tmp_path / "no-venv")
    with pytest.raises(BaseException) as raised:  # pytest's skip and fail are BaseExceptions
        _require_synapse()
    assert raised.type is pytest.fail.Exception
    assert "Synapse is not installed" in str(raised.value)


def _synapse_node(folder: Path, ca: trustme.CA, ca_file: Path, peers: list[str]) -> SynapseNode:
    """A Synapse configured to federate with ``peers`` (and itself) on loopback."""
    folder.mkdir()
    port = free_port()
    server_name = f"127.0.0.1:{port}"
    cert = ca.issue_cert("127.0.0.1")
    chain, key = folder / "chain.pem", folder / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    signing_key_path = folder / "signing.key"
    with signing_key_path.open("w") as stream:
        signedjson.key.write_signing_keys(stream, [signedjson.key.generate_signing_key("a_test")])
    config: dict[str, Any] = {
        "server_name": server_name,
        "pid_file": str(folder / "homeserver.pid"),
        "public_baseurl": f"https://127.0.0.1:{port}/",
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["client", "federation"], "compress": False}],
            }
        ],
        "tls_certificate_path": str(chain),
        "tls_private_key_path": str(key),
        "federation_custom_ca_list": [str(ca_file)],
        "ip_range_blacklist": SYNAPSE_IP_RANGE_BLOCKLIST_BUT_LOOPBACK,
        "federation_domain_whitelist": [server_name, *peers],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "database": {"name": "sqlite3", "args": {"database": str(folder / "homeserver.db")}},
        "media_store_path": str(folder / "media_store"),
        "signing_key_path": str(signing_key_path),
        "macaroon_secret_key": "test-macaroon-secret",
        "form_secret": "test-form-secret",
        "report_stats": False,
        "url_preview_enabled": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        # Fast password hashing: registration is not what we test.
        "bcrypt_rounds": 4,
        # Every /sync computed afresh (Synapse caches answers for 2 minutes).
        "caches": {"sync_response_cache_duration": 0},
        **SYNAPSE_RATE_LIMITS,
    }
    (folder / "homeserver.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return SynapseNode(folder, port, server_name)


@pytest.fixture
def test_ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    """The CA of every certificate here, and its PEM file."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


@pytest.fixture
def network(tmp_path: Path, test_ca: tuple[trustme.CA, Path]) -> Iterator[tuple[Node, SynapseNode]]:
    """A Ranvier and a Synapse (not yet started) that trust each other; both are
    stopped at the end, whatever happens."""
    ca, ca_file = test_ca
    ranvier = _node(tmp_path / "ranvier", ca, ca_file)
    synapse = _synapse_node(tmp_path / "synapse", ca, ca_file, [ranvier.server_name])
    try:
        yield ranvier, synapse
    finally:
        synapse.terminate()
        if ranvier.server is not None:
            ranvier.server.kill()


@pytest.fixture
async def session(test_ca: tuple[trustme.CA, Path]) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session trusting the test CA (Synapse's client API is on its TLS listener)."""
    context = ssl.create_default_context(cafile=str(test_ca[1]))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        yield client


def _room_path(room_id: str, rest: str = "") -> str:
    return f"/rooms/{quote(room_id, safe='')}{rest}"


async def _join_through(
    session: aiohttp.ClientSession, user: User, room_id: str, server_name: str
) -> None:
    # ``server_name`` (deprecated) and ``via`` both: Synapse 1.163 reads either.
    server = quote(server_name, safe="")
    path = f"/join/{quote(room_id, safe='')}?via={server}&server_name={server}"
    answer = await _call(session, user.node, "POST", path, user.token, {})
    assert answer["room_id"] == room_id


async def _joined(session: aiohttp.ClientSession, user: User, room_id: str) -> set[str]:
    answer = await _call(
        session, user.node, "GET", _room_path(room_id, "/joined_members"), user.token
    )
    return set(answer["joined"])


async def _history(session: aiohttp.ClientSession, user: User, room_id: str) -> list[str]:
    """Message bodies of the room, oldest first, by paginating /messages back from
    now (redacted messages have none)."""
    bodies: list[str] = []
    token: str | None = None
    for _ in range(10):
        query = "?dir=b&limit=50" + (f"&from={quote(token)}" if token else "")
        answer = await _call(
            session, user.node, "GET", _room_path(room_id, f"/messages{query}"), user.token
        )
        bodies += [
            e["content"]["body"]
            for e in answer["chunk"]
            if e["type"] == "m.room.message" and "body" in e["content"]
        ]
        token = answer.get("end")
        if not answer["chunk"] or token is None:
            break
    return bodies[::-1]


async def _exchange(
    session: aiohttp.ClientSession, resident: User, joiner: User, room_id: str, tag: str
) -> None:
    """A message each way; each reaches the other side's /sync."""
    await _sync_until(session, resident, room_id, set())
    await _sync_until(session, joiner, room_id, set())
    to_joiner = f"{tag}: from the resident server"
    await _say(session, resident, room_id, to_joiner)
    assert to_joiner in await _sync_until(session, joiner, room_id, {to_joiner})
    to_resident = f"{tag}: from the joining server"
    await _say(session, joiner, room_id, to_resident)
    assert to_resident in await _sync_until(session, resident, room_id, {to_resident})


async def _create_room(session: aiohttp.ClientSession, user: User, version: str, name: str) -> str:
    body = {"preset": "public_chat", "name": name, "room_version": version}
    created = await _call(session, user.node, "POST", "/createRoom", user.token, body)
    return str(created["room_id"])


async def _state(
    session: aiohttp.ClientSession, user: User, room_id: str, event_type: str, key: str = ""
) -> dict[str, Any]:
    """The content of a state event; {} while the user's server has none."""
    path = _room_path(room_id, f"/state/{event_type}/{quote(key, safe='')}")
    async with session.get(
        f"{user.node.base_url}/_matrix/client/v3{path}",
        headers={"Authorization": f"Bearer {user.token}"},
    ) as response:
        answer: dict[str, Any] = await response.json()
        if response.status == 404 and answer.get("errcode") == "M_NOT_FOUND":
            return {}
        assert response.status == 200, (path, response.status, answer)
        return answer


async def _put_state(
    session: aiohttp.ClientSession,
    user: User,
    room_id: str,
    event_type: str,
    content: dict[str, Any],
    key: str = "",
) -> str:
    path = _room_path(room_id, f"/state/{event_type}/{quote(key, safe='')}")
    answer = await _call(session, user.node, "PUT", path, user.token, content)
    return str(answer["event_id"])


async def _eventually(what: str, check: Any) -> None:
    """Retry ``check()`` (an awaitable factory returning bool) until true or time is up."""
    deadline = asyncio.get_running_loop().time() + DELIVERY_TIMEOUT_S
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _synapse_joins_ranvier_room(
    session: aiohttp.ClientSession, alice: User, sam: User, version: str
) -> str:
    """(1) Sam (Synapse) joins Alice's Ranvier room by ID, through Ranvier; what
    Alice said before is reachable from Synapse by back-pagination (backfill,
    more than one /backfill request of Synapse's 100 events)."""
    room_id = await _create_room(session, alice, version, f"Ranvier room v{version}")
    before = [f"v{version} before the join {n}" for n in range(BACKFILLED_MESSAGES)]
    for text in before:
        await _say(session, alice, room_id, text)
    await _join_through(session, sam, room_id, server_name_of(alice.user_id))
    assert await _joined(session, alice, room_id) == {alice.user_id, sam.user_id}
    assert await _joined(session, sam, room_id) == {alice.user_id, sam.user_id}
    tag = f"Ranvier room v{version}"
    await _exchange(session, alice, sam, room_id, tag)
    assert await _history(session, sam, room_id) == [
        *before,
        f"{tag}: from the resident server",
        f"{tag}: from the joining server",
    ]
    return room_id


async def _ranvier_joins_synapse_room(
    session: aiohttp.ClientSession, alice: User, sam: User, version: str, *, by_alias: bool
) -> str:
    """(2) Alice (Ranvier) joins Sam's Synapse room by ID through Synapse, or by
    its alias (which Ranvier resolves with Synapse's /query/directory)."""
    room_id = await _create_room(session, sam, version, f"Synapse room v{version}")
    if by_alias:
        alias = f"#synapse-v{version}:{server_name_of(sam.user_id)}"
        path = _room_path(room_id, "/state/m.room.canonical_alias")
        await _call(
            session, sam.node, "PUT", f"/directory/room/{quote(alias, safe='')}", sam.token,
            {"room_id": room_id},
        )  # fmt: skip
        await _call(session, sam.node, "PUT", path, sam.token, {"alias": alias})
        answer = await _call(
            session, alice.node, "POST", f"/join/{quote(alias, safe='')}", alice.token, {}
        )
        assert answer["room_id"] == room_id
    else:
        await _join_through(session, alice, room_id, server_name_of(sam.user_id))
    assert await _joined(session, sam, room_id) == {alice.user_id, sam.user_id}
    assert await _joined(session, alice, room_id) == {alice.user_id, sam.user_id}
    await _exchange(session, sam, alice, room_id, f"Synapse room v{version}")
    return room_id


async def _displayname_change(
    session: aiohttp.ClientSession, user: User, other: User, room_id: str
) -> None:
    """A new displayname goes out as a new member event, which the other side sees."""
    name = f"{user.user_id} renamed"
    path = f"/profile/{quote(user.user_id, safe='')}/displayname"
    await _call(session, user.node, "PUT", path, user.token, {"displayname": name})

    async def renamed_for_other() -> bool:
        member = await _state(session, other, room_id, "m.room.member", user.user_id)
        return member.get("displayname") == name

    await _eventually(f"{user.user_id}'s new displayname at {other.user_id}", renamed_for_other)


async def _state_and_redactions(
    session: aiohttp.ClientSession, owner: User, guest: User, room_id: str
) -> None:
    """The room's owner gives the guest (of the other server) power; the guest
    changes the topic; the owner redacts the guest's message: each side sees
    the other's state change and redaction."""
    levels = await _state(session, owner, room_id, "m.room.power_levels")
    levels["users"] = {**levels.get("users", {}), guest.user_id: 50}
    levels_id = await _put_state(session, owner, room_id, "m.room.power_levels", levels)

    async def guest_has_power() -> bool:
        seen = await _state(session, guest, room_id, "m.room.power_levels")
        return bool(seen.get("users", {}).get(guest.user_id) == 50)

    await _eventually(f"{levels_id} at {guest.user_id}", guest_has_power)
    topic = f"set by {guest.user_id}"
    await _put_state(session, guest, room_id, "m.room.topic", {"topic": topic})

    async def owner_sees_topic() -> bool:
        return (await _state(session, owner, room_id, "m.room.topic")).get("topic") == topic

    await _eventually(f"the topic at {owner.user_id}", owner_sees_topic)

    text = f"to be redacted, by {guest.user_id}"
    event_id = await _say(session, guest, room_id, text)
    await _sync_until(session, owner, room_id, {text})
    path = _room_path(room_id, f"/redact/{quote(event_id, safe='')}/r{quote(event_id, safe='')}")
    await _call(session, owner.node, "PUT", path, owner.token, {"reason": "test"})

    async def redacted_at_guest() -> bool:
        path = _room_path(room_id, f"/event/{quote(event_id, safe='')}")
        event = await _call(session, guest.node, "GET", path, guest.token)
        return event["content"] == {} and "redacted_because" in event.get("unsigned", {})

    await _eventually(f"the redaction of {event_id} at {guest.user_id}", redacted_at_guest)


async def _concurrent_changes_converge(
    session: aiohttp.ClientSession, alice: User, sam: User, room_id: str
) -> None:
    """Both sides talk and set the topic at once: the DAG forks. Each side gets
    every message, and state resolution of the two topics agrees on both."""
    said = {f"{user.user_id} at once {n}" for user in (alice, sam) for n in range(4)}
    await asyncio.gather(
        *(_say(session, user, room_id, f"{user.user_id} at once {n}")
          for n in range(4) for user in (alice, sam)),
        _put_state(session, alice, room_id, "m.room.topic", {"topic": "Alice's topic"}),
        _put_state(session, sam, room_id, "m.room.topic", {"topic": "Sam's topic"}),
    )  # fmt: skip
    await _sync_until(session, alice, room_id, said)
    await _sync_until(session, sam, room_id, said)
    # One more message each, whose prev_events merge the fork.
    await _exchange(session, alice, sam, room_id, "after the fork")
    alice_topic = await _state(session, alice, room_id, "m.room.topic")
    sam_topic = await _state(session, sam, room_id, "m.room.topic")
    assert alice_topic == sam_topic
    assert alice_topic["topic"] in ("Alice's topic", "Sam's topic")


async def _restricted_join(
    session: aiohttp.ClientSession, owner: User, joiner: User, allowed_room: str
) -> None:
    """The joiner (of the other server) joins a restricted room (room version 10)
    as a member of ``allowed_room``: the owner's server authorises and
    counter-signs the join (MSC3083; Server-Server API, send_join)."""
    room_id = await _create_room(session, owner, "10", f"restricted, of {owner.user_id}")
    rules = {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": allowed_room}],
    }
    await _put_state(session, owner, room_id, "m.room.join_rules", rules)
    await _join_through(session, joiner, room_id, server_name_of(owner.user_id))
    member = await _state(session, joiner, room_id, "m.room.member", joiner.user_id)
    assert member["join_authorised_via_users_server"] == owner.user_id
    assert await _joined(session, owner, room_id) == {owner.user_id, joiner.user_id}
    await _exchange(session, owner, joiner, room_id, f"restricted room of {owner.user_id}")


async def _unusual_text(
    session: aiohttp.ClientSession, alice: User, sam: User, room_id: str
) -> None:
    """Messages whose canonical JSON escapes or keeps unusual characters: each
    server checks the other's signatures and hashes over its own encoding."""
    said = {f"{user.user_id}: {text}" for user in (alice, sam) for text in UNUSUAL_TEXTS}
    for n, text in enumerate(UNUSUAL_TEXTS):
        for user in (alice, sam):
            # Not _say: the text is no transaction ID (Ranvier refuses NUL in one).
            path = _room_path(room_id, f"/send/m.room.message/unusual{n}")
            body = {"msgtype": "m.text", "body": f"{user.user_id}: {text}"}
            await _call(session, user.node, "PUT", path, user.token, body)
    for user in (alice, sam):

        async def has_all(user: User = user) -> bool:
            return said <= set(await _history(session, user, room_id))

        await _eventually(f"every unusual text at {user.user_id}", has_all)


async def _kicked_and_back(
    session: aiohttp.ClientSession, owner: User, member: User, room_id: str
) -> None:
    """The owner kicks the member (of the other server), who joins again."""
    path = _room_path(room_id, "/kick")
    await _call(session, owner.node, "POST", path, owner.token, {"user_id": member.user_id})

    async def kicked_at_member() -> bool:
        rooms = await _call(session, member.node, "GET", "/joined_rooms", member.token)
        return room_id not in rooms["joined_rooms"]

    await _eventually(f"the kick at {member.user_id}", kicked_at_member)
    await _join_through(session, member, room_id, server_name_of(owner.user_id))
    assert await _joined(session, owner, room_id) == {owner.user_id, member.user_id}
    await _exchange(session, owner, member, room_id, f"{member.user_id} back after a kick")


async def _leave(session: aiohttp.ClientSession, user: User, room_id: str, other: User) -> None:
    """A user leaves a room of the other server; the other side sees it."""
    await _call(session, user.node, "POST", _room_path(room_id, "/leave"), user.token, {})

    async def left_for_other() -> bool:
        member = await _state(session, other, room_id, "m.room.member", user.user_id)
        return member.get("membership") == "leave"

    await _eventually(f"{user.user_id}'s leave at {other.user_id}", left_for_other)
    assert await _joined(session, other, room_id) == {other.user_id}


async def _catch_up(
    session: aiohttp.ClientSession,
    speaker: User,
    returning: User,
    room_id: str,
    stop: Any,
    restart: Any,
) -> None:
    """``returning``'s server is down while ``speaker`` (the room's owner)
    talks and changes the topic; once it is back and its user speaks, the
    speaker's server delivers what it missed. Ranvier sends only its latest
    event, so Synapse pulls the rest: /get_missing_events (10 at most), then,
    for a longer gap, the state with /state_ids and /event."""
    stop()
    missed = [f"while {returning.user_id} was away {n}" for n in range(MISSED_MESSAGES)]
    topic = f"changed while {returning.user_id} was away"
    for n, text in enumerate(missed):
        await _say(session, speaker, room_id, text)
        if n == len(missed) // 2:
            await _put_state(session, speaker, room_id, "m.room.topic", {"topic": topic})
    await asyncio.sleep(0.5)  # the speaker's server has tried and failed by now
    await restart()
    back = f"{returning.user_id} is back"
    await _say(session, returning, room_id, back)
    assert back in await _sync_until(session, speaker, room_id, {back})

    async def caught_up() -> bool:
        return set(missed) <= set(await _history(session, returning, room_id))

    await _eventually(f"{returning.user_id} catching up", caught_up)
    assert (await _state(session, returning, room_id, "m.room.topic"))["topic"] == topic


def _stop_synapse(synapse: SynapseNode) -> None:
    assert synapse.terminate() == 0, synapse.log()[-5000:]


def _stop_ranvier(ranvier: Node) -> None:
    """Stop it and check its log (which its next start overwrites)."""
    assert ranvier.server is not None
    assert ranvier.server.terminate() == 0, ranvier.server.log()
    assert "Traceback" not in ranvier.server.log(), ranvier.server.log()


async def test_ranvier_and_synapse_federate(
    network: tuple[Node, SynapseNode], session: aiohttp.ClientSession
) -> None:
    _require_synapse()  # a failure of the test itself, not an error of a fixture
    ranvier, synapse = network
    ranvier.start()
    synapse.start()
    assert ranvier.server is not None
    await ranvier.server.wait_ready(session)
    await synapse.wait_ready(session)
    alice = await _register(session, ranvier, "alice")
    sam = await _register(session, synapse, "sam")

    ranvier_rooms: dict[str, str] = {}
    synapse_rooms: dict[str, str] = {}
    for version in ROOM_VERSIONS:
        ranvier_rooms[version] = await _synapse_joins_ranvier_room(session, alice, sam, version)
        synapse_rooms[version] = await _ranvier_joins_synapse_room(
            session, alice, sam, version, by_alias=version == "10"
        )
    ranvier_room, synapse_room = ranvier_rooms["12"], synapse_rooms["12"]
    await _state_and_redactions(session, alice, sam, ranvier_room)
    await _state_and_redactions(session, sam, alice, synapse_room)
    await _concurrent_changes_converge(session, alice, sam, ranvier_room)
    await _concurrent_changes_converge(session, alice, sam, synapse_room)
    await _displayname_change(session, sam, alice, ranvier_room)
    await _displayname_change(session, alice, sam, synapse_room)
    await _restricted_join(session, alice, sam, ranvier_room)
    await _restricted_join(session, sam, alice, synapse_room)
    await _unusual_text(session, alice, sam, ranvier_room)
    await _kicked_and_back(session, alice, sam, ranvier_room)
    await _kicked_and_back(session, sam, alice, synapse_room)

    async def restart_synapse() -> None:
        synapse.start()
        await synapse.wait_ready(session)

    async def restart_ranvier() -> None:
        await ranvier.start().wait_ready(session)

    await _catch_up(
        session, alice, sam, ranvier_rooms["10"], lambda: _stop_synapse(synapse), restart_synapse
    )
    await _catch_up(
        session, sam, alice, synapse_rooms["10"], lambda: _stop_ranvier(ranvier), restart_ranvier
    )

    await _leave(session, sam, ranvier_room, alice)
    await _leave(session, alice, synapse_room, sam)

    _stop_synapse(synapse)
    _stop_ranvier(ranvier)


#: Said in a Synapse room before a Ranvier user joins it: more than the
#: timeline the join brings, so the rest must come from Synapse's /backfill.
SYNAPSE_HISTORY_MESSAGES = 40


async def _ranvier_backfills_synapse_room(
    session: aiohttp.ClientSession, alice: User, sam: User, synapse: SynapseNode, version: str
) -> None:
    """Alice (Ranvier) joins a Synapse room with history; paginating /messages
    back from Ranvier reaches every earlier message, in order (Ranvier fetches
    it with Synapse's /backfill: services/federation/backfill.py)."""
    room_id = await _create_room(session, sam, version, f"Synapse room v{version} with history")
    before = [f"v{version} Synapse history {n}" for n in range(SYNAPSE_HISTORY_MESSAGES)]
    for text in before:
        await _say(session, sam, room_id, text)
    await _join_through(session, alice, room_id, server_name_of(sam.user_id))
    assert await _joined(session, alice, room_id) == {alice.user_id, sam.user_id}
    assert await _history(session, alice, room_id) == before
    # The history came from Synapse's /backfill, asked by Ranvier.
    backfill = f'200 "GET /_matrix/federation/v1/backfill/{quote(room_id, safe="")}?'
    assert any(backfill in line and '"Ranvier/' in line for line in synapse.log().splitlines()), (
        backfill
    )


async def _invited_rooms(session: aiohttp.ClientSession, user: User) -> dict[str, Any]:
    """The rooms of a full /sync's rooms.invite (a full sync: an invite stays there)."""
    answer = await _call(session, user.node, "GET", "/sync?timeout=0", user.token)
    invites: dict[str, Any] = answer.get("rooms", {}).get("invite", {})
    return invites


async def _invite(
    session: aiohttp.ClientSession, inviter: User, invitee: User, room_id: str
) -> None:
    path = _room_path(room_id, "/invite")
    await _call(session, inviter.node, "POST", path, inviter.token, {"user_id": invitee.user_id})


async def _wait_for_invite(session: aiohttp.ClientSession, user: User, room_id: str) -> None:
    async def invited() -> bool:
        return room_id in await _invited_rooms(session, user)

    await _eventually(f"the invite to {room_id} in {user.user_id}'s /sync", invited)
    state = (await _invited_rooms(session, user))[room_id]["invite_state"]["events"]
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == user.user_id
        and e["content"]["membership"] == "invite"
        for e in state
    ), state


async def _invite_accepted(
    session: aiohttp.ClientSession, inviter: User, invitee: User, name: str
) -> None:
    """The inviter (of one server) invites the invitee (of the other) to a
    private room; the invite shows in the invitee's /sync and, once joined,
    both are members on both sides (Server-Server API, invite v2)."""
    body = {"preset": "private_chat", "name": name, "room_version": "12"}
    room_id = (await _call(session, inviter.node, "POST", "/createRoom", inviter.token, body))[
        "room_id"
    ]
    await _invite(session, inviter, invitee, room_id)
    await _wait_for_invite(session, invitee, room_id)
    # No via: the invitee's server joins through the inviting server.
    answer = await _call(
        session, invitee.node, "POST", f"/join/{quote(room_id, safe='')}", invitee.token, {}
    )
    assert answer["room_id"] == room_id
    assert await _joined(session, inviter, room_id) == {inviter.user_id, invitee.user_id}
    assert await _joined(session, invitee, room_id) == {inviter.user_id, invitee.user_id}
    assert room_id not in await _invited_rooms(session, invitee)
    await _exchange(session, inviter, invitee, room_id, name)


async def _invite_rejected(
    session: aiohttp.ClientSession, inviter: User, invitee: User, name: str
) -> None:
    """The invitee rejects (leaves) an invite from the other server: the
    inviting server sees the invitee's membership become leave (make_leave /
    send_leave)."""
    body = {"preset": "private_chat", "name": name, "room_version": "12"}
    room_id = (await _call(session, inviter.node, "POST", "/createRoom", inviter.token, body))[
        "room_id"
    ]
    await _invite(session, inviter, invitee, room_id)
    await _wait_for_invite(session, invitee, room_id)
    await _call(session, invitee.node, "POST", _room_path(room_id, "/leave"), invitee.token, {})

    async def rejected_at_inviter() -> bool:
        member = await _state(session, inviter, room_id, "m.room.member", invitee.user_id)
        return member.get("membership") == "leave"

    await _eventually(f"{invitee.user_id}'s rejection at {inviter.user_id}", rejected_at_inviter)
    assert room_id not in await _invited_rooms(session, invitee)
    assert await _joined(session, inviter, room_id) == {inviter.user_id}


async def test_ranvier_backfills_and_invites_with_synapse(
    network: tuple[Node, SynapseNode], session: aiohttp.ClientSession
) -> None:
    _require_synapse()
    ranvier, synapse = network
    ranvier.start()
    synapse.start()
    assert ranvier.server is not None
    await ranvier.server.wait_ready(session)
    await synapse.wait_ready(session)
    alice = await _register(session, ranvier, "alice")
    sam = await _register(session, synapse, "sam")

    for version in ROOM_VERSIONS:
        await _ranvier_backfills_synapse_room(session, alice, sam, synapse, version)
    await _invite_accepted(session, sam, alice, "Synapse invites Ranvier")
    await _invite_rejected(session, sam, alice, "Synapse invite rejected by Ranvier")
    await _invite_accepted(session, alice, sam, "Ranvier invites Synapse")
    await _invite_rejected(session, alice, sam, "Ranvier invite rejected by Synapse")

    _stop_synapse(synapse)
    _stop_ranvier(ranvier)


async def _nio_peer(node: Node | SynapseNode, tmp_path: Path, name: str, ca_file: Path) -> E2eePeer:
    """A registered nio client with olm/megolm, trusting the test CA (Synapse's
    client API is on its TLS listener)."""
    peer = E2eePeer(node, tmp_path / f"{name}-store")  # type: ignore[arg-type]
    peer.client.ssl = ssl.create_default_context(cafile=str(ca_file))
    response = await peer.client.register(name, PASSWORD, device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    await peer.sync()
    assert peer.client.olm is not None and not peer.client.should_upload_keys
    return peer


async def _encrypted_chat(alice: E2eePeer, sam: E2eePeer) -> None:
    """Alice (Ranvier) creates an encrypted room and invites Sam (Synapse):
    each learns the other's device through its own server (/user/keys/query
    across), one-time keys are claimed across (/user/keys/claim), megolm keys
    travel as to-device EDUs, and messages decrypt both ways."""
    created = await alice.client.room_create(
        name="Secrets with Synapse", invite=[sam.client.user_id], initial_state=[ENCRYPTION]
    )
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await sam.sync_until(lambda: room_id in sam.client.invited_rooms, "the invite")
    assert isinstance(await sam.client.join(room_id), JoinResponse)
    await sam.sync_until(lambda: room_id in sam.client.rooms, "the joined room")
    assert sam.client.rooms[room_id].encrypted
    await alice.sync_until(
        lambda: (
            room_id in alice.client.rooms
            and sam.client.user_id in alice.client.rooms[room_id].users
        ),
        "sam joining",
    )
    await alice.sync_until(
        lambda: sam.client.device_id in alice.client.device_store[sam.client.user_id],
        "sam's device",
    )
    await sam.sync_until(
        lambda: alice.client.device_id in sam.client.device_store[alice.client.user_id],
        "alice's device",
    )
    await alice.send(room_id, "from Ranvier, encrypted")
    await sam.sync_until(lambda: "from Ranvier, encrypted" in sam.bodies(), "alice's message")
    await sam.send(room_id, "from Synapse, encrypted")
    await alice.sync_until(lambda: "from Synapse, encrypted" in alice.bodies(), "sam's message")
    assert alice.undecryptable == [] and sam.undecryptable == []
    received = next(e for e in sam.decrypted if e.body == "from Ranvier, encrypted")
    assert received.sender == alice.client.user_id


async def test_e2ee_between_ranvier_and_synapse(
    network: tuple[Node, SynapseNode],
    session: aiohttp.ClientSession,
    test_ca: tuple[trustme.CA, Path],
    tmp_path: Path,
) -> None:
    _require_synapse()
    ranvier, synapse = network
    ranvier.start()
    synapse.start()
    assert ranvier.server is not None
    await ranvier.server.wait_ready(session)
    await synapse.wait_ready(session)
    alice = await _nio_peer(ranvier, tmp_path, "alice", test_ca[1])
    sam = await _nio_peer(synapse, tmp_path, "sam", test_ca[1])
    try:
        await _encrypted_chat(alice, sam)
    finally:
        await alice.client.close()
        await sam.client.close()
    # Ranvier asked Synapse for Sam's keys and claimed his one-time key;
    # Synapse fetched Alice's devices and keys from Ranvier (/user/devices).
    for path in ("/user/keys/query", "/user/keys/claim"):
        line = f'200 "POST /_matrix/federation/v1{path} HTTP/1.1" "Ranvier/'
        assert line in synapse.log(), path
    assert ranvier.server is not None
    devices = f"/_matrix/federation/v1/user/devices/{quote(alice.client.user_id, safe='')}"
    assert f'"GET {devices}" 200' in ranvier.server.log()

    _stop_synapse(synapse)
    _stop_ranvier(ranvier)
