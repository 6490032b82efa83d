"""Events as clients see them (Client-Server API, "Room event format": ClientEvent).

One function for every endpoint that serves events (GET event, state,
members, /sync, /messages, /context...): :func:`serialize_events`.

* Redacted events (``redacted_by``) are served pruned by the room version's
  redaction algorithm, with ``unsigned.redacted_because``.
* ``unsigned.age`` is computed at serving time.
* ``unsigned.transaction_id`` is shown only to the device that sent the
  event (Client-Server API, "Transaction identifiers").
* ``unsigned.m.relations``: bundled aggregations (ranvier/services/relations.py).
* State events carry ``unsigned.replaces_state``, ``prev_content`` and
  ``prev_sender`` of the state they replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ranvier.core.redaction import redact
from ranvier.core.relations import REFERENCE, REPLACE, THREAD
from ranvier.storage.events import StoredEvent

if TYPE_CHECKING:
    from ranvier.homeserver import Homeserver
    from ranvier.services.relations import Bundle


def _content(stored: StoredEvent) -> dict[str, Any]:
    event = stored.event
    if stored.redacted_by is None:
        return dict(event.content)
    content = redact(event.room_version, dict(event.pdu)).get("content", {})
    return dict(content) if isinstance(content, dict) else {}


def _base(stored: StoredEvent, now_ms: int, include_room_id: bool) -> dict[str, Any]:
    event = stored.event
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "content": _content(stored),
        "sender": event.sender,
        "origin_server_ts": event.origin_server_ts,
        "unsigned": {"age": max(0, now_ms - event.origin_server_ts)},
    }
    if include_room_id:
        body["room_id"] = event.room_id
    if event.state_key is not None:
        body["state_key"] = event.state_key
    redacts = event.redacts
    if event.type == "m.room.redaction" and redacts is not None and stored.redacted_by is None:
        # Clients of every room version read the top-level ``redacts``;
        # v11+ also has it in content (MSC2174, Synapse serves both).
        body["redacts"] = redacts
    return body


async def serialize_events(
    hs: Homeserver,
    events: Sequence[StoredEvent],
    *,
    user_id: str | None,
    device_id: str | None,
    include_room_id: bool = True,
) -> list[dict[str, Any]]:
    """ClientEvents (``include_room_id=False``: ClientEventWithoutRoomID, for /sync),
    with their bundled aggregations in ``unsigned.m.relations``."""
    if not events:
        return []
    bundles = await hs.relations.bundles(events, user_id)
    store = hs.rooms.events
    now_ms = hs.clock_ms()
    txn_ids = await store.get_transaction_ids(
        [e.event_id for e in events if user_id is not None and e.event.sender == user_id]
    )
    related_ids = [e.redacted_by for e in events if e.redacted_by is not None]
    related_ids += [e.replaces_state for e in events if e.replaces_state is not None]
    related = await store.get_events(related_ids)

    result: list[dict[str, Any]] = []
    for stored in events:
        body = _base(stored, now_ms, include_room_id)
        unsigned = body["unsigned"]
        txn = txn_ids.get(stored.event_id)
        if txn is not None and txn[0] == user_id and txn[1] == device_id:
            unsigned["transaction_id"] = txn[2]
        if stored.redacted_by is not None:
            redaction = related.get(stored.redacted_by)
            if redaction is not None:
                unsigned["redacted_because"] = _base(redaction, now_ms, include_room_id)
        if stored.replaces_state is not None:
            unsigned["replaces_state"] = stored.replaces_state
            previous = related.get(stored.replaces_state)
            if previous is not None:
                unsigned["prev_content"] = _content(previous)
                unsigned["prev_sender"] = previous.event.sender
        result.append(body)
    if bundles:
        await _add_bundles(hs, events, result, bundles, user_id, device_id, include_room_id)
    return result


async def _add_bundles(
    hs: Homeserver,
    events: Sequence[StoredEvent],
    result: list[dict[str, Any]],
    bundles: Mapping[str, Bundle],
    user_id: str | None,
    device_id: str | None,
    include_room_id: bool,
) -> None:
    """``unsigned.m.relations`` ("Aggregations of child events"). The edit and
    the thread's latest event are served in the same form as the event, with
    their own bundles ("Server-side aggregation of m.thread relationships");
    this ends: an edit gets no bundle and a thread reply no thread summary."""
    nested_events: list[StoredEvent] = []
    for bundle in bundles.values():
        if bundle.edit is not None:
            nested_events.append(bundle.edit)
        if bundle.thread is not None:
            nested_events.append(bundle.thread[0])
    nested_list = await serialize_events(
        hs, nested_events, user_id=user_id, device_id=device_id, include_room_id=include_room_id
    )
    nested = {item["event_id"]: item for item in nested_list}
    for stored, body in zip(events, result, strict=True):
        found = bundles.get(stored.event_id)
        if found is None:
            continue
        bundle = found
        relations: dict[str, Any] = {}
        if bundle.edit is not None:
            relations[REPLACE] = nested[bundle.edit.event_id]
        if bundle.thread is not None:
            latest, count, participated = bundle.thread
            relations[THREAD] = {
                "latest_event": nested[latest.event_id],
                "count": count,
                "current_user_participated": participated,
            }
        if bundle.references:
            relations[REFERENCE] = {"chunk": [{"event_id": eid} for eid in bundle.references]}
        body["unsigned"]["m.relations"] = relations
