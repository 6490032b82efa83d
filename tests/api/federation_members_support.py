"""Helpers for the invite, leave and knock tests over federation: an app named
``us.example`` that knows the keys of a fake remote ``remote.test`` (the key
tests/federation_dag.py signs its events with), signed inbound requests, and a
scripted :class:`RemoteMemberships` for outbound calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest
from yarl import URL

from ranvier.core.events import Event, add_event_signature, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
from ranvier.services.federation.client import FederationResponseError, FederationUnreachable
from tests.api.conftest import NOW_MS, MakeClient
from tests.api.rooms_support import Client, hs_of
from tests.federation_dag import CREATOR, REMOTE_KEY, Dag, state_of
from tests.federation_support import FakeServer

US = "us.example"
REMOTE = "remote.test"
HOUR = 3_600_000
BOB = f"@bob:{US}"
VERSION = get_room_version("10")


@pytest.fixture(name="remote")
def remote_fixture() -> FakeServer:
    return FakeServer(REMOTE, REMOTE_KEY)


@pytest.fixture(name="fed_client")
async def fed_client_fixture(make_client: MakeClient, remote: FakeServer, database_dsn: str) -> Client:
    client = await make_client(
        {
            "server_name": US,
            "database": database_dsn,
            "ratelimit": {"enabled": False},
            "password_hashing": {"time_cost": 1, "memory_cost": 32},
        }
    )
    await hs_of(client).keyring.store_keys(remote.key_rows(NOW_MS - HOUR, NOW_MS + HOUR))
    return client


async def federation_request(
    client: Client, remote: FakeServer, method: str, path: str, content: Any = None
) -> tuple[int, Any]:
    """A request of ``remote``, X-Matrix signed; ``path`` already percent-encoded."""
    header = remote.authorization(US, method, path, content)
    body = None if content is None else orjson.dumps(content)
    response = await client.request(
        method, URL(path, encoded=True), data=body, headers={"Authorization": header}
    )
    return response.status, await response.json()


class RemoteRoom:
    """A room of ``remote.test``: create, creator's join, power levels, join rules
    (``invite`` unless told), a name."""

    def __init__(self, join_rule: str = "invite", room_id: str = "!room:remote.test") -> None:
        dag = self.dag = Dag(room_id)
        self.create = dag.event(
            "m.room.create", CREATOR, {"creator": CREATOR, "room_version": "10"}, [], [], ""
        )
        self.creator_join = dag.event(
            "m.room.member", CREATOR, {"membership": "join"}, [self.create], [self.create], CREATOR
        )
        base = [self.create, self.creator_join]
        self.power = dag.event(
            "m.room.power_levels",
            CREATOR,
            {"users": {CREATOR: 100}, "invite": 0},
            [self.creator_join],
            base,
            "",
        )
        self.auth = [*base, self.power]
        self.join_rules = dag.event(
            "m.room.join_rules", CREATOR, {"join_rule": join_rule}, [self.power], self.auth, ""
        )
        self.name = dag.event(
            "m.room.name", CREATOR, {"name": "Remote room"}, [self.join_rules], self.auth, ""
        )
        self.state = state_of(
            self.create, self.creator_join, self.power, self.join_rules, self.name
        )

    @property
    def room_id(self) -> str:
        return self.dag.room_id

    def invite(self, invitee: str, sender: str = CREATOR, **overrides: Any) -> Event:
        event = self.dag.event(
            "m.room.member",
            sender,
            {"membership": "invite"},
            [self.name],
            [*self.auth, self.join_rules],
            invitee,
        )
        if not overrides:
            return event
        pdu = {k: v for k, v in event.pdu.items() if k not in ("hashes", "signatures")}
        pdu.update(overrides)
        return Event.from_pdu(VERSION, hash_and_sign_event(VERSION, pdu, REMOTE, REMOTE_KEY))

    def stripped_state(self) -> list[dict[str, Any]]:
        return [
            {"type": e.type, "state_key": e.state_key, "sender": e.sender, "content": e.content}
            for e in (self.create, self.join_rules, self.name)
        ]


class ScriptedRemote:
    """A :class:`RemoteMemberships` whose answers the test scripts; ``calls``
    records every request. ``invite_answer`` by default counter-signs the
    invite with the remote's key, as a real invitee's server does."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.invite_answer: Callable[[Mapping[str, Any]], Any] | Exception = countersign
        self.make_answers: dict[str, Any] = {}
        self.send_answers: dict[str, Callable[[Mapping[str, Any]], Any] | Exception] = {}

    async def send_invite(
        self, destination: str, room_id: str, event_id: str, body: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        self.calls.append(("invite", destination, room_id, event_id, body))
        if isinstance(self.invite_answer, Exception):
            raise self.invite_answer
        return dict(self.invite_answer(body))

    async def make_membership(
        self, kind: str, destination: str, room_id: str, user_id: str, versions: list[str] | None
    ) -> Mapping[str, Any]:
        self.calls.append(("make_" + kind, destination, room_id, user_id))
        answer = self.make_answers.get(kind)
        if answer is None:
            raise FederationUnreachable(destination, "unreachable")
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    async def send_membership(
        self, kind: str, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        self.calls.append(("send_" + kind, destination, room_id, event_id, pdu))
        answer = self.send_answers.get(kind)
        if answer is None:
            raise FederationUnreachable(destination, "unreachable")
        if isinstance(answer, Exception):
            raise answer
        return dict(answer(pdu))


def countersign(body: Mapping[str, Any]) -> dict[str, Any]:
    version = get_room_version(body["room_version"])
    return {"event": add_event_signature(version, body["event"], REMOTE, REMOTE_KEY)}


def refusal(status: int, errcode: str) -> FederationResponseError:
    return FederationResponseError(REMOTE, status, {"errcode": errcode, "error": "no"})
