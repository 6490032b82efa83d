"""Current positions of several streams in one read (what a /sync token is built from)."""

from __future__ import annotations

from collections.abc import Sequence

from ranvier.storage.engine import Queryable, placeholders


async def current_stream_positions(db: Queryable, stream_names: Sequence[str]) -> dict[str, int]:
    """``stream_name -> highest committed position`` (0 for a stream never written).

    Each value is what :func:`ranvier.storage.engine.current_stream_position`
    returns; every position up to it is committed.
    """
    names = list(dict.fromkeys(stream_names))
    positions = dict.fromkeys(names, 0)
    if not names:
        return positions
    rows = await db.fetch_all(
        "SELECT stream_name, position FROM stream_positions"
        f" WHERE stream_name IN ({placeholders(len(names))})",
        *names,
    )
    for row in rows:
        positions[row[0]] = int(row[1])
    return positions
