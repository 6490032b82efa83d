"""Event relationships, pure (Client-Server API, "Forming relationships
between events", "Threading", "Event replacements", "Annotations",
"Reference relations", "Aggregations of child events").

No I/O: what an event's ``m.relates_to`` says, whether an edit is valid for
an original, which edit is the latest, and whether a thread may start from
an event. The storage and services layers decide what to load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

THREAD = "m.thread"
REPLACE = "m.replace"
ANNOTATION = "m.annotation"
REFERENCE = "m.reference"
#: Events with these relations get no bundled aggregations themselves: an edit
#: or a reaction cannot have children of its own (as Synapse's
#: ``get_bundled_aggregations``).
NO_BUNDLE_RELATIONS = frozenset({REPLACE, ANNOTATION})
#: ``m.replace`` of an encrypted event: the ``m.new_content`` is inside the
#: ciphertext, so the server cannot check it ("Validity of replacement events").
ENCRYPTED = "m.room.encrypted"


@dataclass(frozen=True, slots=True)
class Relation:
    """What an event's ``content["m.relates_to"]`` says, when well-formed."""

    #: None for a plain rich reply (only ``m.in_reply_to``).
    rel_type: str | None
    #: The parent event (None for a plain rich reply).
    event_id: str | None
    #: ``m.in_reply_to.event_id`` (rich replies; thread fallbacks).
    in_reply_to: str | None
    #: ``key`` of an ``m.annotation`` (the reaction).
    key: str | None


class EventLike(Protocol):
    """The fields of an event the edit rules read (core Event satisfies it)."""

    @property
    def event_id(self) -> str: ...
    @property
    def room_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def state_key(self) -> str | None: ...
    @property
    def origin_server_ts(self) -> int: ...
    @property
    def content(self) -> Mapping[str, Any]: ...


E = TypeVar("E", bound=EventLike)


def _text(value: object) -> str | None:
    """A string the index can hold: event content may carry NUL, a text
    column may not (ranvier/core/input_limits.py); such a field is malformed."""
    return value if isinstance(value, str) and "\x00" not in value else None


def _event_id(value: object) -> str | None:
    text = _text(value)
    return text if text is not None and text.startswith("$") else None


def parse_relation(content: Mapping[str, Any]) -> Relation | None:
    """The relation of an event's content, or None when it has none or it is
    malformed (``rel_type`` and ``event_id`` must be strings; an ill-formed
    relation is simply not a relation: the server indexes nothing for it)."""
    relates_to = content.get("m.relates_to")
    if not isinstance(relates_to, Mapping):
        return None
    reply = relates_to.get("m.in_reply_to")
    in_reply_to = _event_id(reply.get("event_id")) if isinstance(reply, Mapping) else None
    rel_type = _text(relates_to.get("rel_type"))
    parent = _event_id(relates_to.get("event_id"))
    if rel_type is None or parent is None:
        if in_reply_to is None:
            return None
        return Relation(None, None, in_reply_to, None)
    key = _text(relates_to.get("key"))
    annotation_key = key if rel_type == ANNOTATION else None
    return Relation(rel_type, parent, in_reply_to, annotation_key)


def rel_type_of(content: Mapping[str, Any]) -> str | None:
    """The ``rel_type`` of a well-formed relation in ``content``, else None."""
    relation = parse_relation(content)
    return None if relation is None else relation.rel_type


def thread_id_of(content: Mapping[str, Any]) -> str | None:
    """The thread an event belongs to ("Threading"): the thread root's ID when
    ``m.relates_to.rel_type`` is ``m.thread``, else None (the main timeline)."""
    relation = parse_relation(content)
    if relation is None or relation.rel_type != THREAD:
        return None
    return relation.event_id


def may_start_thread(parent_content: Mapping[str, Any]) -> bool:
    """ "Validation of m.thread relationships": a thread may not start from an
    event that is itself the child of a relationship (one with a ``rel_type``;
    a plain rich reply is not, as Synapse's ``relation_from_event``). This
    also forbids threads of threads."""
    return rel_type_of(parent_content) is None


def is_valid_edit(original: EventLike, edit: EventLike) -> bool:
    """ "Validity of replacement events" (v1.7): same room, same sender, same
    type, neither a state event, the original not itself an edit, and (for
    unencrypted edits) an ``m.new_content`` object."""
    if edit.room_id != original.room_id or edit.sender != original.sender:
        return False
    if edit.type != original.type:
        return False
    if edit.state_key is not None or original.state_key is not None:
        return False
    if rel_type_of(original.content) == REPLACE:
        return False
    relation = parse_relation(edit.content)
    if relation is None or relation.rel_type != REPLACE or relation.event_id != original.event_id:
        return False
    if edit.type == ENCRYPTED:
        return True
    return isinstance(edit.content.get("m.new_content"), Mapping)


def latest_edit(original: EventLike, edits: Iterable[E]) -> E | None:
    """The most recent valid edit of ``original`` (Server-side aggregation of
    ``m.replace``): largest ``origin_server_ts``, ties to the largest event ID."""
    best: E | None = None
    for edit in edits:
        if not is_valid_edit(original, edit):
            continue
        if best is None or (edit.origin_server_ts, edit.event_id) > (
            best.origin_server_ts,
            best.event_id,
        ):
            best = edit
    return best
