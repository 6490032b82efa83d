"""``make_db_client(**config)``: the app on each engine (``migrated_dsn``), rate
limits off, for the search and user directory tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from tests.api.conftest import NOW_MS, with_server_name
from tests.api.rooms_support import ROOMS_CONFIG, Client

MakeDbClient = Callable[..., Awaitable[Client]]


@pytest.fixture(name="make_db_client")
def make_db_client_fixture(
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey, migrated_dsn: str
) -> MakeDbClient:
    async def make(**extra: Any) -> Client:
        raw = {**ROOMS_CONFIG, "database": migrated_dsn, **extra}
        config = parse_config(with_server_name(raw, "localhost"), tmp_path, env={})
        app = build_app(config, signing_key=signing_key, clock_ms=lambda: NOW_MS)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make
