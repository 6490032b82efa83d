"""docs/features.md stays true: every spec endpoint listed once, every file it
cites exists, every endpoint marked done is served, every other one answers
404/405 ``M_UNRECOGNIZED`` (nothing half-done)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from ranvier.app import build_app
from ranvier.config import parse_config
from ranvier.core.signing import SigningKey
from tests.api.conftest import DEFAULT_SERVER_NAME, NOW_MS
from tests.conftest import prepare_sqlite
from tests.vectors import REPO_ROOT

SPEC_ENDPOINTS = REPO_ROOT.parent / "shared" / "matrix-spec" / "ENDPOINTS.md"
FEATURES = REPO_ROOT / "docs" / "features.md"
HOMESERVER_APIS = ("client-server", "server-server")
ROW = re.compile(r"^\| (GET|PUT|POST|DELETE|PATCH) \| `([^`]+)` \| ([^|]+) \| ([^|]+) \|$")
SPEC_ROW = re.compile(r"^\| (GET|PUT|POST|DELETE|PATCH) \| `([^`]+)` \| ([^|]+) \|")


def _spec_operations() -> set[tuple[str, str]]:
    operations: set[tuple[str, str]] = set()
    section = ""
    for line in SPEC_ENDPOINTS.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].split()[0]
        elif section in HOMESERVER_APIS and (match := SPEC_ROW.match(line)):
            operations.add((match.group(1), match.group(2)))
    return operations


def _documented() -> dict[tuple[str, str], str]:
    rows: dict[tuple[str, str], str] = {}
    for line in FEATURES.read_text(encoding="utf-8").splitlines():
        if match := ROW.match(line):
            key = (match.group(1), match.group(2))
            assert key not in rows, f"{key} listed twice in docs/features.md"
            state = match.group(4).strip()
            assert state in ("**done**", "*not yet*"), f"unknown state {state!r} for {key}"
            rows[key] = state
    return rows


DOCUMENTED = _documented()


def test_every_spec_endpoint_is_listed_once() -> None:
    spec = _spec_operations()
    assert len(spec) == 166 + 36
    assert set(DOCUMENTED) == spec


def test_cited_files_exist() -> None:
    text = FEATURES.read_text(encoding="utf-8")
    cited = set(re.findall(r"`((?:tests|ranvier)/[\w/]+\.py)`", text))
    assert cited, "features.md cites no files"
    missing = sorted(path for path in cited if not (REPO_ROOT / path).is_file())
    # Rows whose state is "not yet" name the module to come; they cite no test.
    planned = {"ranvier/core/push_rules.py", "ranvier/core/filters.py"}
    assert [path for path in missing if path not in planned] == []


def test_room_version_table_covers_1_to_12() -> None:
    text = FEATURES.read_text(encoding="utf-8")
    versions = re.findall(r"^\| (\d+)(?: \(default\))? \| yes \|", text, flags=re.MULTILINE)
    assert versions == [str(n) for n in range(1, 13)]


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestClient[Any, Any]]:
    """One app for every endpoint of the table (an app for each took ~0.3 s): the
    requests carry no access token and an empty body, and whether a route is served
    does not depend on what the others stored."""
    folder: Path = tmp_path_factory.mktemp("features")
    raw = {
        "server_name": DEFAULT_SERVER_NAME,
        "well_known": {"client_base_url": "https://m.example", "server": "m.example:443"},
    }
    config = prepare_sqlite(parse_config(raw, folder, env={}))
    app = build_app(config, signing_key=SigningKey.generate("test1"), clock_ms=lambda: NOW_MS)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("method", "path", "state"),
    [(m, p, s) for (m, p), s in sorted(DOCUMENTED.items())],
    ids=[f"{m} {p}" for (m, p) in sorted(DOCUMENTED)],
)
async def test_endpoint_state_matches_server(
    served: TestClient[Any, Any], method: str, path: str, state: str
) -> None:
    client = served
    body = b"{}" if method in ("PUT", "POST") else None
    # A trailing space tells apart two operations on one path (inviteUser).
    response = await client.request(method, _concrete(path.strip()), data=body)
    payload = await response.json() if response.content_type == "application/json" else {}
    unrecognised = response.status in (404, 405) and payload.get("errcode") == "M_UNRECOGNIZED"
    if state == "**done**":
        assert not unrecognised, f"{method} {path} is marked done but is not served"
    else:
        assert unrecognised, f"{method} {path} is served ({response.status}) but marked not yet"
