"""`ranvier init` then `ranvier serve` as real processes: keys, env overrides, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import signedjson.key
import signedjson.sign

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT_S = 15
SHUTDOWN_TIMEOUT_S = 10


def _ranvier_command() -> list[str]:
    """The installed `ranvier` script beside this Python, else `python -m ranvier`."""
    script = Path(sys.executable).parent / "ranvier"
    if script.exists():
        return [str(script)]
    found = shutil.which("ranvier")
    return [found] if found else [sys.executable, "-m", "ranvier"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(**overrides: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("RANVIER_")}
    env.update(overrides)
    return env


class Server:
    def __init__(self, config_path: Path, port: int, **env: str) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = config_path.parent / f"serve-{port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*_ranvier_command(), "serve", "--config", str(config_path)],
            env=_clean_env(RANVIER_LISTEN_PORT=str(port), **env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ranvier serve exited early:\n{self.log()}")
            try:
                async with session.get(f"{self.base_url}/_matrix/client/versions") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"ranvier serve did not answer in time:\n{self.log()}")

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "ranvier.yaml"
    subprocess.run(
        [*_ranvier_command(), "init", "--config", str(path)],
        env=_clean_env(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def _unpadded_b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


async def _verified_keys(session: aiohttp.ClientSession, server: Server) -> dict[str, Any]:
    async with session.get(f"{server.base_url}/_matrix/key/v2/server") as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
    server_name = document["server_name"]
    ((key_id, verify_key),) = document["verify_keys"].items()
    key = signedjson.key.decode_verify_key_bytes(
        key_id, _unpadded_b64decode(verify_key["key"])
    )
    signedjson.sign.verify_signed_json(document, server_name, key)
    return document


async def test_serve_publishes_signed_keys_stops_on_sigterm_and_keeps_its_key(
    config_path: Path, servers: list[Server]
) -> None:
    async with aiohttp.ClientSession() as session:
        # First run, with the server name overridden from the environment.
        first = Server(config_path, _free_port(), RANVIER_SERVER_NAME="e2e.example")
        servers.append(first)
        await first.wait_ready(session)
        first_keys = await _verified_keys(session, first)
        assert first_keys["server_name"] == "e2e.example"
        assert first_keys["valid_until_ts"] > 0
        async with session.get(f"{first.base_url}/_matrix/federation/v1/version") as response:
            assert (await response.json())["server"]["name"] == "Ranvier"
        assert first.terminate() == 0, first.log()
        log = first.log()
        assert "Traceback" not in log
        # One access log line per request: ours, not also aiohttp's default one.
        assert log.count("/_matrix/key/v2/server") == 1, log

        # Second run, plain config: same key, the configured server name.
        second = Server(config_path, _free_port())
        servers.append(second)
        await second.wait_ready(session)
        second_keys = await _verified_keys(session, second)
        assert second_keys["server_name"] == "localhost"
        assert set(second_keys["verify_keys"]) == set(first_keys["verify_keys"])
        assert second_keys["verify_keys"] == first_keys["verify_keys"]
        assert second.terminate() == 0, second.log()
