"""An in-process Ranvier app behind aiohttp's test client, with a fixed clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from ranvier.app import build_app
from ranvier.config import Config, parse_config
from ranvier.core.signing import SigningKey

NOW_MS = 1_700_000_000_000

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def now_ms() -> int:
    """The app's clock in these tests."""
    return NOW_MS


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.generate("test1")


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(raw: dict[str, Any] | None = None) -> Config:
        return parse_config(raw or {}, tmp_path, env={})

    return make


@pytest.fixture
def make_app(
    make_config: Callable[..., Config], signing_key: SigningKey
) -> Callable[..., web.Application]:
    def make(raw: dict[str, Any] | None = None) -> web.Application:
        return build_app(make_config(raw), signing_key=signing_key, clock_ms=lambda: NOW_MS)

    return make


@pytest.fixture
def make_client(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> MakeClient:
    """``await make_client(raw_config)``, optionally after adding routes via ``setup(app)``."""

    async def make(
        raw: dict[str, Any] | None = None,
        setup: Callable[[web.Application], None] | None = None,
    ) -> TestClient[Any, Any]:
        app = make_app(raw)
        if setup is not None:
            setup(app)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


# --- accounts: a movable clock and an app with open registration -------------------


@dataclass
class Clock:
    """A clock tests can move: ``clock.advance(ms)``."""

    now_ms: int = NOW_MS

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, milliseconds: int) -> None:
        self.now_ms += milliseconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


# Argon2 is slow by design; tests use its cheapest parameters.
CHEAP_PASSWORD_HASHING = {"time_cost": 1, "memory_cost": 32}


@pytest.fixture
def accounts_client(
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey, clock: Clock
) -> MakeClient:
    """``await accounts_client(overrides)``: the app with open registration, cheap
    password hashing and no rate limits (sections merged with ``overrides``), on
    the movable ``clock``."""

    async def make(overrides: dict[str, Any] | None = None) -> TestClient[Any, Any]:
        raw: dict[str, Any] = {
            "registration": {"enabled": True},
            "password_hashing": dict(CHEAP_PASSWORD_HASHING),
            "ratelimit": {"enabled": False},
        }
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key].update(value)
            else:
                raw[key] = value
        config = parse_config(raw, tmp_path, env={})
        app = build_app(config, signing_key=signing_key, clock_ms=clock)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make
