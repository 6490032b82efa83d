"""Relations and threads: ``/relations``, ``/threads``, bundled aggregations,
and the checks on relations clients send.

Client-Server API v1.19: "Forming relationships between events" (relations.yaml),
"Aggregations of child events", "Threading" (threads_list.yaml), "Event
replacements", "Reference relations", "Annotations". The index is written by
the event store (ranvier/storage/relations.py); this service reads it.

Bundles are computed per page of events (a few queries whatever the page
size): ``m.replace`` (the latest valid edit, whole), ``m.thread``
(``latest_event``, ``count``, ``current_user_participated``) and
``m.reference`` (``chunk`` of event IDs). ``m.annotation`` is not bundled
(v1.7). The original's content is never replaced by an edit's (v1.7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ranvier.core.relations import (
    ANNOTATION,
    NO_BUNDLE_RELATIONS,
    REFERENCE,
    REPLACE,
    THREAD,
    latest_edit,
    may_start_thread,
    parse_relation,
    rel_type_of,
)
from ranvier.errors import MatrixError
from ranvier.services.pagination import HISTORY_START, Access
from ranvier.services.sync import pagination_token, parse_pagination_token
from ranvier.services.visibility import filter_events_for_member, filter_events_for_user
from ranvier.storage.events import StoredEvent
from ranvier.storage.relations import RECURSION_DEPTH, RelationStore, ThreadSummary

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver

Direction = Literal["f", "b"]
#: Rows read per query while paging; at most this many queries per request.
_BATCH = 100
_MAX_BATCHES = 10


@dataclass(slots=True)
class Bundle:
    """What ``unsigned.m.relations`` of one event holds, before serialization."""

    edit: StoredEvent | None = None
    #: ``(latest_event, count, current_user_participated)``.
    thread: tuple[StoredEvent, int, bool] | None = None
    references: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return self.edit is None and self.thread is None and not self.references


def _not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "Event not found or you may not read it")


def _shown(stored: StoredEvent) -> bool:
    return not (stored.rejected or stored.outlier or stored.soft_failed)


@dataclass(frozen=True, slots=True)
class _Reader:
    """What of a page's relations one reader may see in bundles.

    ``caps``: rooms the user is not joined to (nor world-readable), with the
    last stream position they may read: their leave, ban or knock (as
    /messages, ``PaginationService.access``: "Room History Visibility" gives
    nothing sent after a user left); a room they were never in has
    :data:`HISTORY_START` (nothing). ``ignored``: users they ignore ("Ignoring
    Users": their events are left out wherever events are served)."""

    caps: Mapping[str, int] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()

    def filters(self) -> bool:
        return bool(self.caps or self.ignored)

    def hides(self, room_id: str, stream_ordering: int, sender: str) -> bool:
        cap = self.caps.get(room_id)
        return (cap is not None and stream_ordering > cap) or sender in self.ignored


#: Memberships under which new events reach the user (no cap).
_UNCAPPED = ("join", "invite")


def _may_be_root(stored: StoredEvent) -> bool:
    """Only an event without a relation is a thread root ("Threading": threads
    do not nest); one received over federation that breaks this is no thread."""
    return stored.redacted_by is not None or rel_type_of(stored.event.content) is None


class RelationsService:
    def __init__(self, hs: Homeserver) -> None:
        self.hs = hs
        self.store = RelationStore(hs.database)

    # --- bundled aggregations ------------------------------------------------------------

    async def bundles(
        self, events: Sequence[StoredEvent], user_id: str | None
    ) -> dict[str, Bundle]:
        """``event_id -> Bundle`` for those of ``events`` with aggregated children.

        As Synapse: state events get none, nor do edits and annotations (they
        cannot have children of their own); a redacted event gets no
        ``m.replace`` ("Server-side aggregation of m.replace"); only events
        without a relation can be thread roots ("Threading")."""
        parents = {
            s.event_id: s
            for s in events
            if not s.event.is_state()
            and _shown(s)
            and (
                s.redacted_by is not None or rel_type_of(s.event.content) not in NO_BUNDLE_RELATIONS
            )
        }
        childless = self.hs.rooms.events.childless
        generation = childless.generation
        parents = {event_id: s for event_id, s in parents.items() if event_id not in childless}
        if not parents:
            return {}
        found: dict[str, Bundle] = {}
        reader = await self._reader(user_id, {s.room_id for s in parents.values()})
        with_children = await self._add_edits_and_references(parents, reader, found)
        roots = [s.event_id for s in parents.values() if _may_be_root(s)]
        with_children |= await self._add_threads(parents, roots, user_id, reader, found)
        if not reader.filters():  # every relation was read: none means none
            childless.add((e for e in parents if e not in with_children), generation)
        return {event_id: bundle for event_id, bundle in found.items() if not bundle.empty()}

    async def _reader(self, user_id: str | None, room_ids: set[str]) -> _Reader:
        """The reader's caps and ignore list. A joined user (the common case)
        costs only cached lookups (membership, ignore list); the history
        visibility is read only for rooms they are not in."""
        if user_id is None:
            return _Reader()
        ignored = await self.hs.account_data.ignored_users(user_id)
        caps: dict[str, int] = {}
        for room_id in room_ids:
            # From the per-user membership cache (/sync filled it).
            membership = await self.hs.rooms.store.get_membership(room_id, user_id)
            if membership is not None and membership.membership in _UNCAPPED:
                continue
            if await self.hs.rooms.history_visibility(room_id) == "world_readable":
                continue
            caps[room_id] = HISTORY_START if membership is None else membership.stream_ordering
        return _Reader(caps, ignored)

    async def _add_edits_and_references(
        self, parents: dict[str, StoredEvent], reader: _Reader, found: dict[str, Bundle]
    ) -> set[str]:
        """Add edits and references; the parents that have any (seen or not)."""
        rows = await self.store.rows_for_parents(list(parents), [REPLACE, REFERENCE])
        with_children = {row.relates_to_id for row in rows}
        candidates: dict[str, list[str]] = {}
        for row in rows:
            parent = parents[row.relates_to_id]
            if row.room_id != parent.room_id:
                continue  # never across rooms
            if reader.hides(row.room_id, row.stream_ordering, row.sender):
                # Edits: the latest valid one among those the reader may see.
                continue
            if row.rel_type == REFERENCE:
                found.setdefault(row.relates_to_id, Bundle()).references.append(row.event_id)
            elif (
                parent.redacted_by is None
                and row.sender == parent.event.sender
                and row.type == parent.event.type
            ):
                candidates.setdefault(row.relates_to_id, []).append(row.event_id)
        if not candidates:
            return with_children
        loaded = await self.hs.rooms.events.get_events(
            [eid for ids in candidates.values() for eid in ids]
        )
        for parent_id, edit_ids in candidates.items():
            edits = [loaded[eid] for eid in edit_ids if eid in loaded]
            by_event = {id(s.event): s for s in edits}
            best = latest_edit(parents[parent_id].event, [s.event for s in edits])
            if best is not None:
                found.setdefault(parent_id, Bundle()).edit = by_event[id(best)]
        return with_children

    async def _add_threads(
        self,
        parents: dict[str, StoredEvent],
        roots: list[str],
        user_id: str | None,
        reader: _Reader,
        found: dict[str, Bundle],
    ) -> set[str]:
        """Add thread summaries; the roots that have a thread (in any room)."""
        if not roots:
            return set()
        summaries = await self._thread_summaries(parents, roots, user_id, reader)
        wanted = {
            root: summary
            for (room_id, root), summary in summaries.items()
            if parents[root].room_id == room_id
        }
        latest = await self.hs.rooms.events.get_events(s.latest_event_id for s in wanted.values())
        for root, summary in wanted.items():
            latest_event = latest.get(summary.latest_event_id)
            if latest_event is None:
                continue
            participated = summary.user_replied or parents[root].event.sender == user_id
            found.setdefault(root, Bundle()).thread = (latest_event, summary.count, participated)
        return {root for _, root in summaries}

    async def _thread_summaries(
        self,
        parents: dict[str, StoredEvent],
        roots: list[str],
        user_id: str | None,
        reader: _Reader,
    ) -> dict[tuple[str, str], ThreadSummary]:
        """Thread summaries from the ``threads`` table when the reader sees
        every reply; otherwise counted over the replies they may see, one
        query per cap: ``latest_event`` is the newest of those and ``count``
        leaves out the others (Synapse too subtracts ignored users' replies
        from the count; a thread with none left has no summary)."""
        if not reader.filters():
            return await self.store.thread_summaries(roots, user_id)
        by_cap: dict[int | None, list[str]] = {}
        for root in roots:
            by_cap.setdefault(reader.caps.get(parents[root].room_id), []).append(root)
        summaries: dict[tuple[str, str], ThreadSummary] = {}
        for cap, chunk in by_cap.items():
            summaries.update(
                await self.store.bounded_thread_summaries(chunk, user_id, cap, reader.ignored)
            )
        return summaries

    # --- /relations ----------------------------------------------------------------------

    async def _visible_parent(self, user_id: str, room_id: str, event_id: str) -> Access:
        """What the user may read of the room, once the parent event is known
        to be theirs to see; 404 ``M_NOT_FOUND`` otherwise (an
        event of another room, unknown or invisible: nothing leaks)."""
        try:
            access = await self.hs.pagination.access(user_id, room_id)
        except MatrixError as exc:
            if exc.status == 403:
                raise _not_found() from None
            raise
        parent = await self.hs.rooms.events.get_event(event_id)
        if (
            parent is None
            or parent.room_id != room_id
            or not _shown(parent)
            or (access.cap is not None and parent.stream_ordering > access.cap)
            or not await filter_events_for_user(self.hs, user_id, [parent])
        ):
            raise _not_found()
        return access

    async def relations(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        direction: Direction,
        limit: int,
        recurse: bool | None,
    ) -> dict[str, Any]:
        """GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]."""
        from_pos = None if from_token is None else parse_pagination_token(from_token)
        to_pos = None if to_token is None else parse_pagination_token(to_token)
        access = await self._visible_parent(user_id, room_id, parent_id)
        top = await self.hs.rooms.events.current_position()
        if access.cap is not None:
            top = min(top, access.cap)
        if direction == "b":
            start = top if from_pos is None else min(from_pos, top)
            stop = HISTORY_START if to_pos is None else to_pos
        else:
            start = HISTORY_START if from_pos is None else from_pos
            stop = top if to_pos is None else min(to_pos, top)
        kept, cursor, more = await self._page_children(
            user_id,
            room_id,
            parent_id,
            (rel_type, event_type),
            (start, stop, direction),
            limit,
            (bool(recurse), access.joined_from),
        )
        response: dict[str, Any] = {
            "chunk": await self.hs.pagination.format_client_events(user_id, device_id, kept)
        }
        if more:
            response["next_batch"] = pagination_token(cursor)
        if from_token is not None:
            response["prev_batch"] = from_token
        if recurse is not None:
            # relations.yaml: present exactly when the client sent ``recurse``.
            response["recursion_depth"] = RECURSION_DEPTH if recurse else 0
        return response

    async def _page_children(
        self,
        user_id: str,
        room_id: str,
        parent_id: str,
        types: tuple[str | None, str | None],
        span: tuple[int, int, Direction],
        limit: int,
        options: tuple[bool, int | None],
    ) -> tuple[list[StoredEvent], int, bool]:
        """Up to ``limit`` visible children, the position the next page starts
        at, and whether there may be more."""
        start, stop, direction = span
        recurse, joined_from = options
        cursor = start
        kept: list[StoredEvent] = []
        if (direction == "b" and start <= stop) or (direction == "f" and start >= stop):
            return kept, cursor, False
        for _ in range(_MAX_BATCHES):
            rows = await self.store.children(
                room_id,
                parent_id,
                rel_type=types[0],
                event_type=types[1],
                from_pos=cursor,
                to_pos=stop,
                direction=direction,
                limit=_BATCH,
                recurse=recurse,
            )
            exhausted = len(rows) < _BATCH
            raw = await self.hs.rooms.events.get_events_ordered([row[0] for row in rows])
            allowed = {
                e.event_id
                for e in await filter_events_for_member(self.hs, user_id, raw, joined_from)
            }
            for stored in raw:
                cursor = stored.stream_ordering - 1 if direction == "b" else stored.stream_ordering
                if stored.event_id in allowed:
                    kept.append(stored)
                    if len(kept) >= limit:
                        last = raw[-1].event_id == stored.event_id
                        return kept, cursor, not (exhausted and last)
            if exhausted:
                return kept, cursor, False
        return kept, cursor, True

    # --- /threads ------------------------------------------------------------------------

    async def threads(
        self,
        user_id: str,
        device_id: str | None,
        room_id: str,
        *,
        include: Literal["all", "participated"],
        from_token: str | None,
        limit: int,
    ) -> dict[str, Any]:
        """GET /rooms/{roomId}/threads: thread roots the user may see, by latest
        activity (the latest reply), newest first."""
        access = await self.hs.pagination.access(user_id, room_id)
        before = None if from_token is None else parse_pagination_token(from_token)
        participant = user_id if include == "participated" else None
        kept: list[StoredEvent] = []
        more = False
        for _ in range(_MAX_BATCHES):
            rows = await self.store.threads(room_id, before, _BATCH, participant, access.cap)
            roots = await self.hs.rooms.events.get_events([row[0] for row in rows])
            candidates = [
                roots[root]
                for root, _ in rows
                if root in roots
                and roots[root].room_id == room_id
                and _shown(roots[root])
                and _may_be_root(roots[root])
                and (access.cap is None or roots[root].stream_ordering <= access.cap)
            ]
            allowed = {
                e.event_id
                for e in await filter_events_for_member(
                    self.hs, user_id, candidates, access.joined_from
                )
            }
            for index, (root, latest) in enumerate(rows):
                before = latest
                if root in allowed:
                    kept.append(roots[root])
                    if len(kept) >= limit:
                        more = index < len(rows) - 1 or len(rows) == _BATCH
                        break
            if len(kept) >= limit or len(rows) < _BATCH:
                break
        else:
            more = True
        response: dict[str, Any] = {
            "chunk": await self.hs.pagination.format_client_events(user_id, device_id, kept)
        }
        if more and before is not None:
            response["next_batch"] = pagination_token(before)
        return response

    # --- sending -------------------------------------------------------------------------

    async def check_new_relation(
        self, sender: str, room_id: str, event_type: str, content: Mapping[str, Any]
    ) -> None:
        """Refuse a client's event whose relation the spec forbids (400), as
        Synapse's ``_validate_event_relation``."""
        relation = parse_relation(content)
        if relation is None or relation.rel_type is None or relation.event_id is None:
            return
        parent = await self.hs.rooms.events.get_event(relation.event_id)
        if parent is not None and parent.room_id != room_id:
            raise MatrixError(400, "M_UNKNOWN", "Relations must be in the same room")
        if parent is None and not await self.store.is_parent(relation.event_id):
            # As Synapse: an unknown parent is accepted only when other events
            # already relate to it (the client had some reason to know of it).
            raise MatrixError(400, "M_UNKNOWN", "Can't send relation to unknown event")
        if (
            relation.rel_type == ANNOTATION
            and relation.key is not None
            and await self.store.has_annotation(relation.event_id, sender, event_type, relation.key)
        ):
            # "Avoiding duplicate annotations".
            raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "Can't send same reaction twice")
        if (
            relation.rel_type == THREAD
            and parent is not None
            and parent.redacted_by is None
            and not may_start_thread(parent.event.content)
        ):
            # "Validation of m.thread relationships": no threads off an event
            # that has a relation (so no thread of a thread); M_UNKNOWN, 400.
            raise MatrixError(
                400, "M_UNKNOWN", "Cannot start threads from an event with a relation"
            )
