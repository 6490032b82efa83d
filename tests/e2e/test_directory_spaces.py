"""Real clients against a real `ranvier serve`: matrix-nio (on SQLite and
PostgreSQL) and matrix-js-sdk publish rooms and find them in the public room
directory (search term, room type filter), build a space with a sub-space and
read its hierarchy. And two real servers federating: one's user reads the
other's directory, a room summary and a space hierarchy through federation."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from nio import (
    AsyncClient,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetVisibilityResponse,
    RoomPutStateResponse,
    RoomVisibility,
)
from nio.responses import PublicRoomsResponse, SpaceGetHierarchyResponse

from tests.e2e.harness import Server, free_port, init_config, postgres_database
from tests.e2e.test_federation_two_ranvier import (
    Node,
    _call,
    _pair,
    nodes,  # noqa: F401  (fixture)
)
from tests.e2e.test_federation_two_ranvier import _register as _register_on
from tests.e2e.test_js_sdk import JS_DIR, NODE, _register

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
async def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    if request.param == "postgresql":
        async with postgres_database() as dsn:
            env["RANVIER_DATABASE"] = dsn
            async for url in _serve(tmp_path, env):
                yield url
    else:
        async for url in _serve(tmp_path, env):
            yield url


async def _serve(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[str]:
    server = Server(init_config(tmp_path), free_port(), **env)
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
        yield server.base_url
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()


async def _registered(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, "")
    response = await client.register(name, f"{name}-password-1")
    assert isinstance(response, RegisterResponse), response
    return client


async def _room(client: AsyncClient, **kwargs: object) -> str:
    response = await client.room_create(**kwargs)  # type: ignore[arg-type]
    assert isinstance(response, RoomCreateResponse), response
    return response.room_id


async def _child(client: AsyncClient, parent: str, child: str, **content: object) -> None:
    server = (client.user_id or "").split(":", 1)[1]
    response = await client.room_put_state(
        parent, "m.space.child", {"via": [server], **content}, state_key=child
    )
    assert isinstance(response, RoomPutStateResponse), response


async def test_nio_directory_and_spaces(server_url: str) -> None:
    alice = await _registered(server_url, "alice")
    bob = await _registered(server_url, "bob")
    try:
        garden = await _room(
            alice, visibility=RoomVisibility.public, name="Garden chat", topic="Tomatoes"
        )
        space = await _room(
            alice, visibility=RoomVisibility.public, name="Garden space", space=True
        )
        sub = await _room(alice, name="Greenhouse", space=True, preset=None)
        leaf = await _room(alice, name="Seeds")
        await _room(alice, name="Private garden")  # not published
        visibility = await alice.room_get_visibility(garden)
        assert isinstance(visibility, RoomGetVisibilityResponse), visibility
        assert visibility.visibility == "public"

        found = await bob.list_public_rooms(filter_generic_search_term="garden")
        assert isinstance(found, PublicRoomsResponse), found
        assert sorted(r.room_id for r in found.public_rooms) == sorted([garden, space])
        spaces = await bob.list_public_rooms(filter_room_types=["m.space"])
        assert isinstance(spaces, PublicRoomsResponse), spaces
        assert [r.room_id for r in spaces.public_rooms] == [space]
        assert spaces.public_rooms[0].room_type == "m.space"
        plain = await bob.list_public_rooms(filter_room_types=[None])
        assert isinstance(plain, PublicRoomsResponse), plain
        assert [(r.room_id, r.topic) for r in plain.public_rooms] == [(garden, "Tomatoes")]

        await _child(alice, space, sub, order="1")
        await _child(alice, space, garden, order="2")
        await _child(alice, sub, leaf)
        tree = await alice.space_get_hierarchy(space)
        assert isinstance(tree, SpaceGetHierarchyResponse), tree
        assert [r["room_id"] for r in tree.rooms] == [space, sub, leaf, garden]
        shallow = await alice.space_get_hierarchy(space, max_depth=1)
        assert isinstance(shallow, SpaceGetHierarchyResponse), shallow
        assert [r["room_id"] for r in shallow.rooms] == [space, sub, garden]
    finally:
        await alice.close()
        await bob.close()


def test_js_sdk_directory_and_spaces(tmp_path: Path) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    server = Server(
        init_config(tmp_path),
        free_port(),
        RANVIER_REGISTRATION_ENABLED="true",
        RANVIER_RATELIMIT_ENABLED="false",
    )
    try:

        async def prepare() -> None:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session)
            await _register(server.base_url, "jsuser", "js-password-1")

        asyncio.run(prepare())
        result = subprocess.run(
            [str(NODE), "directory.mjs", server.base_url, "jsuser", "js-password-1"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()[-3000:]}"
        (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
        out = json.loads(line.removeprefix("RESULT "))
        assert out["searched"] == sorted([out["lobby"], out["space"]])
        assert len(out["searched_names"]) == 2
        assert out["spaces_only"] == [out["space"]]
        assert out["plain_only"] == [out["lobby"]]
        assert out["anonymous_count"] == 1
        assert out["hierarchy"] == [out["space"], out["subspace"], out["leaf"], out["lobby"]]
        assert out["shallow"] == [out["space"], out["subspace"], out["lobby"]]
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()


async def test_two_servers_directory_summary_and_hierarchy(
    tmp_path: Path,
    nodes: list[Node],  # noqa: F811  (the fixture imported above)
) -> None:
    """B's user reads A's directory, a summary of A's room and, once in A's
    space, its hierarchy, whose children B knows only through A (federation
    /publicRooms and /hierarchy between two real servers)."""
    a, b = _pair(tmp_path, nodes)
    async with aiohttp.ClientSession() as session:
        for node in (a, b):
            await node.start().wait_ready(session)
        alice = await _register_on(session, a, "alice")
        bob = await _register_on(session, b, "bob")

        async def create(**body: object) -> str:
            answer = await _call(session, a, "POST", "/createRoom", alice.token, body)
            return str(answer["room_id"])

        space = await create(
            preset="public_chat",
            visibility="public",
            name="A space",
            creation_content={"type": "m.space"},
        )
        sub = await create(
            preset="public_chat", name="A sub-space", creation_content={"type": "m.space"}
        )
        room = await create(preset="public_chat", visibility="public", name="A room", topic="On A")
        secret = await create(preset="private_chat", name="A secret")
        for parent, child, order in ((space, sub, "1"), (space, room, "2"), (sub, secret, "3")):
            path = f"/rooms/{quote(parent, safe='')}/state/m.space.child/{quote(child, safe='')}"
            body = {"via": [a.server_name], "order": order}
            await _call(session, a, "PUT", path, alice.token, body)

        server = quote(a.server_name, safe="")
        page = await _call(session, b, "GET", f"/publicRooms?server={server}", bob.token)
        assert sorted(r["room_id"] for r in page["chunk"]) == sorted([space, room])
        page = await _call(
            session,
            b,
            "POST",
            f"/publicRooms?server={server}",
            bob.token,
            {"filter": {"generic_search_term": "on a", "room_types": [None]}},
        )
        assert [(r["room_id"], r["topic"]) for r in page["chunk"]] == [(room, "On A")]

        async with session.get(
            f"{b.base_url}/_matrix/client/v1/room_summary/{quote(room, safe='')}?via={server}",
            headers={"Authorization": f"Bearer {bob.token}"},
        ) as response:
            summary = await response.json()
            assert response.status == 200, summary
        assert (summary["room_id"], summary["name"], summary["num_joined_members"]) == (
            room,
            "A room",
            1,
        )

        path = f"/join/{quote(space, safe='')}?via={server}"
        assert await _call(session, b, "POST", path, bob.token, {}) == {"room_id": space}
        async with session.get(
            f"{b.base_url}/_matrix/client/v1/rooms/{quote(space, safe='')}/hierarchy",
            headers={"Authorization": f"Bearer {bob.token}"},
        ) as response:
            tree = await response.json()
            assert response.status == 200, tree
        # The secret room is A's private one: B's user may not see it.
        assert [r["room_id"] for r in tree["rooms"]] == [space, sub, room]
        assert [c["state_key"] for c in tree["rooms"][1]["children_state"]] == [secret]
    for node in (a, b):
        assert node.server is not None
        assert "Traceback" not in node.server.log(), node.server.log()
