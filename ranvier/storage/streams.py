"""Current positions of several streams in one read (what a /sync token is built from)."""

from __future__ import annotations

from collections.abc import Sequence

from ranvier.storage.engine import Database


async def current_stream_positions(db: Database, stream_names: Sequence[str]) -> dict[str, int]:
    """``stream_name -> highest committed position`` (0 for a stream never written).

    Each value is what :func:`ranvier.storage.engine.current_stream_position`
    returns; every position up to it is committed. Kept in memory by the
    database (:class:`ranvier.storage.engine.Database`), so this costs no query.
    """
    return await db.stream_positions(list(dict.fromkeys(stream_names)))
