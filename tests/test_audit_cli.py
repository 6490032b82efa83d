"""Audit: the administrator's commands end to end — a registration token made by
`ranvier registration-token create` opens `POST /register` on a server reading the
same config, and `make run` tells how to create the first account."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from ranvier.app import build_app
from ranvier.cli import cli
from ranvier.config import load_config
from ranvier.core.signing import SigningKey
from tests.vectors import REPO_ROOT

REGISTER = "/_matrix/client/v3/register"


async def test_cli_registration_token_opens_registration_over_http(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    config_path = tmp_path / "ranvier.yaml"
    config_path.write_text(
        'server_name: "example.org"\n'
        'database: "sqlite:///data/hs.db"\n'
        "password_hashing: {time_cost: 1, memory_cost: 32}\n"
        "ratelimit: {enabled: false}\n"
        "registration: {enabled: true, require_token: true}\n",
        encoding="utf-8",
    )
    # The command runs its own event loop: off this test's loop, in a thread.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["registration-token", "create", "--uses", "1", "--config", str(config_path)],
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()

    config = load_config(config_path, env={})
    config.sqlite_path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    client = await aiohttp_client(build_app(config, signing_key=SigningKey.generate("t")))

    async def register(username: str, auth: dict[str, Any] | None) -> tuple[int, Any]:
        body: dict[str, Any] = {"username": username, "password": "pw-123456"}
        if auth is not None:
            body["auth"] = auth
        response = await client.post(REGISTER, json=body)
        return response.status, await response.json()

    status, first = await register("alice", None)
    assert status == 401 and first["flows"] == [{"stages": ["m.login.registration_token"]}]
    # Without the token, no account; the dummy stage is not offered.
    status, body = await register("alice", {"type": "m.login.dummy", "session": first["session"]})
    assert (status, body["errcode"]) == (400, "M_UNRECOGNIZED")
    status, body = await register(
        "alice",
        {"type": "m.login.registration_token", "token": token, "session": first["session"]},
    )
    assert status == 200, body
    assert body["user_id"] == "@alice:example.org" and body["access_token"]
    # The token allowed one use: the next registration cannot use it.
    status, second = await register("bob", None)
    status, body = await register(
        "bob",
        {"type": "m.login.registration_token", "token": token, "session": second["session"]},
    )
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")
    assert "user_id" not in body


def test_make_run_prints_how_to_create_the_first_account(tmp_path: Path) -> None:
    config = tmp_path / "ranvier.yaml"
    result = subprocess.run(
        ["make", "-n", "run", f"CONFIG={config}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    hint = f"ranvier user create alice --admin --config {config}"
    [echo] = [line for line in lines if hint in line]
    assert echo.startswith("echo ")
    # Printed before the server starts (serve blocks).
    serve = next(i for i, line in enumerate(lines) if " serve --config " in line)
    assert lines.index(echo) < serve
