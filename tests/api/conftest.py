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
from tests.conftest import prepare_sqlite

NOW_MS = 1_700_000_000_000

#: The server name of the in-process app, unless a test's config sets one.
DEFAULT_SERVER_NAME = "localhost"
#: Issue 10: federation test set-ups and many deployments name the server with
#: a port, and locality must not break on it. Modules marked
#: ``pytest.mark.port_server_name`` run every test under both names.
PORT_SERVER_NAME = "127.0.0.1:8448"

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def now_ms() -> int:
    """The app's clock in these tests."""
    return NOW_MS


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.generate("test1")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server_name" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "port_server_name"
    ):
        metafunc.parametrize("server_name", [DEFAULT_SERVER_NAME, PORT_SERVER_NAME], indirect=True)


@pytest.fixture
def server_name(request: pytest.FixtureRequest) -> str:
    """The app's server name: ``localhost``, or each of the two names in marked modules."""
    name: str = getattr(request, "param", DEFAULT_SERVER_NAME)
    return name


def with_server_name(raw: dict[str, Any] | None, server_name: str) -> dict[str, Any]:
    return {"server_name": server_name, **(raw or {})}


@pytest.fixture
def make_config(tmp_path: Path, server_name: str) -> Callable[..., Config]:
    def make(raw: dict[str, Any] | None = None) -> Config:
        return parse_config(with_server_name(raw, server_name), tmp_path, env={})

    return make


@pytest.fixture
def make_app(
    make_config: Callable[..., Config], signing_key: SigningKey
) -> Callable[..., web.Application]:
    def make(raw: dict[str, Any] | None = None) -> web.Application:
        config = prepare_sqlite(make_config(raw))
        return build_app(config, signing_key=signing_key, clock_ms=lambda: NOW_MS)

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
    aiohttp_client: Any, tmp_path: Path, signing_key: SigningKey, clock: Clock, server_name: str
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
        config = prepare_sqlite(parse_config(with_server_name(raw, server_name), tmp_path, env={}))
        app = build_app(config, signing_key=signing_key, clock_ms=clock)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return make
