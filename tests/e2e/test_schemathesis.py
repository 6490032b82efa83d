"""Schemathesis over every Client-Server endpoint Ranvier serves.

The operations come from the bundled OpenAPI (``../shared/matrix-spec/openapi/
client-server.json``), restricted to those ``docs/features.md`` marks done.
Each is called with generated inputs, logged in as a real user, against a real
``ranvier serve``; no response may be a server error (5xx). Bounded and
deterministic: a fixed number of examples per operation, derandomised.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import openapi

from tests.e2e.harness import Server, free_port, init_config
from tests.vectors import REPO_ROOT, vectors_dir

pytestmark = pytest.mark.e2e

# Beside the oracle vectors (``../shared/``, or wherever RANVIER_TEST_VECTORS points), so a
# worktree outside the repository's usual parent folder finds the spec too.
SPEC = vectors_dir().parent / "matrix-spec" / "openapi" / "client-server.json"
FEATURES = REPO_ROOT / "docs" / "features.md"
EXAMPLES_PER_OPERATION = 25
# Endpoints whose generated calls would end the session the others run in.
SESSION_ENDING = {
    ("POST", "/_matrix/client/v3/logout"),
    ("POST", "/_matrix/client/v3/logout/all"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("POST", "/_matrix/client/v3/account/password"),
}


def _done_operations() -> set[tuple[str, str]]:
    row = re.compile(r"^\| (GET|PUT|POST|DELETE) \| `([^`]+)` \| [^|]+ \| \*\*done\*\* \|$")
    done: set[tuple[str, str]] = set()
    for line in FEATURES.read_text(encoding="utf-8").splitlines():
        if match := row.match(line):
            done.add((match.group(1), match.group(2)))
    return done


@pytest.fixture(scope="module")
def logged_in_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    config = init_config(folder)
    server = Server(
        config,
        free_port(),
        RANVIER_REGISTRATION_ENABLED="true",
        RANVIER_RATELIMIT_ENABLED="false",
    )

    async def start() -> str:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            body = {
                "username": "fuzz",
                "password": "fuzz-password-1",
                "auth": {"type": "m.login.dummy"},
            }
            async with session.post(
                f"{server.base_url}/_matrix/client/v3/register", json=body
            ) as response:
                payload: dict[str, Any] = await response.json()
                assert response.status == 200, payload
                token: str = payload["access_token"]
                return token

    try:
        token = asyncio.run(start())
        yield server.base_url, token
    finally:
        server.kill()
        assert "Traceback" not in server.log(), server.log()


def _operations() -> list[Any]:
    schema = openapi.from_path(str(SPEC))
    done = _done_operations()
    operations = []
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in done and key not in SESSION_ENDING:
            operations.append(operation)
    return operations


OPERATIONS = _operations()


def test_some_operations_are_fuzzed() -> None:
    assert len(OPERATIONS) >= 3


@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_no_server_errors(logged_in_server: tuple[str, str], operation: Any) -> None:
    base_url, token = logged_in_server

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {token}"
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} → {response.status_code}: {response.text[:500]}"
        )
        if response.status_code >= 400 and response.headers.get("Content-Type", "").startswith(
            "application/json"
        ):
            assert "errcode" in response.json(), response.text[:500]

    check()
