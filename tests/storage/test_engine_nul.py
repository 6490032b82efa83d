"""Text with NUL (U+0000) is refused alike by both engines (issue 9): PostgreSQL
text cannot hold it, so SQLite must not store it either."""

from __future__ import annotations

import pytest

from ranvier.core.input_limits import TextWithNulError
from ranvier.storage import Database

UPSERT = "INSERT INTO profiles (user_id, field, value) VALUES (?, ?, ?)"
BAD = "a\x00b"


async def test_nul_text_is_refused_before_the_statement_runs(database: Database) -> None:
    with pytest.raises(TextWithNulError):
        await database.execute(UPSERT, "@a:x", BAD, '"v"')
    with pytest.raises(TextWithNulError):
        await database.fetch_one("SELECT value FROM profiles WHERE user_id = ?", BAD)
    with pytest.raises(TextWithNulError):
        await database.fetch_all("SELECT value FROM profiles WHERE user_id = ?", BAD)
    with pytest.raises(TextWithNulError):
        await database.fetch_val("SELECT value FROM profiles WHERE user_id = ?", BAD)
    with pytest.raises(TextWithNulError):
        await database.execute_many(UPSERT, [("@a:x", "ok", '"v"'), ("@a:x", BAD, '"v"')])
    assert await database.fetch_val("SELECT COUNT(*) FROM profiles") == 0


async def test_a_transaction_refusing_nul_rolls_back_whole(database: Database) -> None:
    with pytest.raises(TextWithNulError):
        async with database.transaction() as txn:
            await txn.execute(UPSERT, "@a:x", "first", '"v"')
            await txn.execute(UPSERT, "@a:x", "second", BAD)
    assert await database.fetch_val("SELECT COUNT(*) FROM profiles") == 0


async def test_json_text_with_escaped_nul_is_stored_and_read_back(database: Database) -> None:
    await database.execute(UPSERT, "@a:x", "f", '"a\\u0000b"')
    assert await database.fetch_val("SELECT value FROM profiles WHERE field = ?", "f") == '"a\\u0000b"'
