"""matrix-js-sdk (Element's SDK) with thread support against a real `ranvier
serve` on SQLite and PostgreSQL: the thread list (GET /threads), a thread's
replies (GET /relations), an edit replacing the shown content (the SDK applies
the bundled m.replace, v1.7) and a thread reply of its own through /sync."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Server, free_port, init_config
from tests.e2e.test_js_sdk import JS_DIR, NODE
from tests.e2e.test_nio_chat import _database

pytestmark = pytest.mark.e2e
PASSWORD = "js-password-1"


async def _register(session: aiohttp.ClientSession, base_url: str, name: str) -> str:
    body = {"username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    async with session.post(f"{base_url}/_matrix/client/v3/register", json=body) as response:
        payload = await response.json()
        assert response.status == 200, payload
        token: str = payload["access_token"]
        return token


class _Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session, self.base_url, self.token = session, base_url, token
        self.txn = 0

    async def call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        async with self.session.request(
            method,
            f"{self.base_url}/_matrix/client/v3{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as response:
            payload: dict[str, Any] = await response.json()
            assert response.status == 200, payload
            return payload

    async def send(
        self, room_id: str, content: dict[str, Any], kind: str = "m.room.message"
    ) -> str:
        self.txn += 1
        payload = await self.call("PUT", f"/rooms/{room_id}/send/{kind}/t{self.txn}", content)
        event_id: str = payload["event_id"]
        return event_id


async def _prepare(server: Server) -> dict[str, str]:
    """Alice (the js-sdk user) asks two questions; bob answers both in threads;
    alice edits her newer question; bob reacts to it."""
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        alice = _Api(session, server.base_url, await _register(session, server.base_url, "alice"))
        bob = _Api(session, server.base_url, await _register(session, server.base_url, "bob"))
        room = await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "threads"})
        room_id = room["room_id"]
        await bob.call("POST", f"/rooms/{room_id}/join", {})
        old_root = await alice.send(room_id, {"msgtype": "m.text", "body": "older question"})
        root = await alice.send(room_id, {"msgtype": "m.text", "body": "question"})
        await bob.send(room_id, _threaded(old_root, "old answer"))
        first = await bob.send(room_id, _threaded(root, "answer 1"))
        latest = await bob.send(room_id, _threaded(root, "answer 2"))
        await alice.send(
            room_id,
            {
                "msgtype": "m.text",
                "body": "* question (edited)",
                "m.new_content": {"msgtype": "m.text", "body": "question (edited)"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": root},
            },
        )
        await bob.send(
            room_id,
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
            "m.reaction",
        )
        return {
            "room_id": room_id,
            "root": root,
            "old_root": old_root,
            "first": first,
            "latest": latest,
        }


def _threaded(root: str, body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_js_sdk_threads_and_edits(tmp_path: Path, engine: str) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"

    async def run() -> None:
        async with _database(engine) as dsn:
            env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
            if dsn is not None:
                env["RANVIER_DATABASE"] = dsn
            server = Server(init_config(tmp_path), free_port(), **env)
            try:
                ids = await _prepare(server)
                result = await asyncio.to_thread(
                    subprocess.run,
                    [
                        str(NODE),
                        "threads.mjs",
                        server.base_url,
                        "alice",
                        PASSWORD,
                        ids["room_id"],
                        ids["root"],
                        ids["root"],
                    ],
                    cwd=JS_DIR,
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
                assert result.returncode == 0, (
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n{server.log()[-3000:]}"
                )
                (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
                outcome = json.loads(line.removeprefix("RESULT "))
                assert outcome["server_side_threads"] == "Stable", outcome
                assert outcome["server_side_list"] == "Stable", outcome
                assert set(outcome["threads"]) == {ids["root"], ids["old_root"]}, outcome
                assert outcome["relations"] == [ids["latest"], ids["first"]], outcome
                assert outcome["edited_body"] == "question (edited)", outcome
                assert outcome["edited_replaced"] is not None, outcome
                assert outcome["echoed"] == outcome["sent"], outcome
                assert outcome["echoed_thread"] == ids["root"], outcome
                assert outcome["thread_length"] == 3, outcome["thread_events"]
                assert outcome["latest_reply"] == outcome["sent"], outcome
                assert outcome["reactions"] == [["👍", 1]], outcome
            finally:
                server.kill()
            assert "Traceback" not in server.log(), server.log()

    asyncio.run(run())
