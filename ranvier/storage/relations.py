"""Relations index: which events relate to which (Client-Server API, "Forming
relationships between events", "Threading", "Aggregations of child events").

Written by :class:`ranvier.storage.events.EventStore` in the transaction that
writes the events rows (:func:`write_relations`, for local and federated
events alike) and by its redaction path (:func:`remove_relation`). Read by
ranvier/services/relations.py through :class:`RelationStore`. Tables: see
the migration ``*_relations.sql``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ranvier.core.relations import THREAD, parse_relation
from ranvier.storage.engine import Database, Transaction, placeholders

if TYPE_CHECKING:
    from ranvier.storage.events import StoredEvent

_CHUNK = 500
#: Levels of indirect relations /relations follows with ``recurse`` (the spec
#: asks for at least 3; Synapse stops at 3 too).
RECURSION_DEPTH = 3
_INSERT = (
    "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, sender, type,"
    " stream_ordering, origin_server_ts, thread_id, in_reply_to, aggregation_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_UPSERT_THREAD = (
    "INSERT INTO threads (room_id, thread_id, latest_event_id, latest_stream_ordering)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (room_id, thread_id) DO UPDATE SET"
    " latest_event_id = CASE WHEN excluded.latest_stream_ordering"
    " > threads.latest_stream_ordering THEN excluded.latest_event_id"
    " ELSE threads.latest_event_id END,"
    " latest_stream_ordering = CASE WHEN excluded.latest_stream_ordering"
    " > threads.latest_stream_ordering THEN excluded.latest_stream_ordering"
    " ELSE threads.latest_stream_ordering END"
)
_ROW_COLUMNS = "event_id, room_id, relates_to_id, rel_type, sender, type, stream_ordering"
#: Events remembered as having no relation pointing at them.
CHILDLESS_CACHE_SIZE = 50_000


class ChildlessEvents:
    """Events known to have no relation pointing at them: most messages. An
    event served to many users (a new message woken /syncs all show) costs
    the bundled aggregations' queries once, not once per /sync (DESIGN.md:
    "Caches are explicit, bounded and invalidated by the code that writes").

    Added by the reader that found no relation (:meth:`add`, refused when a
    relation was written since it began: :attr:`generation`); an event leaves
    once a relation to it commits (:func:`write_relations`). Oldest out first.
    """

    def __init__(self, size: int = CHILDLESS_CACHE_SIZE) -> None:
        self._known: OrderedDict[str, None] = OrderedDict()
        self._size = size
        #: Bumped by every write of relations.
        self.generation = 0

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._known

    def add(self, event_ids: Iterable[str], generation: int) -> None:
        """``event_ids`` had no relation when read by a reader that began at
        ``generation``."""
        if generation != self.generation:
            return  # a relation committed meanwhile: it may point at one of them
        known = self._known
        for event_id in event_ids:
            known[event_id] = None
        while len(known) > self._size:
            known.popitem(last=False)

    def forget(self, event_ids: Iterable[str]) -> None:
        """Relations to ``event_ids`` committed."""
        self.generation += 1
        for event_id in event_ids:
            self._known.pop(event_id, None)


@dataclass(frozen=True, slots=True)
class RelationRow:
    event_id: str
    room_id: str
    relates_to_id: str
    rel_type: str
    sender: str
    type: str
    stream_ordering: int


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    room_id: str
    count: int
    latest_event_id: str
    #: The user asked about sent a reply in the thread.
    user_replied: bool


def _relation_row(stored: StoredEvent) -> tuple[Any, ...] | None:
    """The ``event_relations`` row of ``stored``, or None (no well-formed
    relation, or an event clients are never shown)."""
    if stored.rejected or stored.outlier or stored.soft_failed:
        return None
    event = stored.event
    relation = parse_relation(event.content)
    if relation is None:
        return None
    return (
        event.event_id,
        event.room_id,
        relation.event_id,
        relation.rel_type,
        event.sender,
        event.type,
        stored.stream_ordering,
        event.origin_server_ts,
        relation.event_id if relation.rel_type == THREAD else None,
        relation.in_reply_to,
        relation.key,
    )


async def write_relations(
    txn: Transaction, stored: Sequence[StoredEvent], childless: ChildlessEvents
) -> None:
    """Index the relations of newly written events (inside their transaction)."""
    rows = [row for row in map(_relation_row, stored) if row is not None]
    if not rows:
        return
    targets = [row[2] for row in rows]
    # Before the commit too: a reader that began before it and read no row
    # cannot add a target once the generation moved.
    childless.forget(targets)
    txn.call_after_commit(lambda: childless.forget(targets))
    await txn.execute_many(_INSERT, rows)
    threads = [(row[1], row[8], row[0], row[6]) for row in rows if row[8] is not None]
    for thread in sorted(threads, key=lambda t: int(t[3])):
        await txn.execute(_UPSERT_THREAD, *thread)


async def remove_relation(txn: Transaction, room_id: str, event_id: str) -> None:
    """Drop a redacted event from the index ("Redactions": a redacted relation
    no longer counts); a thread whose latest reply it was falls back to the
    reply before, or disappears with its last reply."""
    row = await txn.fetch_one(
        "SELECT thread_id FROM event_relations WHERE event_id = ? AND room_id = ?",
        event_id,
        room_id,
    )
    if row is None:
        return
    await txn.execute("DELETE FROM event_relations WHERE event_id = ?", event_id)
    thread_id = row[0]
    if thread_id is None:
        return
    latest = await txn.fetch_one(
        "SELECT event_id, stream_ordering FROM event_relations WHERE relates_to_id = ?"
        " AND rel_type = ? AND room_id = ? ORDER BY stream_ordering DESC LIMIT 1",
        thread_id,
        THREAD,
        room_id,
    )
    if latest is None:
        await txn.execute(
            "DELETE FROM threads WHERE room_id = ? AND thread_id = ?", room_id, thread_id
        )
        return
    await txn.execute(
        "UPDATE threads SET latest_event_id = ?, latest_stream_ordering = ?"
        " WHERE room_id = ? AND thread_id = ?",
        latest[0],
        int(latest[1]),
        room_id,
        thread_id,
    )


class RelationStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def children(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_pos: int,
        to_pos: int,
        direction: Literal["f", "b"],
        limit: int,
        recurse: bool,
    ) -> list[tuple[str, int]]:
        """``(event_id, stream_ordering)`` of events of ``room_id`` relating to
        ``parent_id`` (through up to :data:`RECURSION_DEPTH` relations with
        ``recurse``), forwards ``from_pos < position <= to_pos`` oldest first or
        backwards ``to_pos < position <= from_pos`` newest first."""
        if direction == "f":
            bounds, order = "stream_ordering > ? AND stream_ordering <= ?", "ASC"
        else:
            bounds, order = "stream_ordering <= ? AND stream_ordering > ?", "DESC"
        filters = ""
        args: list[Any] = []
        if rel_type is not None:
            filters += " AND rel_type = ?"
            args.append(rel_type)
        if event_type is not None:
            filters += " AND type = ?"
            args.append(event_type)
        if not recurse:
            rows = await self.database.fetch_all(
                "SELECT event_id, stream_ordering FROM event_relations"
                f" WHERE relates_to_id = ? AND room_id = ? AND {bounds}{filters}"
                f" ORDER BY stream_ordering {order} LIMIT ?",
                parent_id,
                room_id,
                from_pos,
                to_pos,
                *args,
                limit,
            )
            return [(row[0], int(row[1])) for row in rows]
        # Each level joins on the index of relates_to_id; the depth bound also
        # ends a cycle (possible in room versions 1-2, whose event IDs are not
        # hashes), and UNION drops repeated rows.
        rows = await self.database.fetch_all(
            "WITH RECURSIVE related (event_id, depth) AS ("
            " SELECT event_id, 1 FROM event_relations WHERE relates_to_id = ? AND room_id = ?"
            " UNION SELECT r.event_id, related.depth + 1 FROM event_relations r"
            " JOIN related ON r.relates_to_id = related.event_id"
            " WHERE r.room_id = ? AND related.depth < ?)"
            " SELECT DISTINCT event_id, stream_ordering FROM event_relations"
            f" WHERE event_id IN (SELECT event_id FROM related) AND {bounds}{filters}"
            f" ORDER BY stream_ordering {order} LIMIT ?",
            parent_id,
            room_id,
            room_id,
            RECURSION_DEPTH,
            from_pos,
            to_pos,
            *args,
            limit,
        )
        return [(row[0], int(row[1])) for row in rows]

    async def rows_for_parents(
        self, parent_ids: Sequence[str], rel_types: Sequence[str]
    ) -> list[RelationRow]:
        """Relations of the given types to any of ``parent_ids``, oldest first
        (every room: the caller keeps those in the parent's room)."""
        found: list[RelationRow] = []
        parents = list(dict.fromkeys(parent_ids))
        for start in range(0, len(parents), _CHUNK):
            chunk = parents[start : start + _CHUNK]
            rows = await self.database.fetch_all(
                f"SELECT {_ROW_COLUMNS} FROM event_relations"
                f" WHERE relates_to_id IN ({placeholders(len(chunk))})"
                f" AND rel_type IN ({placeholders(len(rel_types))})",
                *chunk,
                *rel_types,
            )
            found += [RelationRow(r[0], r[1], r[2], r[3], r[4], r[5], int(r[6])) for r in rows]
        found.sort(key=lambda row: row.stream_ordering)
        return found

    async def thread_summaries(
        self, root_ids: Sequence[str], user_id: str | None
    ) -> dict[tuple[str, str], ThreadSummary]:
        """``(room_id, root) -> summary`` of the threads rooted at ``root_ids``."""
        found: dict[tuple[str, str], ThreadSummary] = {}
        roots = list(dict.fromkeys(root_ids))
        for start in range(0, len(roots), _CHUNK):
            chunk = roots[start : start + _CHUNK]
            rows = await self.database.fetch_all(
                "SELECT r.room_id, r.relates_to_id, COUNT(*),"
                " SUM(CASE WHEN r.sender = ? THEN 1 ELSE 0 END), t.latest_event_id"
                " FROM event_relations r JOIN threads t"
                " ON t.room_id = r.room_id AND t.thread_id = r.relates_to_id"
                f" WHERE r.rel_type = ? AND r.relates_to_id IN ({placeholders(len(chunk))})"
                " GROUP BY r.room_id, r.relates_to_id, t.latest_event_id",
                user_id or "",
                THREAD,
                *chunk,
            )
            for row in rows:
                found[(row[0], row[1])] = ThreadSummary(
                    row[0], int(row[2]), row[4], int(row[3] or 0) > 0
                )
        return found

    async def bounded_thread_summaries(
        self,
        root_ids: Sequence[str],
        user_id: str | None,
        cap: int | None,
        excluded_senders: frozenset[str],
    ) -> dict[tuple[str, str], ThreadSummary]:
        """As :meth:`thread_summaries`, counting only the replies a reader may
        see: at stream positions up to ``cap`` (a user who left sees the room
        up to their leave) and not sent by ``excluded_senders`` (the users they
        ignore). The latest reply is the newest of those, not ``threads``'."""
        found: dict[tuple[str, str], ThreadSummary] = {}
        roots = list(dict.fromkeys(root_ids))
        senders = sorted(excluded_senders)
        bounds = "" if cap is None else " AND stream_ordering <= ?"
        bounds += f" AND sender NOT IN ({placeholders(len(senders))})" if senders else ""
        bound_args: list[Any] = ([] if cap is None else [cap]) + senders
        for start in range(0, len(roots), _CHUNK):
            chunk = roots[start : start + _CHUNK]
            where = f"rel_type = ? AND relates_to_id IN ({placeholders(len(chunk))}){bounds}"
            rows = await self.database.fetch_all(
                "SELECT room_id, relates_to_id, COUNT(*),"
                " SUM(CASE WHEN sender = ? THEN 1 ELSE 0 END), MAX(stream_ordering)"
                f" FROM event_relations WHERE {where} GROUP BY room_id, relates_to_id",
                user_id or "",
                THREAD,
                *chunk,
                *bound_args,
            )
            if not rows:
                continue
            latest = {(row[0], row[1]): int(row[4]) for row in rows}
            positions = sorted(set(latest.values()))
            id_rows = await self.database.fetch_all(
                "SELECT room_id, relates_to_id, event_id, stream_ordering FROM event_relations"
                f" WHERE rel_type = ? AND relates_to_id IN ({placeholders(len(chunk))})"
                f" AND stream_ordering IN ({placeholders(len(positions))})",
                THREAD,
                *chunk,
                *positions,
            )
            latest_ids = {
                (r[0], r[1]): r[2] for r in id_rows if latest.get((r[0], r[1])) == int(r[3])
            }
            for row in rows:
                key = (row[0], row[1])
                if key in latest_ids:
                    found[key] = ThreadSummary(
                        row[0], int(row[2]), latest_ids[key], int(row[3] or 0) > 0
                    )
        return found

    async def threads(
        self,
        room_id: str,
        before: int | None,
        limit: int,
        participant: str | None,
        cap: int | None = None,
    ) -> list[tuple[str, int]]:
        """``(root, latest_stream_ordering)`` of the room's threads, most recent
        activity first, those with latest activity below ``before``; only those
        ``participant`` took part in (sent the root or a reply) when given.
        With ``cap`` (a reader who left), only replies up to it count: a
        thread whose replies all came later is none of theirs, and activity is
        their latest visible reply (one grouped read per thread of the room:
        only for users who left)."""
        if cap is None:
            sql = "SELECT t.thread_id, t.latest_stream_ordering FROM threads t WHERE t.room_id = ?"
            latest = "t.latest_stream_ordering"
        else:
            sql = (
                "SELECT t.thread_id, MAX(r.stream_ordering) FROM threads t"
                " JOIN event_relations r ON r.relates_to_id = t.thread_id"
                " AND r.rel_type = ? AND r.room_id = t.room_id AND r.stream_ordering <= ?"
                " WHERE t.room_id = ?"
            )
            latest = "MAX(r.stream_ordering)"
        args: list[Any] = [room_id] if cap is None else [THREAD, cap, room_id]
        if participant is not None:
            sql += (
                " AND (EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.thread_id"
                " AND e.sender = ?) OR EXISTS (SELECT 1 FROM event_relations p"
                " WHERE p.relates_to_id = t.thread_id AND p.rel_type = ? AND p.room_id = ?"
                " AND p.sender = ?))"
            )
            args += [participant, THREAD, room_id, participant]
        bound = ""
        if before is not None:
            bound = f" {latest} < ?"
            args.append(before)
        if cap is None:
            sql += f" AND{bound}" if bound else ""
        else:
            sql += " GROUP BY t.thread_id" + (f" HAVING{bound}" if bound else "")
        sql += f" ORDER BY {latest} DESC LIMIT ?"
        rows = await self.database.fetch_all(sql, *args, limit)
        return [(row[0], int(row[1])) for row in rows]

    async def has_annotation(self, parent_id: str, sender: str, event_type: str, key: str) -> bool:
        """Whether ``sender`` already annotated ``parent_id`` with ``key``
        (a redacted annotation left the index, so it does not count)."""
        value = await self.database.fetch_val(
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? AND rel_type = 'm.annotation'"
            " AND sender = ? AND type = ? AND aggregation_key = ? LIMIT 1",
            parent_id,
            sender,
            event_type,
            key,
        )
        return value is not None

    async def is_parent(self, event_id: str) -> bool:
        """Whether some indexed event relates to ``event_id``."""
        value = await self.database.fetch_val(
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? LIMIT 1", event_id
        )
        return value is not None
