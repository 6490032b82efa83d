"""The full-text index of room events (Client-Server API, "Server Side Search").

Searchable: ``content.body`` of ``m.room.message``, ``content.name`` of
``m.room.name`` and ``content.topic`` of ``m.room.topic`` (with the
``text/plain`` bodies of its ``m.topic``), as the spec's ``room_events``
category lists them. ``m.room.encrypted`` events have no plaintext and are never
indexed. Rows are written by :func:`index_new_events`, called by
:class:`ranvier.storage.events.EventStore` in the transaction that persists the
events; a redaction deletes its target's row (:func:`unindex_event`).

Matching, the same on both engines: the text and the search term are split
into lowercase words (maximal runs of Unicode letters and digits,
:func:`words_of`) in Python; every word of the term must be a *prefix* of some
word of the text (the terms are ANDed). Nothing of the user's input reaches
the FTS query syntax but those words, each quoted, so FTS operators (``AND``,
``NEAR(``, ``"``, ``*``, ``-``, ``:``) are plain words or separators. SQLite
matches with FTS5 (``"word"*``), PostgreSQL with a ``simple`` tsvector under a
GIN index (``'word':*``). Relevance (``order_by: rank``) is each engine's own:
FTS5's bm25 and PostgreSQL's ``ts_rank`` (normalised by document length); both
favour more occurrences in shorter texts, ties newest first.

Edits (``m.relates_to.rel_type = m.replace``, "Event replacements"): the
``m.new_content`` text replaces its original's words under the original's
event ID when both have the same sender; the edit itself is not indexed, so a
search finds the original (once) by its new text. Redacting the edit brings
the original's own text back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ranvier.core.events import Event
from ranvier.storage.engine import Database, Queryable, Transaction, placeholders
from ranvier.storage.user_directory import update_directory_from_events

if TYPE_CHECKING:
    from ranvier.storage.events import StoredEvent

#: The spec's search keys and the event type each one searches.
KEY_TYPES: Mapping[str, str] = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
_TYPE_KEYS = {event_type: key for key, event_type in KEY_TYPES.items()}
#: Letters and digits of any script; ``_`` and everything else separate words.
_WORD = re.compile(r"[^\W_]+")
#: Words of a search term used (more narrow nothing down in practice).
MAX_TERMS = 16
#: Words kept per indexed text: bounds an event's index cost (a 64 KiB body).
_MAX_WORDS = 10_000
#: Longer words are cut to this (index and term alike): PostgreSQL drops words
#: over 2,047 bytes from a tsvector, FTS5 keeps them; cut, both keep the same.
MAX_WORD_CHARS = 100

Order = Literal["rank", "recent"]


def words_of(text: str) -> list[str]:
    """``text`` as lowercase words: maximal runs of letters and digits (cut
    to :data:`MAX_WORD_CHARS`)."""
    return [word[:MAX_WORD_CHARS] for word in _WORD.findall(text.lower())]


def search_terms(search_term: str) -> list[str]:
    """The distinct words of a search term, in order, at most :data:`MAX_TERMS`."""
    return list(dict.fromkeys(words_of(search_term)))[:MAX_TERMS]


def searchable_text(event_type: str, content: Mapping[str, Any]) -> str | None:
    """The text of an event the index holds, or None when it has none."""
    key = _TYPE_KEYS.get(event_type)
    if key is None:
        return None
    value = content.get(key.removeprefix("content."))
    parts = [value] if isinstance(value, str) else []
    if event_type == "m.room.topic":
        parts.extend(_plain_topic_bodies(content.get("m.topic")))
    return " ".join(parts) if parts else None


def _plain_topic_bodies(value: object) -> list[str]:
    """``m.topic`` (MSC3765): the ``text/plain`` representations' bodies."""
    if not isinstance(value, dict) or not isinstance(value.get("m.text"), list):
        return []
    return [
        item["body"]
        for item in value["m.text"]
        if isinstance(item, dict)
        and isinstance(item.get("body"), str)
        and item.get("mimetype", "text/plain") == "text/plain"
    ]


def _indexed_words(text: str) -> str:
    return " ".join(words_of(text)[:_MAX_WORDS])


def _edit_target(event: Event) -> tuple[str, str] | None:
    """``(original event ID, new text)`` of an ``m.replace`` edit, else None."""
    relates = event.content.get("m.relates_to")
    new_content = event.content.get("m.new_content")
    if not (isinstance(relates, dict) and relates.get("rel_type") == "m.replace"):
        return None
    target = relates.get("event_id")
    if not isinstance(target, str) or not isinstance(new_content, dict):
        return None
    text = searchable_text(event.type, new_content)
    return None if text is None else (target, text)


# --- writes (inside the events transaction) ------------------------------------------


def _vector_sql(engine: str) -> str:
    return "to_tsvector('simple', ?)" if engine == "postgresql" else "?"


def _column(engine: str) -> str:
    return "vector" if engine == "postgresql" else "words"


async def index_new_events(txn: Transaction, stored: Sequence[StoredEvent]) -> None:
    """Index the searchable events among ``stored`` (just inserted), apply their
    edits, and keep the user directory up to date (member and room state)."""
    rows: list[tuple[Any, ...]] = []
    edits: list[tuple[Any, ...]] = []
    for item in stored:
        if item.rejected:
            continue
        event = item.event
        if event.type in ("m.room.name", "m.room.topic") and event.state_key != "":
            continue
        edit = _edit_target(event)
        if edit is not None:
            edits.append((_indexed_words(edit[1]), edit[0], event.sender, event.room_id))
            continue
        text = searchable_text(event.type, event.content)
        if text is not None:
            key = _TYPE_KEYS[event.type]
            rows.append(
                (
                    event.event_id,
                    event.room_id,
                    event.sender,
                    key,
                    item.stream_ordering,
                    _indexed_words(text),
                )
            )
    column = _column(txn.engine)
    vector = _vector_sql(txn.engine)
    if rows:
        await txn.execute_many(
            "INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering,"
            f" {column}) VALUES (?, ?, ?, ?, ?, {vector}) ON CONFLICT (event_id) DO UPDATE SET"
            f" stream_ordering = excluded.stream_ordering, {column} = excluded.{column}",
            rows,
        )
    for edit_row in edits:
        # Same sender only ("Event replacements": a replacement by another
        # sender is ignored), so nobody can rewrite what another's message says.
        await txn.execute(
            f"UPDATE event_search SET {column} = {vector}"
            " WHERE event_id = ? AND sender = ? AND room_id = ?",
            *edit_row,
        )
    await update_directory_from_events(txn, stored)


async def unindex_event(txn: Transaction, event_id: str, room_id: str) -> None:
    """A redacted event is no longer searchable. A redacted edit no longer
    replaces its original's words: the original's own text comes back (without
    a relations index, an earlier edit of the same original is not looked for)."""
    await txn.execute(
        "DELETE FROM event_search WHERE event_id = ? AND room_id = ?", event_id, room_id
    )
    redacted = await _content_of(txn, event_id, room_id)
    if redacted is None:
        return
    relates = redacted[1].get("m.relates_to")
    if not (isinstance(relates, dict) and relates.get("rel_type") == "m.replace"):
        return
    original_id = relates.get("event_id")
    original = (
        None if not isinstance(original_id, str) else await _content_of(txn, original_id, room_id)
    )
    if original is None or original[0] != redacted[0]:
        return  # another sender's "edit" never replaced anything
    event_type = str(await txn.fetch_val("SELECT type FROM events WHERE event_id = ?", original_id))
    text = searchable_text(event_type, original[1])
    if text is not None:
        await txn.execute(
            f"UPDATE event_search SET {_column(txn.engine)} = {_vector_sql(txn.engine)}"
            " WHERE event_id = ?",
            _indexed_words(text),
            original_id,
        )


async def _content_of(
    txn: Transaction, event_id: str, room_id: str
) -> tuple[str, Mapping[str, Any]] | None:
    """``(sender, content)`` of a stored event of the room, unredacted."""
    row = await txn.fetch_one(
        "SELECT sender, json FROM events WHERE event_id = ? AND room_id = ?", event_id, room_id
    )
    if row is None:
        return None
    content = orjson.loads(row[1]).get("content")
    return (str(row[0]), content) if isinstance(content, dict) else None


# --- reads -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: str
    room_id: str
    stream_ordering: int
    #: Higher is more relevant (comparable within one engine only).
    rank: float


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to match: the words (non-empty), the rooms (non-empty), the keys,
    and optionally the senders."""

    terms: Sequence[str]
    room_ids: Sequence[str]
    keys: Sequence[str]
    senders: Sequence[str] | None = None


class SearchStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _match(self, query: SearchQuery) -> tuple[str, list[Any], str, str]:
        """``(FROM + WHERE, args, rank expression, rank direction)`` for the engine."""
        if self.database.engine == "postgresql":
            # Terms are letters and digits only; quoting is for clarity, not escaping.
            tsquery = " & ".join(f"'{term}':*" for term in query.terms)
            source = " FROM event_search s, to_tsquery('simple', ?) q WHERE s.vector @@ q"
            rank = "ts_rank(s.vector, q, 1)"
            args: list[Any] = [tsquery]
            direction = "DESC"
        else:
            match = " AND ".join('"{}"*'.format(term.replace('"', '""')) for term in query.terms)
            # CROSS JOIN: the FTS match drives the loop (SQLite keeps the
            # order of a CROSS JOIN). Left to the planner, it scanned the room's
            # rows and ran the whole MATCH again for each one.
            source = (
                " FROM event_search_fts CROSS JOIN event_search s"
                " ON s.rowid = event_search_fts.rowid WHERE event_search_fts MATCH ?"
            )
            # bm25: lower is more relevant.
            rank = "bm25(event_search_fts)"
            args = [match]
            direction = "ASC"
        source += f" AND s.room_id IN ({placeholders(len(query.room_ids))})"
        args.extend(query.room_ids)
        source += f" AND s.key IN ({placeholders(len(query.keys))})"
        args.extend(query.keys)
        if query.senders is not None:
            source += f" AND s.sender IN ({placeholders(len(query.senders))})"
            args.extend(query.senders)
        return source, args, rank, direction

    async def search(
        self, query: SearchQuery, order: Order, after: int | None, limit: int
    ) -> tuple[list[SearchHit], int | None]:
        """Up to ``limit`` hits in ``order``, after a cursor: for ``rank`` the
        number of hits already read (an offset), for ``recent`` the stream
        ordering of the last hit read (newest first). With them, how many
        events match in all (a window count: no second query), or None when
        the cursor narrowed the query (``recent`` after a cursor) or no row came."""
        source, args, rank, direction = self._match(query)
        whole = order == "rank" or after is None
        if order == "recent" and after is not None:
            source += " AND s.stream_ordering < ?"
            args.append(after)
        if order == "recent":
            ordering = "stream_ordering DESC LIMIT ?"
            args.append(limit)
        else:
            ordering = f"rank_value {direction}, stream_ordering DESC LIMIT ? OFFSET ?"
            args.extend((limit, after or 0))
        # The count is a window over the matches; the matches are a
        # materialized CTE because FTS5's bm25() cannot run inside a window query.
        sql = (
            "WITH m AS MATERIALIZED (SELECT s.event_id, s.room_id, s.stream_ordering,"
            f" {rank} AS rank_value{source}) SELECT event_id, room_id, stream_ordering,"
            f" rank_value, COUNT(*) OVER () FROM m ORDER BY {ordering}"
        )
        rows = await self.database.fetch_all(sql, *args)
        sign = -1.0 if direction == "ASC" else 1.0
        hits = [
            SearchHit(str(row[0]), str(row[1]), int(row[2]), sign * float(row[3])) for row in rows
        ]
        return hits, int(rows[0][4]) if rows and whole else None

    async def count(self, query: SearchQuery) -> int:
        """How many indexed events match (before visibility: the spec's
        approximate ``count``)."""
        source, args, _, _ = self._match(query)
        return int(await self.database.fetch_val(f"SELECT COUNT(*){source}", *args) or 0)

    async def index_size(self, db: Queryable | None = None) -> int:
        """Rows in the index (for tests and the benchmark)."""
        return int(await (db or self.database).fetch_val("SELECT COUNT(*) FROM event_search"))
