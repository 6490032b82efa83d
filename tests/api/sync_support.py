"""Helpers for the /sync, /messages and /context tests: an app on a movable
clock, optionally on a given database (PostgreSQL via ``migrated_dsn``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from tests.api.conftest import Clock, with_server_name
from tests.api.rooms_support import ROOMS_CONFIG, V3, Client, User, q
from tests.conftest import prepare_sqlite

MakeSyncClient = Callable[..., Awaitable[Client]]


@pytest.fixture(name="make_sync_client")
def make_sync_client_fixture(
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey, clock: Clock, server_name: str
) -> MakeSyncClient:
    """``await make_sync_client(database=None)``: the app with rate limits off on
    the movable ``clock``; ``database`` is a DSN (default: a SQLite file in tmp_path,
    the same one for every app of the test, so a second app is a "restart")."""

    async def make(database: str | None = None) -> Client:
        raw: dict[str, Any] = dict(ROOMS_CONFIG)
        if database is not None:
            raw["database"] = database
        config = prepare_sqlite(parse_config(with_server_name(raw, server_name), tmp_path, env={}))
        app = build_app(config, signing_key=signing_key, clock_ms=clock)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


def _query(params: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict):
            result[key] = json.dumps(value)
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        else:
            result[key] = str(value)
    return result


async def get(client: Client, path: str, user: User, **params: Any) -> tuple[int, Any]:
    response = await client.get(path, params=_query(params), headers=user.headers)
    return response.status, await response.json()


async def sync(client: Client, user: User, **params: Any) -> dict[str, Any]:
    status, body = await get(client, V3 + "/sync", user, **params)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def messages(client: Client, user: User, room_id: str, **params: Any) -> tuple[int, Any]:
    return await get(client, f"{V3}/rooms/{q(room_id)}/messages", user, **params)


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


def state_keys(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}
