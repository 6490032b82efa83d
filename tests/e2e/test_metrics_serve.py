"""`ranvier serve` with ``metrics.enabled``: a Prometheus scraper's view of the
real listener, on both engines; and a taken metrics port stops the start."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ranvier.cli import EXIT_STARTUP_ERROR
from tests.e2e.harness import Server, free_port, init_config, postgres_database

pytestmark = pytest.mark.e2e

V3 = "/_matrix/client/v3"
SEND_ROUTE = V3 + "/rooms/{roomId}/send/{eventType}/{txnId}"


@asynccontextmanager
async def _database_env(engine: str) -> AsyncIterator[dict[str, str]]:
    if engine == "sqlite":
        yield {}
    else:
        async with postgres_database() as dsn:
            yield {"RANVIER_DATABASE": dsn}


async def _scrape(session: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    """``(name, labels as text) → value`` for every sample."""
    async with session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {
        (sample.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _json(
    session: aiohttp.ClientSession, method: str, url: str, token: str | None, body: object
) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, object] = await response.json()
        return payload


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_serve_exposes_metrics_on_the_configured_listener(
    engine: str, tmp_path: Path
) -> None:
    config = init_config(tmp_path)
    metrics_port = free_port()
    async with _database_env(engine) as db_env, aiohttp.ClientSession() as session:
        server = Server(
            config,
            free_port(),
            RANVIER_REGISTRATION_ENABLED="true",
            RANVIER_RATELIMIT_ENABLED="false",
            RANVIER_METRICS_ENABLED="true",
            RANVIER_METRICS_LISTEN_PORT=str(metrics_port),
            **db_env,
        )
        try:
            await server.wait_ready(session)
            base = server.base_url
            registered = await _json(
                session, "POST", f"{base}{V3}/register", None,
                {"username": "op", "password": "op-password-1", "auth": {"type": "m.login.dummy"}},
            )  # fmt: skip
            token = str(registered["access_token"])
            room_id = str(
                (await _json(session, "POST", f"{base}{V3}/createRoom", token, {}))["room_id"]
            )
            since = str(
                (await _json(session, "GET", f"{base}{V3}/sync?timeout=0", token, None))[
                    "next_batch"
                ]
            )
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            before = await _scrape(session, url)

            poll = asyncio.create_task(
                _json(session, "GET", f"{base}{V3}/sync?timeout=20000&since={since}", token, None)
            )
            while (await _scrape(session, url))[("ranvier_sync_long_polls_waiting", "")] < 1:
                await asyncio.sleep(0.05)
            await _json(
                session, "PUT", f"{base}{V3}/rooms/{room_id}/send/m.room.message/t1", token,
                {"msgtype": "m.text", "body": "scraped"},
            )  # fmt: skip
            await asyncio.wait_for(poll, 10)
            after = await _scrape(session, url)

            put = f"method=PUT,route={SEND_ROUTE},status=2xx"
            assert after[("ranvier_http_request_duration_seconds_count", put)] == 1
            local = "origin=local"
            assert after[("ranvier_events_persisted_total", local)] == (
                before[("ranvier_events_persisted_total", local)] + 1
            )
            assert after[("ranvier_sync_wakeups_total", "")] == (
                before[("ranvier_sync_wakeups_total", "")] + 1
            )
            assert ("ranvier_db_connections_max", f"engine={engine}") in after
            assert after[("process_resident_memory_bytes", "")] > 0
            # Not on the client port.
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 404
            assert server.terminate() == 0
            log = server.log()
            assert f"Metrics on http://127.0.0.1:{metrics_port}/metrics" in log
            assert "Traceback" not in log
        finally:
            server.kill()


async def test_a_taken_metrics_port_stops_serve_with_a_message(tmp_path: Path) -> None:
    config = init_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(
            config,
            free_port(),
            RANVIER_METRICS_ENABLED="true",
            RANVIER_METRICS_LISTEN_PORT=str(port),
        )
        try:
            status = await asyncio.to_thread(server.process.wait, 15)
        finally:
            server.kill()
    assert status == EXIT_STARTUP_ERROR
    log = server.log()
    assert f"the metrics listener on 127.0.0.1:{port}" in log
    assert "Traceback" not in log
