"""POST /join/{roomIdOrAlias} and /rooms/{roomId}/join for rooms this server is
not in: which servers the join goes through (``via``, ``server_name``, a
remote alias's answer, the alias's and room ID's servers), with the
federation join itself recorded by a fake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ranvier.errors import MatrixError
from tests.api.conftest import MakeClient
from tests.api.rooms_support import (
    ROOMS_CONFIG,
    Client,
    User,
    call,
    create_room,
    hs_of,
    make_user,
    q,
)


class FakeJoins:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []

    async def join_remote_room(self, user_id: str, room_id: str, servers: Sequence[str]) -> str:
        self.calls.append((user_id, room_id, list(servers)))
        return room_id


class FakeDirectory:
    def __init__(self, answers: dict[str, tuple[str, list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def query_directory(self, destination: str, room_alias: str) -> tuple[str, list[str]]:
        self.calls.append((destination, room_alias))
        if room_alias not in self.answers:
            raise MatrixError(404, "M_NOT_FOUND", "Room alias not found")
        return self.answers[room_alias]


@pytest.fixture
async def setup(make_client: MakeClient) -> tuple[Client, User, FakeJoins]:
    client = await make_client({**ROOMS_CONFIG, "server_name": "localhost"})
    hs = hs_of(client)
    joins = FakeJoins()
    hs.federation_joins = joins  # type: ignore[assignment]
    hs.federation_transport = FakeDirectory(  # type: ignore[assignment]
        {"#lobby:a.test": ("!room:b.test", ["c.test", "localhost", "a.test"])}
    )
    return client, await make_user(client, "alice"), joins


async def test_join_by_room_id_tries_via_then_the_rooms_server(
    setup: tuple[Client, User, FakeJoins],
) -> None:
    client, alice, joins = setup
    path = f"/join/{q('!room:b.test')}?via=x.test&server_name=y.test&via=b.test"
    assert await call(client, "POST", path, alice, {}) == (200, {"room_id": "!room:b.test"})
    # via (in order), then the deprecated server_name; each server once.
    assert joins.calls == [(alice.user_id, "!room:b.test", ["x.test", "b.test", "y.test"])]


async def test_rooms_join_goes_over_federation_too(setup: tuple[Client, User, FakeJoins]) -> None:
    client, alice, joins = setup
    path = f"/rooms/{q('!room:b.test')}/join"
    assert await call(client, "POST", path, alice, {}) == (200, {"room_id": "!room:b.test"})
    assert joins.calls == [(alice.user_id, "!room:b.test", ["b.test"])]


async def test_join_by_remote_alias_uses_the_directory_answer(
    setup: tuple[Client, User, FakeJoins],
) -> None:
    client, alice, joins = setup
    status, body = await call(client, "POST", f"/join/{q('#lobby:a.test')}", alice, {})
    assert (status, body) == (200, {"room_id": "!room:b.test"})
    directory: Any = hs_of(client).federation_transport
    assert directory.calls == [("a.test", "#lobby:a.test")]
    # The directory's servers (never this one), then the alias's and room's servers.
    assert joins.calls == [(alice.user_id, "!room:b.test", ["c.test", "a.test", "b.test"])]


async def test_an_unknown_remote_alias_is_404(setup: tuple[Client, User, FakeJoins]) -> None:
    client, alice, joins = setup
    status, body = await call(client, "POST", f"/join/{q('#nothing:a.test')}", alice, {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert joins.calls == []


async def test_a_room_this_server_is_in_is_joined_locally(
    setup: tuple[Client, User, FakeJoins],
) -> None:
    client, alice, joins = setup
    room_id = await create_room(client, alice, preset="public_chat")
    bob = await make_user(client, "bob")
    assert await call(client, "POST", f"/join/{q(room_id)}?via=x.test", bob, {}) == (
        200,
        {"room_id": room_id},
    )
    assert joins.calls == []
    assert await hs_of(client).rooms.get_membership(room_id, bob.user_id) == "join"


async def test_an_invalid_via_is_400(setup: tuple[Client, User, FakeJoins]) -> None:
    client, alice, joins = setup
    path = f"/join/{q('!room:b.test')}?via={q('not a server')}"
    status, body = await call(client, "POST", path, alice, {})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert joins.calls == []


async def test_a_v12_room_id_without_via_has_nowhere_to_join(
    setup: tuple[Client, User, FakeJoins],
) -> None:
    client, alice, joins = setup
    room_id = "!" + "a" * 43
    status, body = await call(client, "POST", f"/join/{q(room_id)}", alice, {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert joins.calls == []
