"""Shared fixtures. Store fixtures: every test that uses them runs on both engines.

``database_dsn`` yields the DSN of a fresh, empty database: a SQLite file in
the test's temporary directory, or a new PostgreSQL schema (selected through
``search_path``) dropped afterwards, so tests can run in parallel under
pytest-xdist.

``migrated_dsn`` is a fresh database with every migration already applied,
for tests that hand it to an app or a store and test no migration: a copy of
a SQLite file migrated once per test process, or a PostgreSQL database from
a pool of the test process (clones of one database migrated once), emptied
back to its migrated state when the next test takes it. Migrating anew took
~0.2 s a test on SQLite and 1-3 s on PostgreSQL (most of the API tests'
time); a copy takes a few ms, emptying a pooled database ~0.1 s. ``database``
is ``migrated_dsn`` opened. Migrations themselves are tested on
``database_dsn`` (tests/storage/test_engine.py) and by every ``ranvier
serve`` of tests/e2e. ``prepare_sqlite(config)`` gives an app's own SQLite
file (a test config's default ``data/homeserver.db``) the same head start.

PostgreSQL comes from ``RANVIER_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``). If it is unreachable the
PostgreSQL half of the tests fails: the suite promises both engines.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from ranvier.config import Config
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


# --- migrated templates: a fresh database without running every migration again ---------

_T = TypeVar("_T")


def _run_aside(make: Callable[[], Awaitable[_T]]) -> _T:
    """``await make()`` on a loop of its own in another thread: callable from sync code
    and from inside a test's running loop alike (once per test process)."""

    async def run() -> _T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


_sqlite_template: Path | None = None


def _migrated_sqlite_template() -> Path:
    """A SQLite file with every migration applied, made once per test process."""
    global _sqlite_template
    if _sqlite_template is None:
        folder = Path(tempfile.mkdtemp(prefix="ranvier-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"

        async def migrate() -> None:
            db = await open_database(f"sqlite:///{path}")
            await db.close()

        _run_aside(migrate)
        # Closed cleanly: the last connection checkpointed and removed the WAL.
        assert not Path(f"{path}-wal").exists(), "the template's WAL outlived its close"
        _sqlite_template = path
    return _sqlite_template


def copy_migrated_sqlite(path: Path) -> None:
    """Write a migrated SQLite database at ``path`` (which must not exist yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_sqlite_template(), path)


def prepare_sqlite(config: Config) -> Config:
    """Give the app of ``config`` a migrated SQLite file, when its database is a SQLite
    file that does not exist yet (a test's fresh one); the app then finds nothing to
    migrate. PostgreSQL DSNs and existing files are left alone."""
    path = config.sqlite_path
    if path is not None and str(path) != ":memory:" and not path.exists():
        copy_migrated_sqlite(path)
    return config


def _postgres_dsn_of(name: str) -> str:
    """``POSTGRES_DSN`` naming the database ``name`` instead."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(POSTGRES_DSN)._replace(path=f"/{name}"))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# What a migrated database holds besides its rows: relations, columns, constraints,
# indexes, triggers, functions, schemas, extensions; and the rows of the tables the
# migrations fill (schema_version). A test that changed any of it (a table of its own,
# a schema_version it rewrote) leaves a database that is dropped, never reused.
_FINGERPRINT = """
SELECT md5(string_agg(item, '|' ORDER BY item)) FROM (
    SELECT 'n:' || nspname FROM pg_namespace
        WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
    UNION ALL SELECT 'e:' || extname FROM pg_extension
    UNION ALL SELECT 'c:' || n.nspname || '.' || c.relname || ':' || c.relkind::text
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
    UNION ALL SELECT 'a:' || c.oid::regclass::text || '.' || a.attname || ':'
            || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull || ':'
            || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT 'k:' || conrelid::regclass::text || '.' || conname || ':'
            || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'i:' || pg_get_indexdef(indexrelid)
        FROM pg_index JOIN pg_class c ON c.oid = indexrelid
        WHERE c.relnamespace = 'public'::regnamespace
    UNION ALL SELECT 't:' || tgrelid::regclass::text || '.' || tgname || ':' || tgenabled::text
        FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL SELECT 'p:' || p.oid::regprocedure::text || ':' || md5(p.prosrc)
        FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
    UNION ALL SELECT 'r:' || version || ':' || name FROM schema_version
) AS items(item)
"""


@dataclass
class _PostgresPool:
    """Migrated PostgreSQL databases of one test process, reused from test to test.

    Each is a clone (``CREATE DATABASE ... TEMPLATE``) of ``template``, migrated once.
    A database goes back to the pool when its test ends and is emptied when the next
    test takes it: every row deleted, schema_version's kept (checked by the
    fingerprint), every sequence back where the migrations left it. One still
    connected to (an app that outlived its test) is left alone until it is not; when
    every free one is, a new clone joins the pool after 2 s. One whose schema a test
    changed is never reused. All are dropped at the end of the session.
    """

    template: str
    fingerprint: str
    tables: list[str]
    sequences: list[tuple[str, int | None]]  # name, last_value after the migrations
    free: list[str] = field(default_factory=list)
    every: list[str] = field(default_factory=list)
    #: Databases whose schema a test changed: dropped with the others at the end.
    changed: list[str] = field(default_factory=list)

    async def acquire(self, admin: asyncpg.Connection) -> str:
        # The app of the test before has just closed its connections: their server
        # processes take a moment to go. Waiting for them is cheaper than a clone (and
        # a clone is one more database to drop, a drop waits for a checkpoint).
        deadline = asyncio.get_running_loop().time() + 2
        while True:
            rows = await admin.fetch(
                "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY($1::text[])",
                self.free,
            )
            busy = {row[0] for row in rows}
            for name in [name for name in self.free if name not in busy]:
                self.free.remove(name)
                if await self._reset(name):
                    return name
                self.every.remove(name)
                self.changed.append(name)
            if not busy or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        name = await _clone(admin, self.template)
        self.every.append(name)
        return name

    def release(self, name: str) -> None:
        self.free.append(name)

    async def _reset(self, name: str) -> bool:
        """Empty ``name`` back to its migrated state; False if its schema changed."""
        conn = await asyncpg.connect(_postgres_dsn_of(name), timeout=10)
        try:
            if await conn.fetchval(_FINGERPRINT) != self.fingerprint:
                return False
            statements = ["SET LOCAL session_replication_role = replica"]
            statements += [f"DELETE FROM {_quote_ident(table)}" for table in self.tables]
            async with conn.transaction():
                await conn.execute(";\n".join(statements))
                for sequence, last_value in self.sequences:
                    if last_value is None:
                        await conn.execute("SELECT setval($1::regclass, 1, false)", sequence)
                    else:
                        await conn.execute("SELECT setval($1::regclass, $2)", sequence, last_value)
            return True
        finally:
            await conn.close()


async def _clone(admin: asyncpg.Connection, template: str) -> str:
    name = f"ranvier_test_{secrets.token_hex(8)}"
    for attempt in range(20):
        try:
            await admin.execute(
                f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}"
            )
            return name
        except asyncpg.ObjectInUseError:
            # The template's own migration connections may take a moment to go away.
            if attempt == 19:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


_pool: _PostgresPool | None = None


def _postgres_pool() -> _PostgresPool:
    """This test process's pool of migrated PostgreSQL databases, made at first use
    (a template database created and migrated) and dropped at the session's end."""
    global _pool
    if _pool is not None:
        return _pool
    template = f"ranvier_template_{os.getpid()}_{secrets.token_hex(4)}"

    async def make() -> _PostgresPool:
        admin = await _postgres_admin()
        try:
            await admin.execute(f"CREATE DATABASE {_quote_ident(template)}")
        finally:
            await admin.close()
        db = await open_database(_postgres_dsn_of(template))
        await db.close()
        conn = await asyncpg.connect(_postgres_dsn_of(template), timeout=10)
        try:
            fingerprint = await conn.fetchval(_FINGERPRINT)
            tables = [
                row[0]
                for row in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'schema_version' ORDER BY tablename"
                )
            ]
            for table in tables:
                filled = await conn.fetchval(f"SELECT EXISTS (SELECT FROM {_quote_ident(table)})")
                assert not filled, f"the migrations fill {table}: reset it like schema_version"
            sequences = [
                (f"{_quote_ident(row[0])}", row[1])
                for row in await conn.fetch(
                    "SELECT sequencename, last_value FROM pg_sequences "
                    "WHERE schemaname = 'public' ORDER BY sequencename"
                )
            ]
        finally:
            await conn.close()
        return _PostgresPool(template, fingerprint, tables, sequences)

    _pool = _run_aside(make)
    return _pool


# Run by a detached Python at the end of a session: drops the databases named after the
# DSN, all at once. Each DROP DATABASE waits for a checkpoint (10-20 s on a busy
# machine), which the session need not wait for.
_DROP_DATABASES = """
import asyncio, sys, urllib.parse
import asyncpg

async def drop(dsn, name):
    admin = await asyncpg.connect(dsn, timeout=30)
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        await admin.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await admin.close()

async def main(dsn, names):
    await asyncio.gather(*(drop(dsn, name) for name in names))

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_pool() -> Iterator[None]:
    """Drop this test process's pooled PostgreSQL databases, if it made any, in the
    background."""
    yield
    pool = _pool
    if pool is None:
        return
    drop_databases_in_background([*pool.every, *pool.changed, pool.template])


def drop_databases_in_background(names: list[str]) -> None:
    """DROP DATABASE ... WITH (FORCE) each of ``names``, from a detached process."""
    subprocess.Popen(
        [sys.executable, "-c", _DROP_DATABASES, POSTGRES_DSN, *names],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def acquire_migrated_postgres() -> tuple[str, Callable[[], None]]:
    """A migrated PostgreSQL database from the pool: its DSN, and what gives it back
    (once nothing is connected to it any more)."""
    pool = _postgres_pool()
    admin = await _postgres_admin()
    try:
        name = await pool.acquire(admin)
    finally:
        await admin.close()
    return _postgres_dsn_of(name), lambda: pool.release(name)


@pytest.fixture(params=ENGINES)
async def migrated_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The DSN of a fresh database on each engine, every migration already applied."""
    if request.param == "sqlite":
        path = tmp_path / "ranvier.db"
        copy_migrated_sqlite(path)
        yield f"sqlite:///{path}"
        return
    dsn, release = await acquire_migrated_postgres()
    try:
        yield dsn
    finally:
        release()


@pytest.fixture
async def database(migrated_dsn: str) -> AsyncIterator[Database]:
    """A fresh database with every migration applied, on each engine."""
    db = await open_database(migrated_dsn)
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
