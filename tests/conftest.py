"""Shared fixtures. Store fixtures: every test that uses them runs on both engines.

``database_dsn`` yields the DSN of a fresh, empty database: a SQLite file in
the test's temporary directory, or a new PostgreSQL schema (selected through
``search_path``) dropped afterwards, so tests can run in parallel under
pytest-xdist. ``database`` is that database opened and migrated.

PostgreSQL comes from ``RANVIER_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). If it is unreachable the
PostgreSQL half of the tests fails: the suite promises both engines.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ranvier.storage import Database, open_database

POSTGRES_DSN = os.environ.get("RANVIER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

ENGINES = ("sqlite", "postgresql")


def with_query(dsn: str, **params: str) -> str:
    """``dsn`` with query parameters added (or replaced)."""
    parts = urllib.parse.urlsplit(dsn)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def _postgres_admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_DSN, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_DSN!r} is unreachable ({exc!r}); store tests run on "
            "both engines, so start PostgreSQL or point RANVIER_TEST_POSTGRES at one",
            pytrace=False,
        )


@pytest.fixture(params=ENGINES)
async def database_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The DSN of a fresh, empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ranvier.db'}"  # tmp_path is absolute: sqlite:////...
        return
    schema = f"ranvier_test_{secrets.token_hex(8)}"
    admin = await _postgres_admin()
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_query(POSTGRES_DSN, search_path=schema)
    finally:
        await _drop_schema(admin, schema)
        await admin.close()


async def _drop_schema(admin: asyncpg.Connection, schema: str) -> None:
    """Drop the test's schema. pytest may tear this fixture down before an app
    that uses the schema has stopped (fixture order), and that app's last
    transaction can then deadlock with the DROP; PostgreSQL aborts one of the
    two, the other goes on, so the DROP is simply tried again."""
    for attempt in range(10):
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == 9:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


@pytest.fixture
async def database(database_dsn: str) -> AsyncIterator[Database]:
    """A fresh database with every migration applied, on each engine."""
    db = await open_database(database_dsn)
    try:
        yield db
    finally:
        await db.close()


# --- the oracle vectors' tally, printed at the end of every run -----------------------

_VECTOR_TESTS = {
    "hashes.jsonl": "tests/core/test_hash_vectors.py::test_hash_vector[",
    "redaction.jsonl": "tests/core/test_redaction_vectors.py::test_redaction_vector[",
    "auth.jsonl": "tests/core/test_auth_vectors.py::test_auth_vector[",
    "state_res.jsonl": "tests/core/test_state_res_vectors.py::test_state_res_vector[",
}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line per vector file: how many of its cases passed and failed."""
    tally: dict[str, list[int]] = {name: [0, 0] for name in _VECTOR_TESTS}
    for outcome, column in (("passed", 0), ("failed", 1)):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") != "call":
                continue
            for name, prefix in _VECTOR_TESTS.items():
                if report.nodeid.startswith(prefix):
                    tally[name][column] += 1
    if not any(passed or failed for passed, failed in tally.values()):
        return
    terminalreporter.section("oracle vectors (../shared/test-vectors)")
    for name, (passed, failed) in tally.items():
        terminalreporter.write_line(f"{name:16} {passed:5} passed, {failed} failed")
