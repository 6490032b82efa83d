"""`ranvier init` then `ranvier serve` as real processes: keys, env overrides, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import signedjson.key
import signedjson.sign

from tests.e2e.harness import Server, clean_env, free_port, ranvier_command

pytestmark = pytest.mark.e2e


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "ranvier.yaml"
    subprocess.run(
        [*ranvier_command(), "init", "--config", str(path)],
        env=clean_env(),
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
        first = Server(config_path, free_port(), RANVIER_SERVER_NAME="e2e.example")
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
        second = Server(config_path, free_port())
        servers.append(second)
        await second.wait_ready(session)
        second_keys = await _verified_keys(session, second)
        assert second_keys["server_name"] == "localhost"
        assert set(second_keys["verify_keys"]) == set(first_keys["verify_keys"])
        assert second_keys["verify_keys"] == first_keys["verify_keys"]
        assert second.terminate() == 0, second.log()


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        return b""


async def test_serve_applies_the_listen_limits_from_the_environment(
    config_path: Path, servers: list[Server]
) -> None:
    """Issue 9 through `ranvier serve`: the listener's limits come from the config."""
    server = Server(
        config_path,
        port := free_port(),
        RANVIER_LISTEN_HEADER_TIMEOUT="1s",
        RANVIER_LISTEN_MAX_CONNECTIONS_PER_IP="2",
    )
    servers.append(server)
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)

    def connect() -> Any:
        return asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))

    held = [await connect() for _ in range(2)]
    started = time.monotonic()
    refused_reader, refused_writer = await connect()
    assert await _read_until_closed(refused_reader) == b""  # over the cap: closed at once
    assert time.monotonic() - started < 1.0
    for reader, writer in held:  # silent: closed after the header timeout
        assert await _read_until_closed(reader) == b""
        writer.close()
    assert time.monotonic() - started >= 0.95
    refused_writer.close()

    reader, writer = await connect()
    writer.write(b"GET /?access_token=syt_e2e_secret&" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    answer = await _read_until_closed(reader)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 414 "), answer
    assert json.loads(body) == {"errcode": "M_TOO_LARGE", "error": "Request line too long"}

    assert server.terminate() == 0
    log = server.log()
    assert "Traceback" not in log
    assert "syt_e2e_secret" not in log
    assert log.count("Refusing connections from 127.0.0.2") == 1, log
    assert '127.0.0.2 "-" 414 M_TOO_LARGE (LineTooLong)' in log
