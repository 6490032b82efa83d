"""Storage engine micro-benchmark: write transactions/s and read latency per engine.

    .venv/bin/python bench/storage_engine.py [--postgres DSN] [--no-uvloop]

SQLite runs on a temporary file (synchronous=NORMAL, the default, and FULL);
PostgreSQL on a throwaway schema of the given database.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from ranvier.storage import Database, next_stream_position, open_database

N = 1000


async def bench(db: Database, label: str) -> None:
    await db.execute(
        "CREATE TABLE bench (bench_id BIGINT PRIMARY KEY, body TEXT NOT NULL, position BIGINT)"
    )
    body = "x" * 200

    started = time.perf_counter()
    for i in range(N):
        async with db.transaction() as txn:
            await txn.execute("INSERT INTO bench (bench_id, body) VALUES (?, ?)", i, body)
    sequential = N / (time.perf_counter() - started)

    started = time.perf_counter()
    for i in range(N, 2 * N):
        await db.execute("INSERT INTO bench (bench_id, body) VALUES (?, ?)", i, body)
    autocommit = N / (time.perf_counter() - started)

    async def with_position(i: int) -> None:
        async with db.transaction() as txn:
            position = await next_stream_position(txn, "bench")
            await txn.execute(
                "INSERT INTO bench (bench_id, body, position) VALUES (?, ?, ?)", i, body, position
            )

    started = time.perf_counter()
    await asyncio.gather(*(with_position(i) for i in range(2 * N, 3 * N)))
    concurrent = N / (time.perf_counter() - started)

    latencies = []
    for i in range(5 * N):
        t0 = time.perf_counter()
        row = await db.fetch_one("SELECT bench_id, body FROM bench WHERE bench_id = ?", i % (3 * N))
        latencies.append(time.perf_counter() - t0)
        assert row is not None
    latencies.sort()

    started = time.perf_counter()
    await asyncio.gather(
        *(db.fetch_val("SELECT body FROM bench WHERE bench_id = ?", i) for i in range(5 * N))
    )
    concurrent_reads = 5 * N / (time.perf_counter() - started)

    print(
        f"{label:28} txn insert {sequential:7.0f}/s | autocommit insert {autocommit:7.0f}/s | "
        f"1000 concurrent txns w/ stream position {concurrent:7.0f}/s | "
        f"read p50 {statistics.median(latencies) * 1e6:5.0f}us "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e6:5.0f}us | "
        f"concurrent reads {concurrent_reads:7.0f}/s"
    )


async def main(postgres: str) -> None:
    for synchronous in ("normal", "full"):
        with tempfile.TemporaryDirectory() as tmp:
            db = await open_database(
                f"sqlite:///{Path(tmp) / 'bench.db'}?synchronous={synchronous}"
            )
            try:
                await bench(db, f"sqlite (synchronous={synchronous})")
            finally:
                await db.close()
    schema = f"ranvier_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(postgres)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        sep = "&" if "?" in postgres else "?"
        db = await open_database(f"{postgres}{sep}search_path={schema}")
        try:
            await bench(db, "postgresql")
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(args.postgres))
