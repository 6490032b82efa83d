"""Server-side search and the user directory through a real `ranvier serve`, on
SQLite and PostgreSQL, with the same answers on both.

matrix-nio clients register, chat and set their profiles; nio has no search
call, so its access token drives POST /search and /user_directory/search over
raw HTTP (history with context, profiles and next_batch pagination). Then
matrix-js-sdk (tests/e2e/js/search.mjs) does what Element does:
``searchRoomEvents`` + ``backPaginateRoomEventsSearch`` and ``searchUserDirectory``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import AsyncClient, JoinResponse, RegisterResponse, RoomCreateResponse, RoomSendResponse

from tests.e2e.harness import Server, free_port, init_config, postgres_database
from tests.e2e.test_js_sdk import JS_DIR, NODE

pytestmark = pytest.mark.e2e

REPORTS = 9


async def _registered(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, "")
    response = await client.register(name, f"{name}-password-1", device_name=f"{name}'s nio")
    assert isinstance(response, RegisterResponse), response
    return client


async def _post(url: str, client: AsyncClient, path: str, body: Any) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/_matrix/client/v3{path}",
            json=body,
            headers={"Authorization": f"Bearer {client.access_token}"},
        ) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def _search_all_pages(url: str, client: AsyncClient, term: str) -> dict[str, Any]:
    """Every page of a recent-order search with context, as bodies."""
    criteria = {
        "search_term": term,
        "order_by": "recent",
        "filter": {"limit": 4},
        "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": True},
    }
    pages: list[list[dict[str, Any]]] = []
    token: str | None = None
    while True:
        path = "/search" if token is None else f"/search?next_batch={token}"
        found = (await _post(url, client, path, {"search_categories": {"room_events": criteria}}))[
            "search_categories"
        ]["room_events"]
        pages.append(
            [
                {
                    "body": item["result"]["content"]["body"],
                    "before": [
                        e["content"].get("body", e["type"])
                        for e in item["context"]["events_before"]
                    ],
                    "after": [
                        e["content"].get("body", e["type"]) for e in item["context"]["events_after"]
                    ],
                    "names": sorted(
                        p.get("displayname", "") for p in item["context"]["profile_info"].values()
                    ),
                }
                for item in found["results"]
            ]
        )
        token = found.get("next_batch")
        if token is None:
            return {"pages": pages, "count": found["count"], "highlights": found["highlights"]}


async def _scenario(url: str) -> dict[str, Any]:
    alice = await _registered(url, "alice")
    bob = await _registered(url, "bob")
    carol = await _registered(url, "carol")
    try:
        await alice.set_displayname("Alice Liddell")
        created = await alice.room_create(name="Reports", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        for i in range(REPORTS):
            for client, body in ((alice, f"quarterly report part {i}"), (bob, f"coffee {i}")):
                sent = await client.room_send(
                    room_id, "m.room.message", {"msgtype": "m.text", "body": body}
                )
                assert isinstance(sent, RoomSendResponse), sent
        outcome = {
            "nio": await _search_all_pages(url, bob, "Quarterly REP"),
            "outsider": await _search_all_pages(url, carol, "report"),
            "directory": (await _post(url, bob, "/user_directory/search", {"search_term": "lidd"})),
            "directory_outsider": (
                await _post(url, carol, "/user_directory/search", {"search_term": "alice"})
            ),
        }
    finally:
        for client in (alice, bob, carol):
            await client.close()
    return outcome


def _js_search(url: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(NODE), "search.mjs", url, "bob", "bob-password-1", "report", "4", "lidd"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    outcome: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return outcome


async def _on_engine(engine: str, tmp_path: Path) -> dict[str, Any]:
    config = init_config(tmp_path / engine)
    env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
    async with _database(engine) as dsn:
        if dsn is not None:
            env["RANVIER_DATABASE"] = dsn
        server = Server(config, free_port(), **env)
        try:
            async with aiohttp.ClientSession() as session:
                await server.wait_ready(session)
            outcome = await _scenario(server.base_url)
            outcome["js"] = await asyncio.to_thread(_js_search, server.base_url)
        finally:
            server.kill()
        assert "Traceback" not in server.log(), server.log()
    return outcome


class _NoDatabase:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _database(engine: str) -> Any:
    return postgres_database() if engine == "postgresql" else _NoDatabase()


def _expected_nio_results() -> list[dict[str, Any]]:
    results = []
    for i in reversed(range(REPORTS)):
        before = [f"coffee {i - 1}"] if i else ["m.room.member"]  # bob's join
        results.append(
            {
                "body": f"quarterly report part {i}",
                "before": before,
                "after": [f"coffee {i}"],
                "names": ["Alice Liddell", "bob"],
            }
        )
    return results


def test_search_history_and_user_directory_same_on_both_engines(tmp_path: Path) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    outcomes = {
        engine: asyncio.run(_on_engine(engine, tmp_path)) for engine in ("sqlite", "postgresql")
    }
    sqlite = outcomes["sqlite"]
    assert sqlite == outcomes["postgresql"]

    expected = _expected_nio_results()
    nio = sqlite["nio"]
    assert [len(page) for page in nio["pages"]] == [4, 4, 1]
    assert [item for page in nio["pages"] for item in page] == expected
    assert nio["count"] == REPORTS
    assert nio["highlights"] == ["quarterly", "rep", "report"]
    assert sqlite["outsider"] == {"pages": [[]], "count": 0, "highlights": ["report"]}

    alice_entry = {"user_id": "@alice:localhost", "display_name": "Alice Liddell"}
    assert sqlite["directory"] == {"limited": False, "results": [alice_entry]}
    assert sqlite["directory_outsider"] == {"limited": False, "results": []}

    js = sqlite["js"]
    assert js["pages"] == 3
    # "report" also finds the room's name, "Reports" (content.name), the oldest hit.
    assert js["count"] == REPORTS + 1
    assert js["highlights"] == ["report", "reports"]
    assert [r.get("body") for r in js["results"]] == [e["body"] for e in expected] + [None]
    assert {r["sender"] for r in js["results"]} == {"@alice:localhost"}
    # The SDK's context timeline: the event before, the result, the event after.
    assert js["results"][0]["context"] == [
        f"coffee {REPORTS - 2}",
        f"quarterly report part {REPORTS - 1}",
        f"coffee {REPORTS - 1}",
    ]
    assert js["users"] == [alice_entry] and js["limited"] is False
