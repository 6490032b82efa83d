"""Helpers for the invite, leave and knock tests over federation: an app named
``us.example`` that knows the keys of a fake remote ``remote.test`` (the key
tests/federation_dag.py signs its events with), signed inbound requests, and a
scripted :class:`RemoteMemberships` for outbound calls."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
import pytest
from yarl import URL

from ranvier.core.events import Event, add_event_signature, hash_and_sign_event
from ranvier.core.room_versions import get_room_version
from ranvier.homeserver import Homeserver
from ranvier.services.federation.client import FederationResponseError, FederationUnreachable
from ranvier.services.federation.events import FederationEventHandler
from ranvier.services.federation.joins import JoinService
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
async def fed_client_fixture(
    make_client: MakeClient, remote: FakeServer, migrated_dsn: str
) -> Client:
    client = await make_client(
        {
            "server_name": US,
            "database": migrated_dsn,
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


class ResidentOf:
    """The remote room's server answering make_join/send_join (RemoteJoins)."""

    def __init__(self, room: RemoteRoom, invite: Event | None) -> None:
        self.room, self.invite = room, invite
        self.head = invite if invite is not None else room.name

    async def make_join(
        self, destination: str, room_id: str, user_id: str, versions: Sequence[str]
    ) -> Mapping[str, Any]:
        room = self.room
        template = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": {"membership": "join"},
            "origin_server_ts": 1,
            "depth": self.head.depth + 1,
            "prev_events": [self.head.event_id],
            "auth_events": [
                room.create.event_id,
                room.power.event_id,
                room.join_rules.event_id,
                *([] if self.invite is None else [self.invite.event_id]),
            ],
        }
        return {"room_version": "10", "event": template}

    async def send_join(
        self, destination: str, room_id: str, event_id: str, pdu: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        room = self.room
        state = [room.create, room.creator_join, room.power, room.join_rules, room.name]
        return {
            "origin": REMOTE,
            "state": [dict(e.pdu) for e in [*state, *([self.invite] if self.invite else [])]],
            "auth_chain": [dict(e.pdu) for e in state],
            "event": dict(pdu),
        }


class NoFetching:
    async def get_missing_events(self, *args: Any) -> list[Mapping[str, Any]]:
        raise AssertionError("nothing to fetch")

    async def state_ids(self, *args: Any) -> tuple[list[str], list[str]]:
        raise AssertionError("nothing to fetch")

    async def event(self, *args: Any) -> Mapping[str, Any] | None:
        raise AssertionError("nothing to fetch")


def join_service(hs: Homeserver, room: RemoteRoom, invite: Event | None) -> JoinService:
    """A JoinService whose resident is ``room``'s server (nothing is fetched)."""
    checker = hs.federation_invites.checker
    handler = FederationEventHandler(hs, NoFetching(), checker.verify)
    return JoinService(hs, ResidentOf(room, invite), checker.verify, handler)
