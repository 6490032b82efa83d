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
GIN index (``'word':*``). Relevance (``order_by: rank``) is the same on both
engines: texts of fewer words first (the search's words are more of the text;
``rank`` is 1 / the number of words), ties newest first. It is stored with each
row (``words_count``), so ranking a common word's thousands of matches costs
no per-match scoring: FTS5's bm25 cost ~4 µs per match, 20 ms for a word in
5,000 of 100,000 messages (issue 13). The spec leaves the measure of relevance
to the server.

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
#: The keys as event_search_order stores them (SQLite, 0019_search_order.sqlite.sql).
_KEY_NIDS = {"content.body": 0, "content.name": 1, "content.topic": 2}
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


def _indexed_words(text: str) -> tuple[str, int]:
    """The words the index holds for ``text`` (space separated) and how many."""
    words = words_of(text)[:_MAX_WORDS]
    return " ".join(words), len(words)


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
            edits.append((*_indexed_words(edit[1]), edit[0], event.sender, event.room_id))
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
                    *_indexed_words(text),
                )
            )
    column = _column(txn.engine)
    vector = _vector_sql(txn.engine)
    if rows:
        await txn.execute_many(
            "INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering,"
            f" {column}, words_count) VALUES (?, ?, ?, ?, ?, {vector}, ?)"
            " ON CONFLICT (event_id) DO UPDATE SET stream_ordering = excluded.stream_ordering,"
            f" {column} = excluded.{column}, words_count = excluded.words_count",
            rows,
        )
    for edit_row in edits:
        # Same sender only ("Event replacements": a replacement by another
        # sender is ignored), so nobody can rewrite what another's message says.
        await txn.execute(
            f"UPDATE event_search SET {column} = {vector}, words_count = ?"
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
            f"UPDATE event_search SET {_column(txn.engine)} = {_vector_sql(txn.engine)},"
            " words_count = ? WHERE event_id = ?",
            *_indexed_words(text),
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

    def _match(self, query: SearchQuery) -> tuple[str, list[Any]]:
        """``(FROM + WHERE, args)`` of the matching rows for the engine. Both
        give each row ``stream_ordering`` and ``words_count`` through the alias
        ``o``; ``rowid`` is the SQLite FTS table's (the stream ordering)."""
        if self.database.engine == "postgresql":
            # Terms are letters and digits only; quoting is for clarity, not escaping.
            tsquery = " & ".join(f"'{term}':*" for term in query.terms)
            args: list[Any] = [tsquery]
            source = (
                " FROM event_search o WHERE o.vector @@ to_tsquery('simple', ?)"
                f" AND o.room_id IN ({placeholders(len(query.room_ids))})"
            )
            args.extend(query.room_ids)
            if set(query.keys) != set(KEY_TYPES):
                source += f" AND o.key IN ({placeholders(len(query.keys))})"
                args.extend(query.keys)
            if query.senders is not None:
                source += f" AND o.sender IN ({placeholders(len(query.senders))})"
                args.extend(query.senders)
            return source, args
        match = " AND ".join('"{}"*'.format(term.replace('"', '""')) for term in query.terms)
        # CROSS JOIN: the FTS match drives the loop (SQLite keeps the order of
        # a CROSS JOIN), each match costing one lookup in the narrow
        # event_search_order table (0019_search_order.sqlite.sql).
        source = (
            " FROM event_search_fts CROSS JOIN event_search_order o"
            " ON o.stream_ordering = event_search_fts.rowid WHERE event_search_fts MATCH ?"
            " AND o.room_nid IN (SELECT room_nid FROM event_search_rooms"
            f" WHERE room_id IN ({placeholders(len(query.room_ids))}))"
        )
        args = [match, *query.room_ids]
        if set(query.keys) != set(KEY_TYPES):
            source += f" AND o.key_nid IN ({placeholders(len(query.keys))})"
            args.extend(_KEY_NIDS[key] for key in query.keys)
        if query.senders is not None:
            source += (
                " AND (SELECT sender FROM events e WHERE e.stream_ordering = o.stream_ordering)"
                f" IN ({placeholders(len(query.senders))})"
            )
            args.extend(query.senders)
        return source, args

    async def search(
        self, query: SearchQuery, order: Order, after: int | None, limit: int
    ) -> list[SearchHit]:
        """Up to ``limit`` hits in ``order``, after a cursor: for ``rank`` the
        number of hits already read (an offset), for ``recent`` the stream
        ordering of the last hit read (newest first).

        ``rank``: fewer words first (the search's words are more of the
        text), then newest first; the same order on both engines. ``recent``
        on SQLite reads the FTS index newest first and stops at ``limit``."""
        source, args = self._match(query)
        sqlite = self.database.engine == "sqlite"
        if order == "recent":
            position = "event_search_fts.rowid" if sqlite else "o.stream_ordering"
            if after is not None:
                source += f" AND {position} < ?"
                args.append(after)
            # PostgreSQL: "+ 0" keeps the planner off a backward scan of
            # event_search_room filtered by the tsquery, which it picked for a
            # rare word too (it cannot tell how many rows a prefix query
            # matches), reading a whole 100,000-message room (50 ms) instead
            # of the GIN index's 100 matches.
            ordering = f"{position} DESC LIMIT ?" if sqlite else f"{position} + 0 DESC LIMIT ?"
            args.append(limit)
        else:
            ordering = "o.words_count, o.stream_ordering DESC LIMIT ? OFFSET ?"
            args.extend((limit, after or 0))
        if sqlite:
            # The page first, then its events' IDs (events' primary key is the
            # stream ordering): one lookup per hit, not per match.
            sql = (
                "SELECT e.event_id, e.room_id, p.stream_ordering, p.words_count FROM"
                f" (SELECT o.stream_ordering, o.words_count{source} ORDER BY {ordering}) p"
                " JOIN events e ON e.stream_ordering = p.stream_ordering"
            )
        else:
            sql = (
                "SELECT o.event_id, o.room_id, o.stream_ordering, o.words_count"
                f"{source} ORDER BY {ordering}"
            )
        rows = [
            (int(row[3]), -int(row[2]), str(row[0]), str(row[1]))
            for row in await self.database.fetch_all(sql, *args)
        ]
        # The join may have lost the page's order: sorted again (a page is short).
        rows.sort(key=(lambda row: row[1]) if order == "recent" else None)
        return [
            SearchHit(event_id, room_id, -negated, 1.0 / max(words_count, 1))
            for words_count, negated, event_id, room_id in rows
        ]

    async def count(self, query: SearchQuery) -> int:
        """How many indexed events match (before visibility: the spec's
        approximate ``count``)."""
        source, args = self._match(query)
        return int(await self.database.fetch_val(f"SELECT COUNT(*){source}", *args) or 0)

    async def index_size(self, db: Queryable | None = None) -> int:
        """Rows in the index (for tests and the benchmark)."""
        return int(await (db or self.database).fetch_val("SELECT COUNT(*) FROM event_search"))
