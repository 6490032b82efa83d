"""Applying redactions, also those that arrive before the event they redact.

Client-Server API, "Redactions", and the room versions' "Handling
redactions" (fragment v3-handling-redactions): from room version 3 the auth
rules no longer check who may redact what, since the redacted event may not
be known yet. "Servers should not apply or send the redaction to clients
until both the redaction event and the original event have been seen, and
are valid. Servers should only apply redactions to events where the sender's
domains match, or the sender of the redaction has the appropriate
permissions per the power levels." In room versions 1–2 the auth rules have
already checked it (rule 11: the redact power level, or the same domain of
the two event IDs) when the redaction was accepted.

Every accepted redaction is recorded in the ``redactions`` table (keyed by
the event it redacts, known or not). When the target is known, the check
runs at once (:func:`redaction_applies`); otherwise the target's persist
looks the table up and applies it then (:func:`apply_pending_redactions`),
so that an event received over federation or by backfill after its
redaction is stored redacted and never indexed in relations.

Called by :class:`ranvier.storage.events.EventStore` inside its write
transaction; ``load`` reads events through that same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ranvier.core.auth_rules import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    get_named_level,
    user_power_level,
)
from ranvier.storage.engine import Transaction, placeholders
from ranvier.storage.relations import remove_relation
from ranvier.storage.search import unindex_event
from ranvier.storage.state import StateStore

if TYPE_CHECKING:
    from ranvier.storage.events import StoredEvent

#: Reads events by ID inside the write transaction.
Loader = Callable[[Transaction, Iterable[str]], Awaitable[dict[str, "StoredEvent"]]]
_CHUNK = 500


def _domain(user_id: str) -> str:
    return user_id.partition(":")[2]


async def redaction_applies(
    txn: Transaction,
    state: StateStore,
    load: Loader,
    redaction: StoredEvent,
    target: StoredEvent,
) -> bool:
    """Whether ``redaction`` (accepted) may redact ``target``: same room, and
    from v3 the same server as the target's sender or the redact power level
    in the state before the redaction."""
    if redaction.room_id != target.room_id:
        return False
    sender = redaction.event.sender
    if redaction.event.room_version.redaction_domain_check_in_auth:
        return True  # v1-v2: the auth rules checked it on receipt
    if _domain(sender) == _domain(target.event.sender):
        return True
    group = redaction.state_group_before
    if group is None:
        return False
    ids = await state.get_state_ids_for_keys(group, [CREATE_KEY, POWER_LEVELS_KEY], txn)
    loaded = await load(txn, ids.values())
    room_state = {key: loaded[eid].event for key, eid in ids.items() if eid in loaded}
    return user_power_level(room_state, sender) >= get_named_level(room_state, "redact")


def _usable(redaction: StoredEvent | None) -> bool:
    return redaction is not None and not (
        redaction.rejected or redaction.outlier or redaction.soft_failed
    )


async def mark_redacted(txn: Transaction, target: StoredEvent, redaction_id: str) -> None:
    """Serve ``target`` redacted from now on, and drop it from the relations
    index ("Redactions": a redacted relation no longer counts) and the search
    index (a redacted event is no longer searchable)."""
    await txn.execute(
        "UPDATE events SET redacted_by = ? WHERE event_id = ? AND room_id = ?"
        " AND redacted_by IS NULL",
        redaction_id,
        target.event_id,
        target.room_id,
    )
    await remove_relation(txn, target.room_id, target.event_id)
    await unindex_event(txn, target.event_id, target.room_id)


async def apply_pending_redactions(
    txn: Transaction, state: StateStore, load: Loader, stored: Sequence[StoredEvent]
) -> dict[str, str]:
    """Redactions recorded before the newly written ``stored`` events (or in
    the same batch) that may redact them, applied: ``target -> redaction``.
    One indexed read of ``redactions`` per batch; more only when one is found."""
    targets = {s.event_id: s for s in stored if s.redacted_by is None}
    ids = list(targets)
    pending: list[tuple[str, str]] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        rows = await txn.fetch_all(
            "SELECT redacts, event_id FROM redactions"
            f" WHERE redacts IN ({placeholders(len(chunk))})",
            *chunk,
        )
        pending += [(row[0], row[1]) for row in rows]
    if not pending:
        return {}
    redactions = await load(txn, [redaction_id for _, redaction_id in pending])
    applied: dict[str, str] = {}
    for target_id, redaction_id in sorted(pending):
        redaction = redactions.get(redaction_id)
        target = targets[target_id]
        if target_id in applied or redaction is None or not _usable(redaction):
            continue
        if await redaction_applies(txn, state, load, redaction, target):
            await mark_redacted(txn, target, redaction_id)
            applied[target_id] = redaction_id
    return applied
